"""``launcher logs [--follow] [--lines N]``: the training log (runs/NAME/train.log on the box).

``--follow`` streams until Ctrl-C (training keeps running, and the command says so, or says that
it has already ended) and reconnects by itself when the connection drops, without losing or
repeating a line (log_follow.py). When the box cannot be reached, the stored copy is shown.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import click

from launcher import tmux_job
from launcher.box import BoxUnreachable, ConnectionLost
from launcher.log_follow import LogFollower
from launcher.state import box_for_command, load_command_context, run_name


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
    path = f"runs/{name}/train.log"
    box = box_for_command(config, state, root)
    try:
        box.run("true", timeout=60, cwd=False)
    except (BoxUnreachable, ConnectionLost) as exc:
        _stderr(f"{exc}\nshowing the STORED copy of {name}/train.log from {config.storage.url} instead"
                + (" (it cannot be followed)" if follow else ""))
        from launcher.store import open_store

        text = open_store(config.storage, root).read_text(f"{name}/train.log")
        if text is None:
            _stderr(f"the store has no {name}/train.log either.")
            sys.exit(1)
        _stdout("".join(text.splitlines(keepends=True)[-lines:] if lines else []))
        return
    if not follow:
        result = box.run(f"test -f {shlex.quote(path)} && tail -n {lines} {shlex.quote(path)}", check=False, timeout=60)
        box.close()
        if not result.ok:
            _stderr(f"no {path} on {box.label} yet: has `launcher run` started training? (`launcher status` shows the run)")
            sys.exit(1)
        _stdout(result.stdout)
        return

    first = [box]

    def connect():
        if first:
            return first.pop()
        fresh = box_for_command(config, state, root)
        fresh.run("true", timeout=60, cwd=False)
        return fresh

    follower = LogFollower(connect, path, write=_stdout, notice=lambda m: _stderr(f"logs: {m}"))
    session = (state.get("run") or {}).get("tmux_session") or tmux_job.session_name(name)
    try:
        follower.start_at_last(lines)
        follower.follow()
    except KeyboardInterrupt:
        ended = _ended_state(config, state, root, name)
        if ended:
            _stderr(f"\nstopped following. Training has {ended} on {box.label}: `launcher status` for the result, "
                    "`launcher fetch-checkpoint` for the checkpoint.")
        else:
            _stderr(f"\nstopped following. Training keeps running on {box.label} in tmux session {session!r}: "
                    "`launcher status` for progress, `launcher stop` to stop it.")
    finally:
        follower.close()


def _ended_state(config, state: dict, root: Path, name: str) -> Optional[str]:
    """"finished", "failed" or "stopped" when the run's status.json on the box says so; None when running or unknown."""
    try:
        box = box_for_command(config, state, root)
        try:
            status = json.loads(box.get_file(f"runs/{name}/status.json") or b"{}")
        finally:
            box.close()
    except Exception:  # unreachable or unreadable: the message for a running job is the safe one
        return None
    value = status.get("state") if isinstance(status, dict) else None
    return value if value in ("finished", "failed", "stopped") else None
