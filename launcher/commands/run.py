"""``launcher run``: sync, setup, tokenizer, data, benchmark, cost gate, then training in tmux.

Each stage prints its status and is skipped when its output is already valid (launcher/stages/).
``--dry-run`` prints every command it would run and which stages are up to date (it only reads
the box), and changes nothing. On a run that has finished all it was asked for, nothing runs:
it says so and how to train further.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click
from launcher.box import box_spec, open_box
from launcher.console import make_console
from launcher.config import RENTED_KINDS, LauncherConfig
from launcher.stages import RunContext, build_stages, finished_run, run_stages
from launcher.state import load_command_context, update_state
from runcontract.config import SECTIONS, ModelConfig
from runcontract.configlib import load_config
from runcontract.errors import ConfigError, UserError


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


@click.command("run")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one, else configs/quickstart.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a launcher config key (box., run., storage., budget., agent.).")
@click.option("--dry-run", is_flag=True, help="Print every command it would run and which stages are up to date; change nothing.")
@click.option("--resume", is_flag=True, help="Restore the run from the store first, and resume training from its latest checkpoint.")
@click.option("--allow-over-budget", is_flag=True, help="Train even when the projected cost is over budget.max_cost.")
@click.option("--managed", is_flag=True, help="Keep the run going to its target: rent a box, and when it is lost, preempted or hung, "
              "end it and resume on the next one from the store, within budget.max_total_cost (README: Managed runs).")
def command(config_path: Optional[str], overrides: tuple[str, ...], dry_run: bool, resume: bool, allow_over_budget: bool,
            managed: bool) -> None:
    """Sync the project, prepare data, benchmark, check the budget and start training in tmux."""
    root = Path.cwd()
    config, config_path, state = load_command_context(root, config_path, overrides)
    validate_run(config, config_path, root)
    console = make_console()
    if managed:
        if dry_run:
            raise UserError("--managed and --dry-run do not go together: a managed run rents boxes as it needs them")
        from launcher.managed.controller import run_managed

        raise SystemExit(run_managed(config, config_path, root, console))
    recorded = state.get("instance") or {}
    # a rented box, or an SSH host the plan chose (recorded with its $/h): kept in the state for later commands
    keep = config.box.kind in RENTED_KINDS or recorded.get("provider") == "static"
    instance = (recorded or None) if keep else None
    if config.box.kind in RENTED_KINDS and not instance:
        raise UserError(f"no {config.box.kind} box is recorded for this project; rent one with "
                        f"`launcher up{' --config ' + config_path if config_path else ''}` first.")
    spec = box_spec(config, root, instance)
    box = open_box(spec, root)
    hourly = float(instance["hourly_price"]) if instance and instance.get("hourly_price") is not None else None
    ctx = RunContext(config=config, project_root=root, box=box, console=console, config_path=config_path,
                     resume=resume, allow_over_budget=allow_over_budget, hourly_rate=hourly,
                     instance_id=instance.get("id") if instance else None)
    stages = build_stages(ctx)
    if dry_run:
        ctx.probe_box = box.kind == "local" or bool(state.get("box"))
        try:
            complete = finished_run(ctx) if ctx.probe_box else None
            if complete:
                console.print(f"dry run: {complete}", highlight=False)
                return
            run_stages(ctx, stages, dry_run=True)
        finally:
            box.close()
        return
    start_training(ctx, spec, instance, config_path)


def start_training(ctx: RunContext, spec: dict, instance: Optional[dict], config_path: Optional[str]) -> bool:
    """Run every stage on the box and start training in tmux; False when the run had already
    finished all it was asked for (nothing runs). ``launcher run`` and the managed controller both call it."""
    from launcher import detached_session

    root, box, console = ctx.project_root, ctx.box, ctx.console
    try:
        ctx.multiplexer = detached_session.detect_multiplexer(box)  # also the first connection: unreachable -> clear error
        complete = finished_run(ctx)
        if complete:  # before anything is written: the state, status.json and train.log stay as they are
            console.print(complete, highlight=False)
            return False
        from launcher.store import open_store
        from launcher.store_probe import probe_store

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
