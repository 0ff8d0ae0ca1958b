"""The progress bar of the long stages (sync, bootstrap): drawn on a terminal, lines off one."""
from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from runcontract.progress import TenthLines, progress_as_lines


class progress_bar:
    """A rich progress bar (0..100) for sync and bootstrap; transient, so the log stays tidy.
    Off a terminal (a file, a CI log), a plain line per step of the work or per 10% instead."""

    def __init__(self, console: Console, description: str):
        self.console = console
        self.description = description
        self.progress = None
        if not progress_as_lines(console.file, console.is_terminal):
            self.progress = Progress(TextColumn("      {task.description}"), BarColumn(), TaskProgressColumn(),
                                     TimeElapsedColumn(), console=console, transient=True)

    def __enter__(self):
        if self.progress is None:
            return _LineProgress(self.console, self.description), 0
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=100)
        return self.progress, self.task

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()


class _LineProgress:
    """progress_bar's stand-in off a terminal: the same ``update`` calls, a line about every tenth
    (runcontract/progress.py)."""

    def __init__(self, console: Console, description: str):
        self.lines = TenthLines(description, 100, lambda line: console.print(f"      {line}", markup=False, highlight=False), unit="%")

    def update(self, task, completed: Optional[float] = None, description: Optional[str] = None) -> None:
        self.lines.set(completed if completed is not None else self.lines.done, description)
