"""Experiment tracking through accelerate's trackers: TensorBoard (default) and Weights & Biases.

``train.trackers`` names them. TensorBoard writes its event files straight into the run folder
(runs/<name>/events.out.tfevents.*), where the on-box agent mirrors every file to the store, so
``tensorboard --logdir runs/<name>`` works on the box and on a fetched copy. W&B reads its key
from WANDB_API_KEY, which ``launcher run`` hands to the box as a secret (never in a config, a
log or a command line); WANDB_MODE=offline keeps its run files under runs/<name>/wandb/.

Scalars logged, each at the optimizer step of the metrics.jsonl line they come from:
``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_sec``, ``train/mfu``,
``train/cost_spent`` and ``val/loss``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

TRAIN_KEYS = ("loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "cost_spent")


def accelerator_kwargs(train_cfg) -> dict:
    """``log_with`` and the folders for ``Accelerator(...)``: event files land in runs/<name>/."""
    if not train_cfg.trackers:
        return {}
    from accelerate.utils import ProjectConfiguration

    run_dir = Path(train_cfg.runs_dir) / train_cfg.run_name
    # accelerate's TensorBoard tracker writes to logging_dir/<project name>: runs_dir/<run_name>
    return {"log_with": list(train_cfg.trackers),
            "project_config": ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(train_cfg.runs_dir))}


def start_trackers(accelerator, train_cfg, resolved_config: dict, log: Callable[[str], None]) -> Callable[[dict], None]:
    """Start the trackers (main process only); returns the sink RunLog.metrics forwards each record to."""
    if not train_cfg.trackers:
        return lambda record: None
    run_dir = Path(train_cfg.runs_dir) / train_cfg.run_name
    init_kwargs = {"wandb": {"name": train_cfg.run_name, "dir": str(run_dir), "config": resolved_config}}
    accelerator.init_trackers(train_cfg.run_name, init_kwargs=init_kwargs)
    if "tensorboard" in train_cfg.trackers:
        log(f"TensorBoard: event files in {run_dir}; watch with: tensorboard --logdir {run_dir}")
    if "wandb" in train_cfg.trackers:
        log(f"Weights & Biases: project {train_cfg.run_name!r}, run files under {run_dir / 'wandb'}")

    def sink(record: dict) -> None:
        if record.get("type") == "eval":
            values = {"val/loss": record.get("val_loss"), "val/bpb": record.get("val_bpb")}
            for source, scores in (record.get("val_sources") or {}).items():  # e.g. val/c4/loss: the goal is measured on C4
                values.update({f"val/{source}/{k}": scores.get(k) for k in ("loss", "bpb")})
        else:
            values = {f"train/{k}": record.get(k) for k in TRAIN_KEYS}
        values = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
        if values:
            accelerator.log(values, step=int(record["step"]))

    return sink
