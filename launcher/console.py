"""The launcher's rich consoles: live bars and wrapping on a terminal, plain lines in a file.

Redirected to a file or a CI log, rich would wrap every line at 80 columns (breaking paths and
commands in two) and a live bar would leave nothing readable. Off a terminal, ``make_console``
never wraps printed text (tables still fit a wide page) and ``is_tty`` tells progress code to
print one line per interval instead of redrawing a bar.
"""
from __future__ import annotations

import os
import sys

from rich.console import Console

WIDE = 200  # table width off a terminal: wide enough that paths in a table cell rarely wrap


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if _isatty(stream):
        return Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    width = max(WIDE, int(columns)) if columns.isdigit() else WIDE
    return Console(stderr=stderr, soft_wrap=True, width=width)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
