"""``launcher down``: stop the run, release the box, clear the local state.

For a rented box the instance is terminated (billing stops) and the local state is cleared
only after the provider confirms it is gone. For an SSH box you own, the session and the
secrets file are removed from it and the box itself is left running.
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
    config, _, state = load_command_context(root, config_path)
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

        console.print(f"terminating {instance['provider']} instance {instance['id']} ...")
        providers.terminate(config, instance["id"])  # raises with the manual command if it cannot confirm
        console.print(f"[green]instance {instance['id']} is gone: billing stopped.[/green]")
    clear_state(root)
    what = "the box is released" if instance else f"{box.label} itself keeps running (it is yours)"
    console.print(f"down: run stopped, local state cleared; {what}.", highlight=False)
