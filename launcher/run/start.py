"""Starting a run on a box, for ``launcher run`` and the managed controller alike: the checks that
need no box, then every stage (launcher/run/runner.py), the run recorded in the state, and the
lines that say how to follow it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from launcher.box import detached_session
from launcher.config import LauncherConfig
from launcher.run.context import RunContext
from launcher.run.run_status import finished_run
from launcher.run.runner import build_stages, run_stages
from launcher.state import update_state
from runcontract.config import SECTIONS, ModelConfig
from runcontract.configlib import load_config
from runcontract.errors import ConfigError


def validate_run(config: LauncherConfig, config_path: Optional[str], root: Path) -> None:
    """Checks that need no box: the config files exist, the tokenizer's vocabulary fits the model, a box that is
    not this machine is not given a folder on it as its store. (Whether the store works is probed before the stages.)"""
    source = config_path or "the embedded default config"
    run = config.run
    for rel in (run.model_config_path, run.train_config_path, run.data_config_path):
        if not (root / rel).is_file():
            raise ConfigError(f"{source}: run config file {rel} does not exist in {root}; fix run.model_config / "
                              "run.train_config / run.data_config (paths are relative to the project folder).")
    model = load_config(ModelConfig, root / run.model_config_path, run.overrides, "model", SECTIONS)
    if model.vocab_size != run.tokenizer.vocab_size:
        raise ConfigError(
            f"{source}: run.tokenizer.vocab_size is {run.tokenizer.vocab_size} but the model config "
            f"{run.model_config_path} has vocab_size {model.vocab_size}; they must be equal (the tokenizer makes the ids "
            "the model embeds). Set one to the other."
        )
    if config.box.kind != "local" and config.storage.url.startswith("file://"):
        raise ConfigError(
            f"{source}: storage.url is {config.storage.url}, a folder on this machine, but the box is "
            f"{config.box.kind} ({config.box.host or 'rented'}): the box cannot write to this machine's folders. "
            "Use an S3-compatible store (storage.url: s3://BUCKET/PREFIX, with storage.endpoint_url for R2/B2/MinIO)."
        )


def start_training(ctx: RunContext, spec: dict, instance: Optional[dict], config_path: Optional[str]) -> bool:
    """Run every stage on the box and start training in tmux; False when the run had already
    finished all it was asked for (nothing runs). ``launcher run`` and the managed controller both call it."""
    root, box, console = ctx.project_root, ctx.box, ctx.console
    try:
        ctx.multiplexer = detached_session.detect_multiplexer(box)  # also the first connection: unreachable -> clear error
        complete = finished_run(ctx)
        if complete:  # before anything is written: the state, status.json and train.log stay as they are
            console.print(complete, highlight=False)
            return False
        from launcher.store.factory import open_store
        from launcher.store.probe import probe_store

        store = open_store(ctx.config.storage, root)
        probe_store(store, ctx.run_name, "this machine")  # before anything runs: a dead store is an error, not a run that stores nothing
        console.print(f"store {store.describe(ctx.run_name)}: write, read-back and delete work from this machine", highlight=False)
        update_state(root, config_path=config_path, box=spec, instance=instance,
                     run={"name": ctx.run_name, "tmux_session": ctx.session, "multiplexer": ctx.multiplexer,
                          "started_at": None})
        console.print(f"run [bold]{ctx.run_name}[/bold] on {box.label} (workdir {box.workdir})", highlight=False)
        run_stages(ctx, build_stages(ctx))
        update_state(root, run={"name": ctx.run_name, "tmux_session": ctx.session, "multiplexer": ctx.multiplexer,
                                "started_at": time.time()})
    finally:
        box.close()
    hint = "" if not config_path else f" --config {config_path}"
    console.print(
        f"[green]training started[/green] on {box.label} in {ctx.multiplexer} session {ctx.session!r}.\n"
        f"  follow:  launcher logs --follow{hint}\n  status:  launcher status{hint}\n"
        f"  attach:  {detached_session.attach_hint(ctx.session, ctx.multiplexer)}\n  stop:    launcher stop{hint}"
        + tensorboard_hint(ctx),
        highlight=False,
    )
    return True


def tensorboard_hint(ctx: RunContext) -> str:
    """The line that opens the run in TensorBoard, when the run logs to it (train.trackers)."""
    if "tensorboard" not in ctx.train_config().trackers:
        return ""
    if ctx.box.kind == "local":
        return f"\n  tensorboard:  tensorboard --logdir {ctx.run_dir}"
    return (f"\n  tensorboard:  tensorboard --logdir {ctx.run_dir}  (on the box, e.g. through `launcher ssh`; the event "
            f"files are also mirrored to the store under {ctx.run_name}/)")
