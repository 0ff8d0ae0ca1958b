"""``launcher logs [--follow] [--lines N]``: the training log (runs/NAME/train.log on the box).

``--follow`` streams until Ctrl-C (training keeps running, and the command says so, or says that
it has already ended) and reconnects by itself when the connection drops, without losing or
repeating a line (launcher/box/log_follow.py). When the box cannot be reached, the stored copy is shown. On a
run that never started there is nothing to follow, and it says so instead of waiting.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import click

from launcher.box.base import BoxUnreachable, ConnectionLost
from launcher.commands.status import read_run, training_state
from launcher.box.log_follow import LogFollower
from launcher.state import box_for_command, load_command_context, run_name
from runcontract.detached import session_name
from runcontract.errors import EXIT_USER_ERROR
from runcontract.run_folder import ENDED_STATES, TRAIN_LOG, run_rel


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@click.command("logs")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one).")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new lines until Ctrl-C (training keeps running).")
@click.option("--lines", "-n", default=50, show_default=True, type=click.IntRange(min=0), help="Lines of history to show first.")
def command(config_path: Optional[str], follow: bool, lines: int) -> None:
    """Print the training log; --follow streams it."""
    root = Path.cwd()
    config, config_path, state = load_command_context(root, config_path)
    name = run_name(config, state)
    path = f"{run_rel(name)}/{TRAIN_LOG}"
    box = box_for_command(config, state, root)
    try:
        box.run("true", timeout=60, cwd=False)
    except (BoxUnreachable, ConnectionLost) as exc:
        _stderr(f"{exc}\nshowing the STORED copy of {name}/{TRAIN_LOG} from {config.storage.url} instead"
                + (" (it cannot be followed)" if follow else ""))
        from launcher.store.factory import open_store

        text = open_store(config.storage, root).read_text(f"{name}/{TRAIN_LOG}")
        if text is None:
            _stderr(f"the store has no {name}/{TRAIN_LOG} either.")
            sys.exit(EXIT_USER_ERROR)
        _stdout("".join(text.splitlines(keepends=True)[-lines:] if lines else []))
        return
    multiplexer = (state.get("run") or {}).get("multiplexer") or "tmux"
    hint = f" --config {config_path}" if config_path else ""
    if not follow:
        result = box.run(f"test -f {shlex.quote(path)} && tail -n {lines} {shlex.quote(path)}", check=False, timeout=60)
        if not result.ok:
            run_state = training_state(read_run(box, name, multiplexer)["status"], False)
            box.close()
            _stderr(f"no {path} on {box.label}: run {name!r} is {run_state}" + _next_step(run_state, hint))
            sys.exit(EXIT_USER_ERROR)
        box.close()
        _stdout(result.stdout)
        return
    log_exists = box.run(f"test -f {shlex.quote(path)}", check=False, timeout=60).ok
    if not log_exists:
        data = read_run(box, name, multiplexer)
        run_state = training_state(data["status"], data["session_alive"])
        if run_state == "not started":
            box.close()
            _stderr(f"run {name!r} has not started on {box.label}: there is no {path} to follow. "
                    f"Start it with `launcher run{hint}`.")
            sys.exit(EXIT_USER_ERROR)
        phase = data["status"].phase if data["status"] is not None else None
        _stderr(f"logs: run {name!r} is {run_state}{f' (phase {phase})' if phase else ''}; waiting for {path} to appear ...")

    first = [box]

    def connect():
        if first:
            return first.pop()
        fresh = box_for_command(config, state, root)
        fresh.run("true", timeout=60, cwd=False)
        return fresh

    follower = LogFollower(connect, path, write=_stdout, notice=lambda m: _stderr(f"logs: {m}"))
    session = (state.get("run") or {}).get("tmux_session") or session_name(name)
    try:
        follower.start_at_last(lines)
        follower.follow()
    except KeyboardInterrupt:
        _stderr("\nstopped following. " + _where_it_stands(config, state, root, name, multiplexer, session, hint))
    finally:
        follower.close()


def _next_step(run_state: str, hint: str) -> str:
    if run_state == "not started":
        return f": start it with `launcher run{hint}`."
    if run_state in ("starting", "preparing"):
        return f"; its log appears once training starts (`launcher status{hint}` shows the phase)."
    return f" (`launcher status{hint}` shows the run)."


def _where_it_stands(config, state: dict, root: Path, name: str, multiplexer: str, session: str, hint: str) -> str:
    """What is true of the run now that the user stopped watching: never a session that is not there."""
    try:
        box = box_for_command(config, state, root)
        try:
            data = read_run(box, name, multiplexer)
            label = box.label
        finally:
            box.close()
    except Exception as exc:  # noqa: BLE001 - unreachable or unreadable: say exactly that
        return f"Could not check the run on the box ({str(exc).splitlines()[0]}); `launcher status{hint}` tries again."
    run_state = training_state(data["status"], data["session_alive"])
    if run_state in ENDED_STATES:
        return (f"Training has {run_state} on {label}: `launcher status{hint}` for the result, "
                f"`launcher fetch-checkpoint{hint}` for the checkpoint.")
    if data["session_alive"]:
        return (f"Training keeps running on {label} in {multiplexer} session {session!r}: `launcher status{hint}` for "
                f"progress, `launcher stop{hint}` to stop it.")
    return f"Run {name!r} is {run_state} on {label}; `launcher status{hint}` shows it."
