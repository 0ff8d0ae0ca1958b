"""Cost projection and the budget gate: what a run will cost before it starts.

    python -m trainer.cost --model_config configs/model_100m.yaml --train_config configs/train_100m.yaml \
        [--throughput runs/llama100m/throughput.json] [--gpu_count N] [--set train.budget.max_cost=20]

From the tokens to train, the measured tokens/s (``throughput.json`` from ``trainer.benchmark``),
the GPU count and the box's hourly rate: hours, dollars and the finish time. Writes
``cost.json`` next to the throughput file and prints a table. Exit codes: 0 within budget,
3 over budget (the launcher reads it as "over budget"), 2 config errors, 1 other errors.

``gate()`` is the same check inside ``trainer.train``: it refuses to start an over-budget run
unless ``--allow_over_budget`` is given. No torch here.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from trainer.cli_args import add_config_args, parse_configs
from runcontract.budget import spent
from runcontract.config import ModelConfig, TrainConfig
from runcontract.errors import OverBudgetError, UserError, cli_main
from runcontract.run_files import OK, OVER_BUDGET, CostFile, CostProjection, Throughput
from runcontract.run_folder import COST_FILE, THROUGHPUT_FILE

log = logging.getLogger("trainer.cost")


def project(target_tokens: int, tokens_per_sec: float, hourly_rate: float, gpu_count: int = 1,
            *, max_cost: Optional[float] = None, now: Optional[datetime] = None) -> CostProjection:
    """Hours, dollars and finish time for ``target_tokens`` at ``tokens_per_sec`` per GPU."""
    if target_tokens < 1:
        raise UserError(f"target_tokens must be at least 1, got {target_tokens}; set train.target_tokens.")
    if not (tokens_per_sec > 0 and math.isfinite(tokens_per_sec)):
        raise UserError(f"tokens_per_sec must be a positive number, got {tokens_per_sec}; rerun python -m trainer.benchmark.")
    if hourly_rate < 0:
        raise UserError(f"hourly_rate must be 0 or more $/h, got {hourly_rate}; set train.budget.hourly_rate.")
    if gpu_count < 1:
        raise UserError(f"gpu_count must be at least 1, got {gpu_count}.")
    total_tps = tokens_per_sec * gpu_count
    seconds = target_tokens / total_tps
    hours = seconds / 3600.0
    total_cost = spent(seconds, hourly_rate)
    start = now or datetime.now(timezone.utc)
    verdict = OVER_BUDGET if max_cost is not None and total_cost > max_cost else OK
    return CostProjection(
        target_tokens=int(target_tokens), tokens_per_sec=float(tokens_per_sec), gpu_count=int(gpu_count),
        total_tokens_per_sec=total_tps, hours=hours, hourly_rate=float(hourly_rate), total_cost=total_cost,
        finish_time=(start + timedelta(seconds=seconds)).isoformat(timespec="seconds"),
        max_cost=max_cost, verdict=verdict,
    )


def planned_tokens(train_cfg: TrainConfig) -> int:
    """Tokens the run will train on: ``max_steps`` overrides ``target_tokens`` as in the schedule."""
    if train_cfg.max_steps is not None:
        return train_cfg.max_steps * train_cfg.tokens_per_step
    return train_cfg.target_tokens


def read_throughput(path: str | os.PathLike) -> Throughput:
    """The benchmark's throughput.json, with a usable ``tokens_per_sec``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path} does not exist, so there is no measured speed to project the cost from. "
            f"Run `python -m trainer.benchmark --output_path {path}` on the training box first."
        )
    try:
        return Throughput.read(path)
    except UserError as exc:
        raise UserError(f"{exc} It is not a valid throughput file: delete it and rerun python -m trainer.benchmark.") from None


def over_budget_message(proj: CostProjection, train_cfg: TrainConfig, override_hint: str) -> str:
    # The knobs, each with the value that would bring the projection under max_cost.
    assert proj.max_cost is not None
    ratio = proj.max_cost / proj.total_cost
    fitting_tokens = int(proj.target_tokens * ratio)
    fitting_rate = proj.hourly_rate * ratio
    return (
        f"projected cost ${proj.total_cost:,.2f} ({proj.hours:,.1f} h at ${proj.hourly_rate:.2f}/h, "
        f"{proj.total_tokens_per_sec:,.0f} tokens/s for {proj.target_tokens:,} tokens) exceeds "
        f"train.budget.max_cost ${proj.max_cost:,.2f}. To bring it under: train fewer tokens "
        f"(--set train.target_tokens={fitting_tokens}), rent a cheaper box (hourly_rate at most "
        f"${fitting_rate:.2f}/h at this speed), raise the cap (--set train.budget.max_cost="
        f"{math.ceil(proj.total_cost)}), or {override_hint}."
    )


def _warn_if_stale(throughput: Throughput, model_cfg: ModelConfig, train_cfg: TrainConfig, source: Path, gpu_count: int) -> list[str]:
    """Warnings when the benchmark measured a different model, sequence length or number of GPUs."""
    warnings = []
    measured_hash = throughput.model_config_hash
    if measured_hash is not None and measured_hash != model_cfg.config_hash():
        warnings.append(
            f"{source} was measured for model config {measured_hash}, but this run's model is "
            f"{model_cfg.config_hash()}: the projection may be wrong; rerun python -m trainer.benchmark."
        )
    measured_seq = throughput.seq_len
    if measured_seq is not None and measured_seq != train_cfg.seq_len:
        warnings.append(f"{source} was measured at seq_len {measured_seq}, this run uses {train_cfg.seq_len}: the projection may be off.")
    measured_gpus = throughput.gpu_count or 1
    if measured_gpus != gpu_count:
        warnings.append(f"{source} was measured on {measured_gpus} GPU(s) together, this run trains on {gpu_count}: the projection "
                        "assumes each GPU keeps its measured speed; rerun python -m trainer.benchmark under the same launch.")
    for line in warnings:
        log.warning(line)
    return warnings


def _default_gpu_count() -> int:
    # Under accelerate/torchrun every rank sees WORLD_SIZE; a plain python run trains on one GPU.
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def write_cost_json(path: Path, proj: CostProjection, throughput_path: Path, throughput: Throughput,
                    model_cfg: ModelConfig, warnings: list[str], allowed_over_budget: bool) -> None:
    CostFile(
        **proj.model_dump(),
        throughput_path=str(throughput_path),
        measured_device=throughput.device_name,
        measured_model_config_hash=throughput.model_config_hash,
        model_config_hash=model_cfg.config_hash(),
        allowed_over_budget=allowed_over_budget,
        warnings=warnings,
        written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    ).write(path)


def gate(train_cfg: TrainConfig, model_cfg: ModelConfig, run_dir: Path, allow_over_budget: bool,
         gpu_count: Optional[int] = None) -> Optional[CostProjection]:
    """Refuse an over-budget run before it starts.

    Applies only when ``run_dir/throughput.json`` exists (else logs why and returns None).
    Writes ``run_dir/cost.json``; raises ``OverBudgetError`` (exit 3) when the projected cost
    exceeds ``max_cost`` unless ``allow_over_budget``, in which case it logs a warning.
    ``gpu_count`` defaults to the WORLD_SIZE of a distributed launch, else 1.
    """
    run_dir = Path(run_dir)
    throughput_path = run_dir / THROUGHPUT_FILE
    if not throughput_path.is_file():
        log.warning("no %s: cost gate skipped (run python -m trainer.benchmark to enable it)", throughput_path)
        return None
    throughput = read_throughput(throughput_path)
    gpu_count = gpu_count or _default_gpu_count()
    warnings = _warn_if_stale(throughput, model_cfg, train_cfg, throughput_path, gpu_count)
    proj = project(planned_tokens(train_cfg), throughput.tokens_per_sec, train_cfg.budget.hourly_rate,
                   gpu_count, max_cost=train_cfg.budget.max_cost)
    write_cost_json(run_dir / COST_FILE, proj, throughput_path, throughput, model_cfg, warnings,
                    allowed_over_budget=allow_over_budget and proj.verdict == OVER_BUDGET)
    if proj.verdict == OVER_BUDGET:
        message = over_budget_message(proj, train_cfg, "pass --allow_over_budget to train anyway")
        if not allow_over_budget:
            raise OverBudgetError(message)
        log.warning("--allow_over_budget given: starting although %s", message)
    else:
        log.info("cost projection: $%.2f of $%.2f max (%.1f h)", proj.total_cost, proj.max_cost, proj.hours)
    return proj


def format_table(proj: CostProjection, device: Optional[str] = None):
    """A rich Table of the projection (rich is imported here only: the gate needs none of it)."""
    from rich.table import Table

    table = Table(title="Cost projection", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    if device:
        table.add_row("measured on", device)
    table.add_row("tokens to train", f"{proj.target_tokens:,}")
    table.add_row("tokens/s per GPU", f"{proj.tokens_per_sec:,.0f}")
    table.add_row("GPUs", str(proj.gpu_count))
    table.add_row("hours", f"{proj.hours:,.2f}")
    table.add_row("$/hour", f"{proj.hourly_rate:.2f}")
    table.add_row("projected cost", f"${proj.total_cost:,.2f}")
    table.add_row("max cost", "-" if proj.max_cost is None else f"${proj.max_cost:,.2f}")
    table.add_row("finish (UTC, if started now)", proj.finish_time)
    style = "green" if proj.verdict == OK else "bold red"
    table.add_row("verdict", f"[{style}]{proj.verdict}[/{style}]")
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.cost", description=__doc__.split("\n\n")[0])
    add_config_args(parser, model=True, train=True)
    parser.add_argument("--throughput", default=None, help="throughput.json from trainer.benchmark (default: <runs_dir>/<run_name>/throughput.json)")
    parser.add_argument("--gpu_count", type=int, default=None, help="GPUs training in parallel (default: the benchmark's gpu_count, else 1)")
    parser.add_argument("--output_path", default=None, help="where to write cost.json (default: next to the throughput file)")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, model_cfg, train_cfg, _ = parse_configs(build_parser(), argv)
    throughput_path = Path(args.throughput) if args.throughput else Path(train_cfg.runs_dir) / train_cfg.run_name / THROUGHPUT_FILE
    throughput = read_throughput(throughput_path)
    gpu_count = args.gpu_count if args.gpu_count is not None else throughput.gpu_count or 1
    warnings = _warn_if_stale(throughput, model_cfg, train_cfg, throughput_path, gpu_count)
    proj = project(planned_tokens(train_cfg), throughput.tokens_per_sec, train_cfg.budget.hourly_rate,
                   gpu_count, max_cost=train_cfg.budget.max_cost)
    output_path = Path(args.output_path) if args.output_path else throughput_path.with_name(COST_FILE)
    write_cost_json(output_path, proj, throughput_path, throughput, model_cfg, warnings, allowed_over_budget=False)

    from rich.console import Console

    Console().print(format_table(proj, throughput.device_name))
    print(f"wrote {output_path}")
    if proj.verdict == OVER_BUDGET:
        raise OverBudgetError(over_budget_message(proj, train_cfg, "pass --allow_over_budget to trainer.train to train anyway"))
