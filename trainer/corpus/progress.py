"""The trainer's progress bars: tqdm on a terminal, a plain line about every tenth in a file
(the rule and the line writer: runcontract/progress.py)."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, Optional, TypeVar

from runcontract.progress import TenthLines, progress_as_lines

T = TypeVar("T")


class _Lines:
    """tqdm's calls that the trainer uses (update, write, iteration, a context manager), as lines on stderr."""

    def __init__(self, total: Optional[float], desc: str, unit: str, initial: float):
        self.counter = TenthLines(desc, total, lambda line: print(line, file=sys.stderr, flush=True), unit, initial)

    def update(self, n: float = 1) -> None:
        self.counter.update(n)

    def write(self, text: str, file=None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def wrap(self, iterable: Iterable[T]) -> Iterator[T]:
        for item in iterable:
            yield item
            self.update(1)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: Optional[float], desc: str, unit: str = "it", initial: float = 0, disable: bool = False, **tqdm_kwargs):
    """A tqdm bar on a terminal; off one (a file, the launcher's pipe told to write lines), ``_Lines``."""
    if not disable and progress_as_lines(sys.stderr):
        return _Lines(total, desc, "" if unit == "it" else unit, initial)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, **tqdm_kwargs)
    bar.wrap = lambda iterable: (bar.update(1) or item for item in iterable)  # same call as _Lines.wrap (items after their update)
    return bar
