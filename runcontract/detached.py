"""Training detached from the terminal that started it: which multiplexer, and the session's name.

One rule for both ways a run is started detached: ``launcher run`` (on the box, through
SSH) and ``python -m trainer.train --launch_screen`` (by hand on the box). Both name the
session after the run, so a second start of the same run finds the first one, and both
prefer tmux, falling back to screen.
"""
from __future__ import annotations

from typing import Callable, Optional

# the order a multiplexer is picked in: tmux, else screen
MULTIPLEXERS = ("tmux", "screen")
# .launcher/state.json records sessions by this name, so it never changes
SESSION_PREFIX = "llmbox-"


def session_name(run_name: str) -> str:
    return f"{SESSION_PREFIX}{run_name}"


def preferred_multiplexer(installed: Callable[[str], bool]) -> Optional[str]:
    """The first of MULTIPLEXERS that ``installed`` says is there; None when neither is."""
    return next((tool for tool in MULTIPLEXERS if installed(tool)), None)


def attach_command(session: str, multiplexer: str) -> str:
    """The command that attaches a terminal to ``session``."""
    return f"screen -r {session}" if multiplexer == "screen" else f"tmux attach -t {session}"
