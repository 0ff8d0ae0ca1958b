"""``launcher run``: sync, setup, tokenizer, data, benchmark, cost gate, then training in tmux.

Each stage prints its status and is skipped when its output is already valid (launcher/stages/, run by launcher/run/).
``--dry-run`` prints every command it would run and which stages are up to date (it only reads
the box), and changes nothing. On a run that has finished all it was asked for, nothing runs:
it says so and how to train further.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from launcher.box.factory import box_spec, open_box
from launcher.console import make_console
from launcher.config import RENTED_KINDS
from launcher.run.context import RunContext
from launcher.run.runner import build_stages, run_stages
from launcher.run.run_status import finished_run
from launcher.run.start import start_training, validate_run
from launcher.state import load_command_context
from runcontract.errors import UserError


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
