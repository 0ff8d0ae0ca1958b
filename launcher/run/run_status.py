"""The run's status.json as the stages see it: the phase a stage writes while it prepares the run,
and whether the run already finished all this config asks for (then nothing runs)."""
from __future__ import annotations

import time
from typing import Optional

from launcher.box.base import BoxError
from launcher.run.context import RunContext
from runcontract.errors import UserError
from runcontract.run_files import StatusFile
from runcontract.run_folder import CONFIG_FILE, FINISHED, LAUNCHER_PHASES, STATUS_FILE


def write_launcher_phase(ctx: RunContext, stage: str, state: str = "preparing", progress: Optional[str] = None) -> None:
    """Put the stage in the run's status.json (phase; docs/status-json.md), keeping the last figures a
    previous run left there. Only the stages that prepare a run are phases; the trainer takes over after."""
    if stage not in LAUNCHER_PHASES:
        return
    path = f"{ctx.run_dir}/{STATUS_FILE}"
    try:
        previous = StatusFile.parse(ctx.box.get_file(path) or b"", path).to_json()
    except (UserError, BoxError):
        previous = {}
    previous.pop("pid", None)  # no trainer runs yet
    record = StatusFile(**{**previous, "state": state, "phase": stage, "progress": progress, "updated": time.time()})
    try:
        ctx.box.put_text(path, record.to_text())
    except BoxError:
        pass  # the stage itself reports an unreachable box


def finished_run(ctx: RunContext) -> Optional[str]:
    """A message when the run on the box has finished everything this config asks for, else None.

    The steps asked for are train.max_steps, else train.target_tokens over the tokens per step
    the run trained with (its config.yaml); a larger value than the finished step trains further."""
    import math

    import yaml

    try:
        status = StatusFile.parse(ctx.box.get_file(f"{ctx.run_dir}/{STATUS_FILE}") or b"", f"{ctx.run_dir}/{STATUS_FILE}")
        resolved = yaml.safe_load(ctx.box.get_file(f"{ctx.run_dir}/{CONFIG_FILE}") or b"{}") or {}
    except (UserError, ValueError):
        return None
    if status.state != FINISHED or status.step is None:
        return None
    train_cfg = ctx.train_config()
    tokens_per_step = (resolved.get("runtime") or {}).get("tokens_per_step") if isinstance(resolved, dict) else None
    if train_cfg.max_steps:
        asked = train_cfg.max_steps
    elif isinstance(tokens_per_step, int) and tokens_per_step > 0:
        asked = math.ceil(train_cfg.target_tokens / tokens_per_step)
    else:
        asked = status.max_steps or status.step
    if status.step < asked:
        return None
    figures = ", ".join(f"{label} {value:.4f}" for value, label in ((status.loss, "loss"), (status.val_loss, "val loss"))
                        if value is not None)
    where = f" in {ctx.config_path}" if ctx.config_path else ""
    return (f"run {ctx.run_name!r} is complete: it finished at step {status.step}/{status.max_steps if status.max_steps is not None else asked}"
            f"{' (' + figures + ')' if figures else ''} on {ctx.box.label}, and this config asks for no more. Nothing was "
            f"run or changed. To train it further, raise train.max_steps or train.target_tokens under run.set{where} "
            "(training resumes from its final checkpoint); to start a fresh run, give it a new run.name. "
            "`launcher status` shows its figures, `launcher fetch-checkpoint` downloads it.")
