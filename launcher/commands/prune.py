"""``launcher prune``: delete a run's old checkpoints from the store, by the retention rule.

    launcher prune                      # the last run: keep storage.keep step checkpoints
    launcher prune --run NAME --keep 2  # another run, another count
    launcher prune --dry-run            # say what would go, delete nothing

Kept always: ``final/``, the checkpoint with the best validation loss and the newest complete
checkpoint (see launcher/store/retention.py). The agent applies the same rule after each
verified upload; this command is for runs whose agent is gone, or a smaller --keep.
"""
from __future__ import annotations

from pathlib import Path

import click

from launcher.store.base import human_bytes
from launcher.store.factory import open_store
from launcher.store.retention import delete_checkpoint, retention_plan
from runcontract.errors import UserError


@click.command("prune")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="Launcher config (default: the last run's, else configs/quickstart.yaml).")
@click.option("--run", "run_name", default=None, help="Run name (default: the last `launcher run`, else run.name from the config).")
@click.option("--keep", type=int, default=None, help="Step checkpoints to keep (default: storage.keep from the config).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def command(config_path, run_name, keep, dry_run) -> None:
    """Delete a run's old checkpoints from the store (never the newest complete one)."""
    from launcher.state import load_command_context, run_name as recorded_run

    if keep is not None and keep < 1:
        raise UserError(f"--keep {keep}: keep at least 1 step checkpoint (final/ and the newest are kept anyway).")
    root = Path.cwd()
    config, _, state = load_command_context(root, config_path)
    run = run_name or recorded_run(config, state)
    keep = keep if keep is not None else config.storage.keep
    store = open_store(config.storage, root)
    checkpoints = store.checkpoints(run)
    if not checkpoints:
        click.echo(f"no checkpoints stored for run {run!r} in {store.describe(run)}: nothing to prune")
        return
    plan = retention_plan(checkpoints, keep)
    for ckpt, why in plan.keep:
        click.echo(f"keep    {ckpt.name:<12} step {ckpt.step:>8}  {human_bytes(ckpt.size_bytes):>9}  ({why})")
    verb = "would delete" if dry_run else "delete"
    for ckpt, why in plan.delete:
        click.echo(f"{verb:<7} {ckpt.name:<12} step {ckpt.step:>8}  {human_bytes(ckpt.size_bytes):>9}  ({why})")
        if not dry_run:
            delete_checkpoint(store, run, ckpt.name)
    if not plan.delete:
        click.echo(f"nothing to prune: run {run!r} keeps all {len(checkpoints)} stored checkpoints (--keep {keep})")
    elif dry_run:
        click.echo(f"dry run: {len(plan.delete)} checkpoints ({human_bytes(plan.freed_bytes)}) would be deleted; run without --dry-run to delete them")
    else:
        click.echo(f"deleted {len(plan.delete)} checkpoints of run {run!r}, {human_bytes(plan.freed_bytes)} freed in {store.describe(run)}")
