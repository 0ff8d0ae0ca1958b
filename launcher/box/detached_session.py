"""The training job on the box: a detached tmux session (screen when tmux is missing).

One session per run (its name and the multiplexer order: runcontract/detached.py), with a
window per process (``train``, ``agent``). It outlives the SSH connection that started it.
``stop`` presses Ctrl-C in the ``train`` window (the whole foreground process group gets
SIGINT, so every accelerate rank stops at the next step with a checkpoint); ``kill`` ends
the session.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

from launcher.box.base import Box, BoxError
from runcontract.detached import MULTIPLEXERS, attach_command, preferred_multiplexer


@dataclass
class Window:
    name: str
    command: str  # a shell script; run under bash -c in the workdir


def detect_multiplexer(box: Box) -> str:
    """``tmux`` when the box has it, else ``screen``; a clear error when neither."""
    probe = "; ".join(f"command -v {tool} >/dev/null 2>&1 && echo {tool}" for tool in MULTIPLEXERS)
    result = box.run(f"{probe}; true", check=False, cwd=False, timeout=30)
    found = preferred_multiplexer(result.stdout.split().__contains__)
    if found is None:
        raise BoxError(
            f"{box.label} has neither tmux nor screen, so training could not outlive the SSH connection. "
            "Install one on the box (`launcher ssh -- sudo apt-get install -y tmux`) and run again."
        )
    return found


def _window_shell(box: Box, window: Window) -> str:
    from launcher.box.ssh_commands import remote_path

    return f"bash -c {shlex.quote(f'cd {remote_path(box.workdir)} && {window.command}')}"


def start_commands(box: Box, session: str, windows: Sequence[Window], multiplexer: str = "tmux") -> list[str]:
    """The commands that start ``session`` with ``windows`` (also shown by --dry-run)."""
    s = shlex.quote(session)
    cmds: list[str] = []
    for i, window in enumerate(windows):
        shell = shlex.quote(_window_shell(box, window))
        name = shlex.quote(window.name)
        if multiplexer == "tmux":
            if i == 0:
                # -d: detached; a wide window so progress lines are not wrapped in the pane
                cmds.append(f"tmux new-session -d -s {s} -n {name} -x 200 -y 50 {shell}")
            else:
                cmds.append(f"tmux new-window -d -t ={s}: -n {name} {shell}")
        else:
            if i == 0:
                cmds.append(f"screen -dmS {s} -t {name} bash -c {shell}")
            else:
                cmds.append(f"screen -S {s} -X screen -t {name} bash -c {shell}")
    return cmds


def start(box: Box, session: str, windows: Sequence[Window], multiplexer: str = "tmux") -> None:
    if has(box, session, multiplexer):
        raise BoxError(
            f"a {multiplexer} session {session!r} is already running on {box.label}; follow it with "
            "`launcher logs --follow`, or stop it with `launcher stop` before starting again."
        )
    box.run(" && ".join(start_commands(box, session, windows, multiplexer)), timeout=60, cwd=False)


def has(box: Box, session: str, multiplexer: str = "tmux") -> bool:
    s = shlex.quote(session)
    if multiplexer == "tmux":
        cmd = f"tmux has-session -t ={s} 2>/dev/null"
    else:
        cmd = f"screen -ls {s} 2>/dev/null | grep -q '[0-9]\\.{session}[[:space:]]'"
    return box.run(cmd, check=False, cwd=False, timeout=30).ok


def windows(box: Box, session: str, multiplexer: str = "tmux") -> list[str]:
    """Names of the session's live windows (tmux only; screen reports [])."""
    if multiplexer != "tmux":
        return []
    result = box.run(f"tmux list-windows -t ={shlex.quote(session)} -F '#{{window_name}}' 2>/dev/null", check=False, cwd=False, timeout=30)
    return result.stdout.split() if result.ok else []


def interrupt(box: Box, session: str, window: str = "train", multiplexer: str = "tmux") -> bool:
    """Press Ctrl-C in ``window`` (SIGINT to its foreground process group). False when gone."""
    s, w = shlex.quote(session), shlex.quote(window)
    if multiplexer == "tmux":
        cmd = f"tmux send-keys -t ={s}:{w} C-c"
    else:
        cmd = f"screen -S {s} -p {w} -X stuff $'\\003'"
    return box.run(cmd, check=False, cwd=False, timeout=30).ok


def kill(box: Box, session: str, multiplexer: str = "tmux") -> None:
    s = shlex.quote(session)
    cmd = f"tmux kill-session -t ={s} 2>/dev/null" if multiplexer == "tmux" else f"screen -S {s} -X quit 2>/dev/null"
    box.run(cmd + "; true", check=False, cwd=False, timeout=30)


def attach_hint(session: str, multiplexer: Optional[str] = "tmux") -> str:
    return f"launcher ssh -- {attach_command(session, multiplexer or 'tmux')}"
