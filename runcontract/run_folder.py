"""The run folder: the seam between launcher and trainer (docs/status-json.md).

The trainer writes ``runs/<name>/``; the launcher reads it (over SSH or in place, and as
mirrored into the store under ``<name>/``). Every name either half uses for it lives here, once.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from runcontract.errors import UserError
from runcontract.manifest import ManifestError, is_complete, read_manifest

# -- where -------------------------------------------------------------------------------------
RUNS_DIR = "runs"  # under the project folder, on the laptop and on the box


def run_rel(name: str) -> str:
    """A run's folder relative to the project folder (a POSIX path: the box's too)."""
    return f"{RUNS_DIR}/{name}"


# -- the files in a run folder ------------------------------------------------------------------
CONFIG_FILE = "config.yaml"  # the resolved config the trainer ran with (also in each checkpoint)
STATUS_FILE = "status.json"  # state, phase, step, progress: docs/status-json.md
METRICS_FILE = "metrics.jsonl"  # one JSON object a logged step (append-only)
TRAIN_LOG = "train.log"  # the trainer's human log (append-only); never parsed by the launcher
THROUGHPUT_FILE = "throughput.json"  # trainer.benchmark's measurement
COST_FILE = "cost.json"  # trainer.cost's projection and budget verdict
NCCL_PROBE_FILE = "nccl_probe.json"  # trainer.nccl_probe: the GPUs' all-reduce and the NCCL settings that worked
SAMPLES_FILE = "fixed_prompt_samples.txt"  # generations from fixed prompts (append-only)
LOSS_CURVE_FILE = "loss_curve.png"
RANKS_FILE = "ranks.json"  # the processes of a multi-GPU run
STORE_CONFIG_FILE = "store.json"  # the launcher's store settings for the box's agent; never mirrored
AGENT_LOG = "agent.log"  # the box agent's log (append-only)
STORE_HEALTH_FILE = "store_health.json"  # the box agent's uploads: last success, what waits, last error (the agent owns it)
TRAINER_EXIT_FILE = "train.exit"  # the trainer's exit code, written by the tmux window that ran it
TRAINER_STDERR_LOG = "train.stderr"  # the trainer's stderr, as the tmux window teed it
REPORT_JSON = "report.json"  # the report card: lm-eval benchmarks beside published baselines (trainer/evaluation/report_card.py)
REPORT_MD = "report.md"  # the same report card as a table to read
FENCE_FILE = "fence.json"  # in the STORE only (<run>/fence.json): a managed run's fencing generation (launcher/managed/fence.py)
FENCED_FILE = "fenced"  # written by the agent when the store's generation is newer than its box's: this box must stop writing
# -- the files in a checkpoint folder (beside manifest.json, runcontract.manifest) ---------------
EVAL_FILE = "eval.json"  # trainer.eval's scores of a checkpoint (in its folder; mirrored from the run folder too)
DATA_STATE_FILE = "data_state.json"  # the data sampler's position

# -- the prepared folders runs share (tokenizer/, data/): each is whole once its meta file is there
TOKENIZER_META_FILE = "tokenizer_meta.json"
DATA_META_FILE = "data_meta.json"

# -- checkpoints -----------------------------------------------------------------------------------
CHECKPOINTS_DIR = "checkpoints"  # step checkpoints: checkpoints/step_NNNNNN/
FINAL_DIR = "final"  # the model at the end of training (or when the budget ran out)
STEP_DIR_PATTERN = re.compile(r"^step_(\d{6,})$")  # what step_dir_name writes, and nothing else


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def step_of_dir(name: str) -> Optional[int]:
    """The step a step-checkpoint folder's name says, or None when it is not one."""
    match = STEP_DIR_PATTERN.match(name)
    return int(match.group(1)) if match else None


def checkpoint_rel(name: str) -> str:
    """Folder of checkpoint ``name`` (``final`` or ``step_NNNNNN``) inside the run folder."""
    if name == FINAL_DIR:
        return FINAL_DIR
    if step_of_dir(name) is None:
        raise UserError(f"{name!r} is not a checkpoint name: expected step_NNNNNN or {FINAL_DIR}.")
    return f"{CHECKPOINTS_DIR}/{name}"


def recency(step: int, name: str) -> tuple[int, bool]:
    """Sort key of checkpoints, larger is newer: the higher step, and at the same step ``final``.

    "The latest complete checkpoint" is the maximum of this over the complete ones (complete:
    runcontract.manifest.is_complete locally, Store.tree_complete in the store)."""
    return (step, name == FINAL_DIR)


def latest_complete_checkpoint(run_dir: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint in a run folder by ``recency``, or None.

    Complete: a manifest whose files all exist with their sizes (hashes are checked when the
    checkpoint is loaded). A step folder's step is its name's; final/'s is its manifest's."""
    run_dir = Path(run_dir)
    candidates = []
    root = run_dir / CHECKPOINTS_DIR
    if root.is_dir():
        candidates = [(p, step_of_dir(p.name)) for p in root.iterdir() if p.is_dir() and step_of_dir(p.name) is not None]
    final = run_dir / FINAL_DIR
    if final.is_dir():
        try:
            candidates.append((final, int(read_manifest(final).meta.get("step", -1))))
        except (ManifestError, ValueError, TypeError):
            pass
    complete = [(p, step) for p, step in candidates if step >= 0 and is_complete(p)]
    if not complete:
        return None
    return max(complete, key=lambda found: recency(found[1], found[0].name))[0]


# -- status.json ---------------------------------------------------------------------------------
# "state": preparing (the launcher's stages), running (the trainer), or an ended state.
FINISHED, FAILED, STOPPED = "finished", "failed", "stopped"
ENDED_STATES = (FINISHED, FAILED, STOPPED)
RUN_STATES = ("preparing", "running", *ENDED_STATES)
# "phase", in the order a run goes through them; an ended run's phase is its state.
LAUNCHER_PHASES = ("setup", "restore", "nccl_probe", "tokenizer", "data", "benchmark", "cost")
TRAINER_PHASES = ("setup", "overfit-check", "training", "eval", "checkpoint")
RUN_PHASES = (*LAUNCHER_PHASES, *TRAINER_PHASES[1:], *ENDED_STATES)
TRAINER_STARTING = "the trainer is starting"  # the launcher's "progress" between starting tmux and the trainer's first write
