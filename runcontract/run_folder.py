"""The run folder: the seam between launcher and trainer (docs/status-json.md).

The trainer writes ``runs/<name>/``; the launcher reads it (over SSH or in place) and never
parses the trainer's human output. Every name either half uses for it lives here.
"""
from __future__ import annotations

# status.json "state": preparing (the launcher's stages), running (the trainer), or an ended state.
ENDED_STATES = ("finished", "failed", "stopped")
RUN_STATES = ("preparing", "running", *ENDED_STATES)
# status.json "phase", in the order a run goes through them; an ended run's phase is its state.
LAUNCHER_PHASES = ("setup", "restore", "tokenizer", "data", "benchmark", "cost")
TRAINER_PHASES = ("setup", "overfit-check", "training", "eval", "checkpoint")
RUN_PHASES = (*LAUNCHER_PHASES, *TRAINER_PHASES[1:], *ENDED_STATES)
TRAINER_STARTING = "the trainer is starting"  # the launcher's "progress" between starting tmux and the trainer's first write
