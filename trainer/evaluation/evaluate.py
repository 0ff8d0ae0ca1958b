"""Evaluate a checkpoint: validation loss, perplexity, bits per byte, and samples.

    python -m trainer.eval --checkpoint runs/<name>/final --tokenizer_model tokenizer/spm.model \
        [--data_dir data] [--eval_tokens N] [--seed S] [--seq_len T] [--prompt "..."]... \
        [--tasks hellaswag,arc_easy,piqa,lambada_openai,wikitext [--task_data DIR] [--limit N] [--num_fewshot K]]

Scores a fixed number of validation tokens: non-overlapping windows of ``seq_len + 1`` tokens
of ``<data_dir>/val.bin`` chosen with ``seed``, so two checkpoints (or two runs) are scored on
the same text. Bits per byte (see trainer/evaluation/bits_per_byte.py) compares runs with different
tokenizers. When the data has several sources, each source's validation split (val_<name>.bin,
see trainer/corpus/memmaps.py) is scored the same way and reported under "sources" (C4 apart from
Wikipedia: the goal is a loss on C4, not on the mix). Greedy samples continue a few prompts, each started after EOS like a document in
the training stream. Writes ``<checkpoint>/eval.json`` and, when the run folder has a
``metrics.jsonl``, redraws ``<run>/loss_curve.png``. Defaults for data_dir, eval_tokens, seed
and seq_len come from the checkpoint's config.yaml.

With ``--tasks`` it also writes the report card (trainer/evaluation/report_card.py, docs/report-card.md): the
checkpoint is exported to ``<checkpoint>_hf`` (trainer/modeling/hf_export.py), lm-evaluation-harness scores
those tasks on it (trainer/evaluation/lm_eval_tasks.py: the hub's data, or ``--task_data``'s local copies),
and ``<run>/report.json`` and ``<run>/report.md`` set the scores beside published baselines.
"""
from __future__ import annotations

import argparse
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from runcontract.atomic import atomic_write_json
from trainer.training.batches import validation_files, validation_starts
from trainer.cli_args import add_checkpoint_args
from trainer.evaluation.bits_per_byte import bits_per_byte, count_bytes, starts_with_space, token_byte_lengths
from trainer.training.precision import autocast, autocast_dtype, pick_device
from runcontract.errors import UserError, cli_main
from runcontract.run_folder import CHECKPOINTS_DIR, CONFIG_FILE, EVAL_FILE, LOSS_CURVE_FILE, METRICS_FILE, REPORT_JSON, REPORT_MD
from trainer.corpus.prepared_files import open_tokens, read_data_meta, token_count
from trainer.corpus.spm_tokenizer import RUN_TOKENIZER_FIX, load_tokenizer

log = logging.getLogger("trainer.eval")

DEFAULT_PROMPTS = ("The history of the city begins", "The function returns", "In the beginning")


# -- inputs --------------------------------------------------------------------------------
def checkpoint_run_config(checkpoint: Path) -> dict:
    """The resolved config the checkpoint was trained with ({} when unreadable)."""
    try:
        data = yaml.safe_load((checkpoint / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_folder_of(checkpoint: Path) -> Path:
    """runs/<name>/final -> runs/<name>; runs/<name>/checkpoints/step_N -> runs/<name>."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS_DIR else checkpoint.parent


def check_val_data(data_dir: Path, model_vocab: int) -> Optional[int]:
    """Fails clearly unless ``data_dir`` holds a val.bin made for this model; the eos id from data_meta.json."""
    val_path = data_dir / "val.bin"
    if not val_path.is_file():
        raise UserError(f"{val_path} does not exist; pass --data_dir with the folder trainer.data wrote (val.bin, data_meta.json).")
    eos_id = None
    meta = read_data_meta(data_dir)
    if meta is not None:
        data_vocab = meta.get("vocab_size")
        if data_vocab is not None and int(data_vocab) != model_vocab:
            raise UserError(f"{data_dir} was tokenized with vocab_size {data_vocab}, the model has {model_vocab}: pass the data folder made with this run's tokenizer.")
        eos_id = meta.get("eos_id")
    if token_count(val_path) < 2:
        raise UserError(f"{val_path} holds fewer than 2 tokens; rebuild the validation data.")
    return eos_id


# -- scoring -------------------------------------------------------------------------------
@torch.no_grad()
def score(model, tokens: np.ndarray, starts: np.ndarray, seq_len: int, batch_size: int, device: torch.device,
          byte_lengths: np.ndarray, leading_space: np.ndarray, eos_id: Optional[int]) -> dict:
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    for first in range(0, len(starts), batch_size):
        windows = np.stack([np.asarray(tokens[s:s + seq_len + 1], dtype=np.int64) for s in starts[first:first + batch_size]])
        if windows.max() >= len(byte_lengths):
            raise UserError(f"val.bin holds token id {int(windows.max())}, outside the vocabulary of {len(byte_lengths)}: it was made with another tokenizer.")
        batch = torch.from_numpy(windows).to(device)
        with autocast(device, autocast_dtype("auto", device)):
            _, loss = model(batch[:, :-1], batch[:, 1:])
        n = batch[:, 1:].numel()
        total_nats += float(loss) * n  # loss is the mean over every target token
        total_tokens += n
        total_bytes += count_bytes(windows[:, 1:], windows[:, :-1], byte_lengths, leading_space, eos_id)
    val_loss = total_nats / total_tokens
    return {
        "val_loss": val_loss,
        "perplexity": math.exp(min(val_loss, 700.0)),  # exp overflows past ~709
        "bits_per_byte": bits_per_byte(total_nats, total_bytes),
        "tokens": total_tokens,
        "bytes": total_bytes,
    }


@torch.no_grad()
def sample(model, sp, prompts, max_new_tokens: int, eos_id: Optional[int], device: torch.device) -> list[dict]:
    samples = []
    for prompt in prompts:
        ids = ([eos_id] if eos_id is not None and eos_id >= 0 else []) + sp.encode(prompt)
        ids = ids[-(model.config.max_seq_len - 1):]
        out = model.generate(torch.tensor([ids], device=device), max_new_tokens, temperature=0.0)
        new = out[0, len(ids):].tolist()
        if eos_id is not None and eos_id in new:
            new = new[:new.index(eos_id)]  # the document ended
        samples.append({"prompt": prompt, "completion": sp.decode(new)})
    return samples


def evaluate_checkpoint(checkpoint: str | Path, tokenizer_model: str | Path, data_dir: Optional[str | Path] = None,
                        eval_tokens: Optional[int] = None, seed: Optional[int] = None, seq_len: Optional[int] = None,
                        batch_size: int = 8, prompts=DEFAULT_PROMPTS, max_new_tokens: int = 48,
                        device: str | torch.device = "cpu", write: bool = True) -> dict:
    """Score and sample one checkpoint; writes ``<checkpoint>/eval.json`` when ``write``."""
    from trainer.training.checkpoint import check_vocab, load_model_from_checkpoint, resolve_checkpoint_path

    checkpoint = resolve_checkpoint_path(checkpoint)
    device = torch.device(device)
    sp = load_tokenizer(tokenizer_model, RUN_TOKENIZER_FIX)
    model, cfg = load_model_from_checkpoint(checkpoint, map_location=device)  # verifies the manifest
    check_vocab(sp.get_piece_size(), cfg.vocab_size, tokenizer_model, checkpoint)

    train_cfg = checkpoint_run_config(checkpoint).get("train") or {}
    data_dir = Path(data_dir or train_cfg.get("data_dir") or "data")
    eval_tokens = int(eval_tokens or train_cfg.get("eval_tokens") or 262144)
    seed = int(seed if seed is not None else train_cfg.get("seed", 1337))
    seq_len = int(seq_len or min(int(train_cfg.get("seq_len") or cfg.max_seq_len), cfg.max_seq_len))
    if not 1 <= seq_len <= cfg.max_seq_len:
        raise UserError(f"--seq_len {seq_len} must be between 1 and the model's max_seq_len {cfg.max_seq_len}.")
    if eval_tokens < 1 or batch_size < 1:
        raise UserError(f"--eval_tokens and --batch_size must be at least 1, got {eval_tokens} and {batch_size}.")

    eos_id = check_val_data(data_dir, cfg.vocab_size)
    if eos_id is None and sp.eos_id() >= 0:
        eos_id = sp.eos_id()
    byte_lengths, leading_space = token_byte_lengths(sp), starts_with_space(sp)
    scores = {}  # the windows the in-training eval scores: the same files, the same starts
    for name, path in validation_files(data_dir, seq_len, log.warning):
        tokens = open_tokens(path)
        starts = validation_starts(len(tokens), seq_len, eval_tokens, seed, log.warning)
        scores[name] = {**score(model, tokens, starts, seq_len, batch_size, device, byte_lengths, leading_space, eos_id),
                        "windows": int(len(starts))}
    result, sources = scores.pop("mix"), scores
    from runcontract.manifest import read_manifest

    meta = read_manifest(checkpoint).meta
    result.update({
        "checkpoint": str(checkpoint),
        "step": meta.get("step"),
        "tokens_seen": meta.get("tokens_seen"),
        "model_config_hash": cfg.config_hash(),
        "tokenizer_model": str(tokenizer_model),
        "data_dir": str(data_dir),
        "seq_len": seq_len,
        "seed": seed,
        "sources": sources,
        "samples": sample(model, sp, prompts, max_new_tokens, eos_id, device),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    if write:
        atomic_write_json(checkpoint / EVAL_FILE, result)
        redraw_loss_curve(run_folder_of(checkpoint))
    return result


def redraw_loss_curve(run_dir: Path) -> Optional[Path]:
    """Redraw ``run_dir/loss_curve.png`` from its metrics.jsonl; a plot problem is only a warning."""
    from trainer.evaluation.loss_plot import plot_loss_curve

    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        return None
    try:
        return plot_loss_curve(metrics, run_dir / LOSS_CURVE_FILE, title=f"loss: {run_dir.name}")
    except UserError as exc:
        log.warning("loss curve not drawn: %s", exc)
        return None


def run_report_card(checkpoint: str | Path, tokenizer_model: str | Path, eval_result: dict, tasks, task_data: Optional[str | Path] = None,
                    num_fewshot: Optional[int] = None, limit: Optional[int] = None, batch_size: int = 1, device: str = "cpu",
                    hf_dir: Optional[str | Path] = None):
    """Export the checkpoint, run lm-eval's ``tasks`` on it and write report.json/report.md in its
    run folder; returns the ReportFile."""
    import tempfile

    from trainer.training.checkpoint import resolve_checkpoint_path
    from trainer.modeling.hf_export import export_checkpoint
    from trainer.evaluation.lm_eval_tasks import parse_tasks, run_tasks, stock_task_yaml, write_local_task_configs
    from trainer.evaluation.report_card import build_report, write_report

    names = parse_tasks(tasks)
    if not names:
        raise UserError("--tasks is empty; name lm-eval tasks, e.g. --tasks hellaswag,arc_easy,piqa,lambada_openai,wikitext.")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}.")
    for name in names:  # an unknown name fails here, before the export and lm-eval's own traceback
        stock_task_yaml(name)
    checkpoint = resolve_checkpoint_path(checkpoint)
    hf_dir = export_checkpoint(checkpoint, tokenizer_model, Path(hf_dir) if hf_dir else Path(str(checkpoint) + "_hf"))
    with tempfile.TemporaryDirectory(prefix="llmbox-lm-eval-tasks-") as tmp:
        include = write_local_task_configs(task_data, names, tmp) if task_data else None
        lm_results = run_tasks(hf_dir, names, include, num_fewshot, limit, batch_size, str(device))
    report = build_report(checkpoint, eval_result, lm_results, hf_dir, str(task_data) if task_data else None, limit)
    json_path, md_path = write_report(run_folder_of(checkpoint), report)
    log.info("report card: %s and %s", json_path, md_path)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.eval", description="Validation loss, perplexity, bits per byte and samples of a checkpoint.")
    add_checkpoint_args(parser)
    parser.add_argument("--data_dir", default=None, help="folder with val.bin and data_meta.json (default: the run's train.data_dir)")
    parser.add_argument("--eval_tokens", type=int, default=None, help="validation tokens to score (default: the run's train.eval_tokens)")
    parser.add_argument("--seed", type=int, default=None, help="seed choosing the windows (default: the run's train.seed)")
    parser.add_argument("--seq_len", type=int, default=None, help="tokens per window (default: the run's train.seq_len)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--prompt", dest="prompts", action="append", default=None, help="prompt to sample from (repeatable; default: a few built-in ones)")
    parser.add_argument("--max_new_tokens", type=int, default=48, help="tokens generated per sample")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    report = parser.add_argument_group("report card (lm-evaluation-harness; the eval extra)")
    report.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks, e.g. hellaswag,arc_easy,piqa,lambada_openai,wikitext: "
                        "exports the checkpoint and writes <run>/report.json and report.md")
    report.add_argument("--task_data", default=None, help="folder with local task data, <task>/<split>.jsonl in the hub dataset's schema "
                        "(default: lm-eval's hub datasets)")
    report.add_argument("--num_fewshot", type=int, default=None, help="shots per task (default: each task's own, 0 for the shipped ones)")
    report.add_argument("--limit", type=int, default=None, help="score only the first N documents of each task (a smoke test)")
    report.add_argument("--lm_eval_batch_size", type=int, default=1, help="lm-eval batch size")
    report.add_argument("--hf_dir", default=None, help="where the export goes (default: <checkpoint>_hf)")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)

    result = evaluate_checkpoint(
        args.checkpoint, args.tokenizer_model, args.data_dir, args.eval_tokens, args.seed, args.seq_len,
        args.batch_size, tuple(args.prompts) if args.prompts else DEFAULT_PROMPTS, args.max_new_tokens, pick_device(args.device),
    )
    print(f"val_loss {result['val_loss']:.4f}  perplexity {result['perplexity']:.2f}  bits/byte {result['bits_per_byte']:.4f}  "
          f"({result['tokens']:,} tokens, {result['windows']} windows of {result['seq_len']}, seed {result['seed']})")
    for name, scored in result["sources"].items():
        print(f"  {name}: val_loss {scored['val_loss']:.4f}  perplexity {scored['perplexity']:.2f}  bits/byte {scored['bits_per_byte']:.4f}  "
              f"({scored['tokens']:,} tokens)")
    for item in result["samples"]:
        print(f"  {item['prompt']!r} -> {item['completion']!r}")
    print(f"wrote {Path(result['checkpoint']) / EVAL_FILE}")
    if args.tasks:
        report = run_report_card(result["checkpoint"], args.tokenizer_model, result, args.tasks, args.task_data, args.num_fewshot,
                                 args.limit, args.lm_eval_batch_size, str(pick_device(args.device)), args.hf_dir)
        for row in report.tasks:
            print(f"  {row.task} {row.metric} ({row.num_fewshot}-shot): {row.value:.4f}")
        print(f"wrote {run_folder_of(Path(result['checkpoint'])) / REPORT_JSON} and {REPORT_MD}")
