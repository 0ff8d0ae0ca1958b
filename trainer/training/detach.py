"""Re-run a command detached in a terminal multiplexer so it survives the SSH session.

Which multiplexer (tmux, else screen) and the session's name follow runcontract/detached.py,
as ``launcher run`` does. The caller prints how to attach.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from runcontract.detached import attach_command, preferred_multiplexer
from runcontract.errors import UserError


def pick_multiplexer() -> str:
    tool = preferred_multiplexer(lambda name: shutil.which(name) is not None)
    if tool is None:
        raise UserError("--launch_screen needs tmux or screen and neither is installed; install one (apt-get install -y tmux) or run without --launch_screen.")
    return tool


def _session_exists(tool: str, session: str) -> bool:
    if tool == "tmux":
        return subprocess.run(["tmux", "has-session", "-t", f"={session}"], capture_output=True).returncode == 0
    listing = subprocess.run(["screen", "-ls"], capture_output=True, text=True).stdout
    return any(line.strip().split("\t")[0].endswith(f".{session}") for line in listing.splitlines())


def launch_detached(command: Sequence[str], session: str, cwd: Optional[Path] = None, tool: Optional[str] = None) -> str:
    """Start ``command`` in a new detached session named ``session``; return how to attach.

    The shell stays open after the command ends (so its last lines stay readable on attach)."""
    tool = tool or pick_multiplexer()
    if _session_exists(tool, session):
        raise UserError(f"a {tool} session named {session!r} already exists (is this run already going?). "
                        f"Attach with `{attach_command(session, tool)}`, or stop it first.")
    cwd = Path(cwd or os.getcwd())
    script = f"cd {shlex.quote(str(cwd))} && {shlex.join(command)}; echo; echo '[command exited with status '$?']'; exec bash"
    if tool == "screen":
        argv = ["screen", "-dmS", session, "bash", "-c", script]
        detach_keys = "Ctrl-a d"
    else:
        argv = ["tmux", "new-session", "-d", "-s", session, "bash", "-c", script]
        detach_keys = "Ctrl-b d"
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"could not start a {tool} session {session!r}: {result.stderr.strip() or result.stdout.strip()}")
    return f"{attach_command(session, tool)}    (detach again with {detach_keys})"


def stop_session(session: str, tool: str) -> None:
    """End a session (used by tests to clean up after themselves)."""
    if tool == "screen":
        subprocess.run(["screen", "-S", session, "-X", "quit"], capture_output=True)
    else:
        subprocess.run(["tmux", "kill-session", "-t", f"={session}"], capture_output=True)
