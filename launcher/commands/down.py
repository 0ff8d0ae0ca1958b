"""``launcher down``: stop the run, release the box, clear the local state.

For a rented box the instance is terminated through the provider recorded with it in
.launcher/state.json (never the one the current config happens to name: a config whose box
kind or API differs from the record is refused, naming both), and "billing stopped" is
printed and the local state cleared only after that provider confirms it is gone. An
unconfirmed rental (a create whose answer was lost, recorded by name without an id) is
looked for by that name first: found, it is terminated like any other; not found, the
record stays and the error gives the provider's command to check, unless
``--forget-unconfirmed`` says the user has checked. For an SSH box you own, the session and the secrets file are removed from it and the box itself is
left running.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from launcher.box import detached_session
from launcher.box.base import BoxUnreachable, ConnectionLost
from launcher.commands.status import training_state
from launcher.commands.stop import at_step, stop_training
from launcher.config import RENTED_KINDS
from launcher.console import make_console
from launcher.secrets import secrets_path
from launcher.state import box_for_command, clear_state, load_command_context, run_name, update_state
from runcontract.detached import session_name
from runcontract.errors import UserError
from runcontract.run_folder import ENDED_STATES


@click.command("down")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for training to stop with a checkpoint.")
@click.option("--forget-unconfirmed", is_flag=True,
              help="Drop an unconfirmed rental's record when one more look does not find it (after you checked the provider yourself).")
@click.option("--orphans", is_flag=True, help="Instead: end every orphan instance on the configured provider accounts "
              "(launcher-named, recorded by no run: see `launcher status --all`), after confirming.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="With --orphans: end them without asking.")
def command(config_path: Optional[str], timeout: float, forget_unconfirmed: bool, orphans: bool, assume_yes: bool) -> None:
    """Stop the run, release the box (a rented one stops billing) and forget it."""
    root = Path.cwd()
    config, _, state = load_command_context(root, config_path, teardown=True)
    console = make_console()
    if orphans:
        end_orphans(config, root, state, console, assume_yes)
        return
    instance = state.get("instance")
    if not state.get("box") and not instance:
        clear_state(root)
        console.print("nothing to take down: no box is recorded for this project.")
        return
    import launcher.providers as providers

    if providers.is_unconfirmed(instance):
        instance = _reconcile(instance, config, root, console, forget_unconfirmed)
        if instance is None:
            return
        state = {**state, "instance": instance}
    name = run_name(config, state)
    multiplexer = (state.get("run") or {}).get("multiplexer") or "tmux"
    account: list[str] = []  # what down did, in order, printed once at the end
    rented = bool(instance) and instance.get("provider") in RENTED_KINDS
    if rented and not state.get("box") and not instance.get("ssh_host"):  # e.g. found after a lost create
        account.append("it never had an SSH address, so nothing ran on it")
        box = None
    else:
        box = box_for_command(config, state, root)
        _release_box(box, state, name, multiplexer, console, timeout, account)
    if rented:
        provider_name = providers.PROVIDER_NAMES[instance["provider"]]
        console.print(f"terminating {provider_name} instance {instance['id']} (through {instance.get('api_base') or 'its default API'}) ...")
        providers.terminate_recorded(instance, config)  # raises with the manual command if it cannot confirm
        account.append(f"{provider_name} confirmed instance {instance['id']} is gone: billing stopped")
    elif box is not None and box.kind == "local":
        account.append("this machine needs no releasing")
    else:
        account.append(f"{box.label} itself keeps running (it is yours)")
    clear_state(root)
    console.print(f"down: {'; '.join(account)}; local state cleared.", highlight=False)


def _release_box(box, state: dict, name: str, multiplexer: str, console, timeout: float, account: list[str]) -> None:
    """Stop the run and remove the secrets file on the box, saying what happened in ``account``."""
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


def _reconcile(record: dict, config, root: Path, console, forget: bool) -> Optional[dict]:
    """The instance an unconfirmed record turned out to be (recorded at once), or None when it
    was forgotten unfound; UserError (record kept) when it is not found and not to be forgotten."""
    import launcher.providers as providers

    try:
        return providers.reconcile_unconfirmed(record, config, console, window_s=0 if forget else None,
                                               on_found=lambda found: update_state(root, instance=found))
    except UserError:
        if not forget:
            raise
    clear_state(root)
    console.print(f"down: one more look did not find {providers.recorded_what(record)}, and you have checked it with "
                  f"{providers.manual_terminate_command(record)}: record forgotten, nothing was terminated; local state "
                  "cleared.", highlight=False)
    return None


def _run_account(name: str, data: dict) -> str:
    status = data["status"]
    run_state = training_state(status, data["session_alive"])
    if data.get("stop_sent"):
        return f"training was stopped: run {name!r} {run_state}{at_step(status)}"
    if run_state == "not started":
        return f"run {name!r} had not started"
    return f"run {name!r} had already {run_state}{at_step(status)}" if run_state in ENDED_STATES \
        else f"run {name!r} was {run_state}{at_step(status)}"


def end_orphans(config, root: Path, state: dict, console, assume_yes: bool) -> None:
    """``down --orphans``: terminate, through its provider and confirmed gone, every orphan instance."""
    import sys

    import launcher.providers as providers
    from launcher.managed.account import watch
    from runcontract.errors import UserError

    rows, notes = watch(config, root, state)
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    orphans = [r.instance for r in rows if r.orphan]
    if not orphans:
        console.print(f"no orphan instance: {len(rows)} instance(s) on the configured accounts, each recorded by a run or not the launcher's.")
        return
    for i in orphans:
        console.print(f"orphan: {providers.PROVIDER_NAMES[i.provider]} instance {i.id} ({i.name}, "
                      f"{i.raw_state or i.state}, ${i.hourly_price or 0:.3f}/h)", highlight=False)
    if not assume_yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise UserError("ending instances needs a confirmation and stdin is not a terminal: pass --yes to end the orphans listed above")
        from rich.prompt import Confirm

        if not Confirm.ask(f"End these {len(orphans)} instance(s)? Anything running on them is lost", console=console, default=False):
            raise UserError("not ending anything: cancelled at the confirmation")
    for i in orphans:
        record = {"provider": i.provider, "id": i.id, "api_base": i.api_base}
        providers.terminate_recorded(record, config if config.box.kind == i.provider else None)  # the config lends key and timeouts
        console.print(f"{providers.PROVIDER_NAMES[i.provider]} confirmed instance {i.id} is gone: billing stopped", highlight=False)
