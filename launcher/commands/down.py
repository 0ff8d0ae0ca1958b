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
from launcher import detached_session
from launcher.box import BoxUnreachable, ConnectionLost
from launcher.commands.status import training_state
from launcher.commands.stop import at_step, stop_training
from launcher.config import RENTED_KINDS
from launcher.console import make_console
from launcher.secrets import secrets_path
from launcher.state import box_for_command, clear_state, load_command_context, run_name
from runcontract.detached import session_name
from runcontract.run_folder import ENDED_STATES


@click.command("down")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for training to stop with a checkpoint.")
def command(config_path: Optional[str], timeout: float) -> None:
    """Stop the run, release the box (a rented one stops billing) and forget it."""
    root = Path.cwd()
    config, _, state = load_command_context(root, config_path, teardown=True)
    console = make_console()
    instance = state.get("instance")
    if not state.get("box") and not instance:
        clear_state(root)
        console.print("nothing to take down: no box is recorded for this project.")
        return
    name = run_name(config, state)
    multiplexer = (state.get("run") or {}).get("multiplexer") or "tmux"
    box = box_for_command(config, state, root)
    account: list[str] = []  # what down did, in order, printed once at the end
    try:
        if state.get("run"):
            data = stop_training(box, name, multiplexer, console, timeout)
            detached_session.kill(box, session_name(name), multiplexer)
            account.append(_run_account(name, data))
        else:
            account.append("no run was started on it")
        path = secrets_path(box)
        removed = box.run(f"test -f {path} && rm -f {path}", check=False, timeout=30, cwd=box.kind == "local").ok
        account.append(f"removed the secrets file {path}" if removed else "no secrets file was on it")
    except (BoxUnreachable, ConnectionLost) as exc:
        console.print(f"[yellow]{exc}[/yellow]", highlight=False)
        account.append("the box could not be reached, so training (if any) was not stopped and its secrets file was "
                       "not removed")
    finally:
        box.close()
    if instance and instance.get("provider") in RENTED_KINDS:
        import launcher.providers as providers

        provider_name = providers.PROVIDER_NAMES[instance["provider"]]
        console.print(f"terminating {provider_name} instance {instance['id']} (through {instance.get('api_base') or 'its default API'}) ...")
        providers.terminate_recorded(instance, config)  # raises with the manual command if it cannot confirm
        account.append(f"{provider_name} confirmed instance {instance['id']} is gone: billing stopped")
    elif box.kind == "local":
        account.append("this machine needs no releasing")
    else:
        account.append(f"{box.label} itself keeps running (it is yours)")
    clear_state(root)
    console.print(f"down: {'; '.join(account)}; local state cleared.", highlight=False)


def _run_account(name: str, data: dict) -> str:
    status = data["status"]
    run_state = training_state(status, data["session_alive"])
    if data.get("stop_sent"):
        return f"training was stopped: run {name!r} {run_state}{at_step(status)}"
    if run_state == "not started":
        return f"run {name!r} had not started"
    return f"run {name!r} had already {run_state}{at_step(status)}" if run_state in ENDED_STATES \
        else f"run {name!r} was {run_state}{at_step(status)}"
