"""Loss curve PNG from a run's metrics.jsonl: train and validation loss against tokens seen.

    python -m trainer.plot --metrics runs/X/metrics.jsonl --output_path runs/X/loss_curve.png

Reads ``"type": "train"`` lines (``tokens_seen``, ``loss``) and ``"type": "eval"`` lines
(``tokens_seen``, ``val_loss``). A line that does not parse is skipped with a warning (the
trainer may be writing the last one right now). The PNG is written under a temporary name
and renamed, so a viewer never sees half an image.
"""
from __future__ import annotations

import argparse
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from runcontract.atomic import atomic_write_bytes
from runcontract.errors import UserError, cli_main
from runcontract.run_files import TrainMetrics, parse_metrics_line
from runcontract.run_folder import LOSS_CURVE_FILE
from trainer.cli_args import add_deprecated_alias

log = logging.getLogger("trainer.plot")


@dataclass
class LossSeries:
    train_tokens: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_tokens: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    skipped_lines: int = 0


def _number(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_loss_series(metrics_path: str | os.PathLike) -> LossSeries:
    path = Path(metrics_path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass the metrics.jsonl of a run (runs/<name>/metrics.jsonl), written by trainer.train.")
    series = LossSeries()
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = parse_metrics_line(line)
        except ValueError:  # a torn last line, or a record that is not one
            series.skipped_lines += 1
            continue
        if record is None:
            continue
        tokens = _number(record.tokens_seen)
        loss = _number(record.loss if isinstance(record, TrainMetrics) else record.val_loss)
        if tokens is None or loss is None:
            continue
        if isinstance(record, TrainMetrics):
            series.train_tokens.append(tokens)
            series.train_loss.append(loss)
        else:
            series.val_tokens.append(tokens)
            series.val_loss.append(loss)
    if series.skipped_lines:
        log.warning("%s: skipped %d line(s) that are not metrics records (a torn last line while training is normal)", path, series.skipped_lines)
    if not series.train_loss and not series.val_loss:
        raise UserError(
            f"{path} holds no train or eval loss lines (objects with type 'train' and loss, or type 'eval' and "
            "val_loss, each with tokens_seen); let training log at least one step, then plot again."
        )
    return series


def _format_tokens(value: float, _pos=None) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def render_png(series: LossSeries, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on a GPU box or in tests
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        if series.train_loss:
            ax.plot(series.train_tokens, series.train_loss, label="train", linewidth=1.0, alpha=0.85)
        if series.val_loss:
            ax.plot(series.val_tokens, series.val_loss, label="validation", marker="o", markersize=3, linewidth=1.5)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(title)
        ax.xaxis.set_major_formatter(FuncFormatter(_format_tokens))
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def plot_loss_curve(metrics_path: str | os.PathLike, out_path: str | os.PathLike, title: Optional[str] = None) -> Path:
    """Write the loss-curve PNG for ``metrics_path`` to ``out_path``; returns ``out_path``."""
    metrics_path, out_path = Path(metrics_path), Path(out_path)
    series = read_loss_series(metrics_path)
    atomic_write_bytes(out_path, render_png(series, title or f"loss: {metrics_path.parent.name}"))
    return out_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.plot", description="Plot train and validation loss against tokens from metrics.jsonl.")
    parser.add_argument("--metrics", required=True, help="runs/<name>/metrics.jsonl")
    parser.add_argument("--output_path", default=None, help="PNG to write (default: loss_curve.png next to the metrics)")
    add_deprecated_alias(parser, "--out", "--output_path")
    parser.add_argument("--title", default=None, help="plot title (default: the run folder's name)")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    out = Path(args.output_path) if args.output_path else Path(args.metrics).with_name(LOSS_CURVE_FILE)
    print(f"wrote {plot_loss_curve(args.metrics, out, args.title)}")
