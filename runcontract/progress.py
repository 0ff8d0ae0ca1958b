"""How long work shows its progress: a bar redrawn in place on a terminal, and in a file (train.log,
a redirected stage, a CI log) one plain line about every tenth (10%, 20%, ... 100%), never a
bar's 0%/100% pair or thousands of carriage-return updates.

The one rule for the trainer's bars (trainer/corpus/progress.py), the launcher's own (sync, bootstrap,
downloads) and the box commands the launcher runs: ``PROGRESS_ENV`` says which (the launcher sets
it for a box command, whose output is a pipe either way: a bar when the laptop shows it on a
terminal, lines when it goes to a file); without it, a terminal gets the bar. No dependencies.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, TextIO

PROGRESS_ENV = "LLMBOX_PROGRESS"  # "bar" or "lines"


def progress_as_lines(stream: Optional[TextIO], terminal: Optional[bool] = None) -> bool:
    """Whether progress on ``stream`` must be plain lines: PROGRESS_ENV when set, else off a terminal
    (``terminal``: what a rich Console decided, which honours its own overrides)."""
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if mode in ("bar", "lines"):
        return mode == "lines"
    if terminal is not None:
        return not terminal
    try:
        return stream is None or not stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return True


def human_count(n: float, unit: str = "") -> str:
    """1234567 tokens -> "1.2M tok"; bytes as "1.2 MB"; counts under 1000 as they are."""
    suffix = ""
    for suffix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000 or suffix == "T":
            break
        n /= 1000
    number = f"{n:.0f}" if not suffix else f"{n:.1f}"
    if unit == "B":
        return f"{number} {suffix.upper()}B"
    return f"{number}{suffix} {unit}".rstrip()


class TenthLines:
    """A progress counter that writes one line each time the work passes another tenth."""

    def __init__(self, description: str, total: Optional[float], write: Callable[[str], None], unit: str = "", initial: float = 0):
        self.description, self.total, self.write, self.unit = description, total, write, unit
        self.done = float(initial)
        self.shown = -1 if not initial or not total else int(10 * self.done / total)  # a resumed bar starts at its tenth

    def update(self, n: float = 1) -> None:
        self.set(self.done + n)

    def set(self, done: float, description: Optional[str] = None) -> None:
        if description is not None and description != self.description:
            self.description, self.shown = description, -1
        self.done = float(done)
        if not self.total:
            return
        tenth = min(10, int(10 * self.done / self.total))
        if tenth > self.shown and tenth > 0:
            self.shown = tenth
            counts = "" if self.unit == "%" else f" ({human_count(self.done, self.unit)} of {human_count(self.total, self.unit)})"
            self.write(f"{self.description}: {10 * tenth}%{counts}")
