"""``launcher down``: stop the run, release the box, clear the local state.

For a rented box the instance is terminated through the provider recorded with it in
.launcher/state.json (never the one the current config happens to name: a config whose box
kind or API differs from the record is refused, naming both), and "billing stopped" is
printed and the local state cleared only after that provider confirms it is gone. For an
SSH box you own, the session and the secrets file are removed from it and the box itself is
left running.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from rich.console import Console

from launcher import tmux_job
from launcher.box import BoxUnreachable, ConnectionLost
from launcher.commands.stop import stop_training
from launcher.stages import SECRETS_PATH
from launcher.state import box_for_command, clear_state, load_command_context, run_name


@click.command("down")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for training to stop with a checkpoint.")
def command(config_path: Optional[str], timeout: float) -> None:
    """Stop the run, release the box (a rented one stops billing) and forget it."""
    root = Path.cwd()
    config, _, state = load_command_context(root, config_path, teardown=True)
    console = Console()
    instance = state.get("instance")
    if not state.get("box") and not instance:
        clear_state(root)
        console.print("nothing to take down: no box is recorded for this project.")
        return
    name = run_name(config, state)
    multiplexer = (state.get("run") or {}).get("multiplexer") or "tmux"
    box = box_for_command(config, state, root)
    try:
        if state.get("run"):
            stop_training(box, name, multiplexer, console, timeout)
            tmux_job.kill(box, tmux_job.session_name(name), multiplexer)
        if box.kind != "local":
            box.run(f"rm -f {SECRETS_PATH}", check=False, timeout=30, cwd=False)
            console.print(f"removed the secrets file {SECRETS_PATH} from {box.label}")
    except (BoxUnreachable, ConnectionLost) as exc:
        console.print(f"[yellow]{exc}[/yellow]", highlight=False)
        if not instance:
            console.print("[yellow]the box could not be reached to stop training; the local state is cleared anyway."
                          "[/yellow]")
    finally:
        box.close()
    if instance and instance.get("provider") in ("runpod", "vastai"):
        import launcher.providers as providers

        name = providers.PROVIDER_NAMES[instance["provider"]]
        console.print(f"terminating {name} instance {instance['id']} (through {instance.get('api_base') or 'its default API'}) ...")
        providers.terminate_recorded(instance, config)  # raises with the manual command if it cannot confirm
        console.print(f"[green]{name} confirmed instance {instance['id']} is gone: billing stopped.[/green]")
    clear_state(root)
    what = "the box is released" if instance else f"{box.label} itself keeps running (it is yours)"
    console.print(f"down: run stopped, local state cleared; {what}.", highlight=False)
