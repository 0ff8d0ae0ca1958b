"""Follow a log file on the box across dropped connections, never losing or repeating a line.

The follower remembers the byte offset of the end of the last COMPLETE line it printed. The box
streams from that offset (``tail -c +OFFSET -F``); bytes after the last newline wait in a buffer
until their line is complete. When the connection drops, the partial buffer is thrown away and
a new connection resumes at the offset, so the partial line is sent again, whole, and every
complete line is printed exactly once.
"""
from __future__ import annotations

import shlex
import time
from typing import Callable, Optional

from launcher.box.base import Box, BoxUnreachable, ConnectionLost
from launcher.box.known_hosts import HostKeyChangedError


def start_offset_command(path: str, lines: int) -> str:
    """Prints the byte offset where the last ``lines`` lines (of what exists now) begin."""
    q = shlex.quote(path)
    return (
        f'if [ -f {q} ]; then s=$(stat -c %s {q}); t=$(head -c "$s" {q} | tail -n {int(lines)} | wc -c); '
        f'echo $((s - t)); else echo 0; fi'
    )


def follow_command(path: str, offset: int) -> str:
    """Stream ``path`` from byte ``offset`` (0-based) on, waiting for it to appear or grow."""
    # tail -c +N is 1-based; -F keeps following across the file being created or replaced
    return f"exec tail -c +{int(offset) + 1} -F {shlex.quote(path)} 2>/dev/null"


class LogFollower:
    """Stream ``path`` from ``offset`` to ``write``; reconnect (with backoff) on a dropped link.

    ``connect`` returns a connected-or-connectable ``Box`` (a fresh one after a drop).
    ``notice`` gets one-line messages about the connection (the CLI prints them to stderr).
    ``should_stop`` is asked after each batch of lines.
    """

    def __init__(
        self,
        connect: Callable[[], Box],
        path: str,
        write: Callable[[str], None],
        notice: Callable[[str], None] = lambda message: None,
        should_stop: Callable[[], bool] = lambda: False,
        max_backoff: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.connect = connect
        self.path = path
        self.write = write
        self.notice = notice
        self.should_stop = should_stop
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.offset = 0
        self.reconnects = 0
        self._box: Optional[Box] = None

    def _get_box(self) -> Box:
        if self._box is None:
            self._box = self.connect()
        return self._box

    def _drop_box(self) -> None:
        if self._box is not None:
            self._box.close()
        self._box = None

    def start_at_last(self, lines: int) -> int:
        """Begin with the last ``lines`` lines of what the file holds now."""
        out = self._get_box().run(start_offset_command(self.path, lines), timeout=60).stdout.strip()
        self.offset = int(out.splitlines()[-1]) if out else 0
        return self.offset

    def follow(self) -> None:
        """Until ``should_stop()`` (or Ctrl-C, which propagates)."""
        backoff = 0.5
        while True:
            buf = b""
            stream = None
            try:
                box = self._get_box()
                stream = box.stream(follow_command(self.path, self.offset))
                for chunk in stream:
                    backoff = 0.5
                    buf += chunk
                    head, sep, rest = buf.rpartition(b"\n")
                    if not sep:
                        continue
                    complete = head + sep
                    buf = rest
                    self.offset += len(complete)
                    self.write(complete.decode("utf-8", errors="replace"))
                    if self.should_stop():
                        return
                # tail ended by itself (it should not): start it again from the offset
                reason = "the log stream ended"
            except HostKeyChangedError:
                raise
            except (ConnectionLost, BoxUnreachable) as exc:
                reason = str(exc).split(" - ")[0]
            finally:
                if stream is not None:
                    stream.close()
            self._drop_box()
            self.reconnects += 1
            self.notice(f"{reason}; reconnecting in {backoff:.1f} s (resuming at byte {self.offset}, nothing is lost)")
            self.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def close(self) -> None:
        self._drop_box()
