"""Running a trainer step on the box with its output shown as it comes (dimmed, progress bars
redrawn in place on a terminal); a failure raises with the output's last lines."""
from __future__ import annotations

import os
import re
import shlex
from typing import Optional

from launcher.box.base import RunResult, command_failed
from launcher.run.context import RunContext
from runcontract.progress import PROGRESS_ENV

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def split_progress_lines(buf: bytes) -> tuple[list[tuple[bytes, bool]], bytes]:
    """Complete pieces of ``buf`` and the unfinished rest. A piece ended by a bare carriage return
    is a progress update (True), one ended by a newline a line (False)."""
    pieces: list[tuple[bytes, bool]] = []
    start = 0
    for match in re.finditer(rb"\r\n|\n|\r(?!$)", buf):
        pieces.append((buf[start:match.start()], match.group() == b"\r"))
        start = match.end()
    return pieces, buf[start:]


def run_logged(ctx: RunContext, command: str, what: str, remedy: str = "", tee: Optional[str] = None) -> str:
    """Run a trainer step on the box, its output shown dimmed as it comes (long steps).

    Progress bars (tqdm's carriage-return updates) redraw in place on a terminal; when the output
    goes to a file (this console is not a terminal, or ``tee`` copies it to one) the box's command
    is told to write a plain line about every tenth instead (PROGRESS_ENV, runcontract/progress.py).
    ``tee``: a file on the box that also gets the output (train.log, for `launcher logs`)."""
    lines: list[str] = []
    tty = ctx.console.is_terminal
    shell = f"export {PROGRESS_ENV}={'bar' if tty and not tee else 'lines'}; {command}"
    if tee:
        shell = f"set -o pipefail; mkdir -p {shlex.quote(os.path.dirname(tee))}; ({shell}) 2>&1 | tee -a {shlex.quote(tee)}"
    stream = ctx.box.stream(f"bash -c {shlex.quote(shell)} 2>&1" if tee else f"{shell} 2>&1")
    in_place = False  # a bar is drawn on the current terminal line
    try:
        buf = b""
        for chunk in stream:
            buf += chunk
            pieces, buf = split_progress_lines(buf)
            for raw, is_update in pieces:
                line = raw.decode(errors="replace").rstrip()
                if not tty:
                    line = ANSI_ESCAPE.sub("", line)  # tqdm's cursor moves for nested bars mean nothing in a file
                if not line:
                    continue
                if is_update and tty:
                    ctx.console.file.write(f"\r      {line[:max(10, ctx.console.width - 7)]}\x1b[K")
                    ctx.console.file.flush()
                    in_place = True
                    continue
                if in_place:
                    ctx.console.file.write("\r\x1b[K")
                    in_place = False
                lines.append(line)
                ctx.console.print(f"      {line}", style="dim", markup=False, highlight=False)
        if in_place:
            ctx.console.file.write("\n")
        if buf.strip():
            lines.append(buf.decode(errors="replace"))
    finally:
        stream.close()
    code = ctx.box.last_exit_code
    if code != 0:
        raise command_failed(ctx.box, RunResult(command, -1 if code is None else code, "\n".join(lines[-30:]), ""),
                             remedy or f"{what} failed on the box; fix the cause above and run `launcher run` again "
                                       "(finished stages are skipped).")
    return "\n".join(lines)
