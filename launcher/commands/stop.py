"""``launcher stop``: stop training cleanly (the trainer writes a final checkpoint) and wait for it.

Ctrl-C is pressed in the tmux window ``train`` (every rank gets SIGINT; the trainer stops at
the next step with a checkpoint and state "stopped"); without a session, the trainer's pid from
status.json gets SIGINT. Then it waits for status.json to leave "running" and for the session
to end (the agent's final flush to the store), up to --timeout.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click
from rich.console import Console

from launcher.box import detached_session
from launcher.box.base import Box
from launcher.console import make_console
from launcher.commands.status import read_run, training_state
from launcher.state import box_for_command, load_command_context, run_name
from runcontract.detached import session_name
from runcontract.errors import UserError
from runcontract.run_files import StatusFile
from runcontract.run_folder import ENDED_STATES, FINISHED


AGENT_GRACE_S = 20.0


def stop_training(box: Box, name: str, multiplexer: str, console: Optional[Console], timeout: float) -> dict:
    """Stop the run's training; returns the last read_run() dict, with "stop_sent" saying whether there
    was anything to stop. Raises UserError on timeout. ``console`` None: say nothing (the caller reports)."""
    console = console or Console(quiet=True)
    session = session_name(name)
    data = read_run(box, name, multiplexer)
    state = training_state(data["status"], data["session_alive"])
    if not data["session_alive"] and state != "running":
        return {**data, "stop_sent": False}
    if data["session_alive"]:
        detached_session.interrupt(box, session, "train", multiplexer)
        console.print(f"sent Ctrl-C to the trainer in {multiplexer} session {session!r} on {box.label}; waiting for its "
                      "final checkpoint ...")
    else:
        pid = data["status"].pid if data["status"] is not None else None
        if pid:
            box.run(f"kill -INT {int(pid)} 2>/dev/null; true", check=False, timeout=30)
            console.print(f"sent SIGINT to the trainer (pid {pid}) on {box.label}; waiting ...")
    deadline = time.monotonic() + timeout
    ended_at = None
    agent_interrupted = False
    while time.monotonic() < deadline:
        time.sleep(1.0)
        data = read_run(box, name, multiplexer)
        if not data["session_alive"]:  # the trainer and the agent (after its final flush) have exited
            return {**data, "stop_sent": True}
        state = data["status"].state if data["status"] is not None else None
        trainer_gone = multiplexer == "tmux" and "train" not in detached_session.windows(box, session, multiplexer)
        if (state in ENDED_STATES or trainer_gone) and ended_at is None:
            ended_at = time.monotonic()
            console.print(f"trainer is {state or 'gone'} at step {data['status'].step if data['status'] is not None else None}; waiting for the "
                          "agent's final upload ...")
        if ended_at is not None and not agent_interrupted and time.monotonic() - ended_at > AGENT_GRACE_S:
            # the agent ends by itself once it sees training end; if it has not (the trainer died
            # before writing status.json), Ctrl-C makes it do its final flush and exit
            detached_session.interrupt(box, session, "agent", multiplexer)
            agent_interrupted = True
    raise UserError(
        f"training on {box.label} did not stop within {timeout:.0f} s (session {session!r} still running); it may still "
        "be writing its checkpoint. Check `launcher status` and `launcher logs`; run `launcher stop` again to wait "
        "longer, or `launcher down` to end it forcibly."
    )


@click.command("stop")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the final checkpoint.")
def command(config_path: Optional[str], timeout: float) -> None:
    """Stop training cleanly with a final checkpoint; the box keeps running."""
    root = Path.cwd()
    config, _, state = load_command_context(root, config_path)
    name = run_name(config, state)
    multiplexer = (state.get("run") or {}).get("multiplexer") or "tmux"
    console = make_console()
    box = box_for_command(config, state, root)
    try:
        data = stop_training(box, name, multiplexer, console, timeout)
        label = box.label
    finally:
        box.close()
    console.print(stop_account(name, label, data), highlight=False)


def stop_account(name: str, label: str, data: dict) -> str:
    """One true sentence about the run after a stop: what was stopped, or why nothing was."""
    run_state = training_state(data["status"], data["session_alive"])
    at = at_step(data["status"])
    if not data.get("stop_sent"):
        if run_state == "not started":
            return f"nothing to stop: run {name!r} has not started on {label}; `launcher run` starts it."
        if run_state == FINISHED:
            return f"nothing to stop: run {name!r} already finished{at} on {label}."
        return f"nothing to stop: run {name!r} on {label} is {run_state}{at}."
    return (f"run {name!r} {run_state}{at} on {label}. The box is still up: `launcher run` continues from the "
            "checkpoint, `launcher down` releases it.")


def at_step(status: Optional[StatusFile]) -> str:
    """" at step 40/200 (loss 3.2100)", or "" when the run has no step yet: never "None"."""
    if status is None or status.step is None:
        return ""
    text = f" at step {status.step}" + (f"/{status.max_steps}" if status.max_steps is not None else "")
    return text + (f" (loss {status.loss:.4f})" if status.loss is not None else "")
