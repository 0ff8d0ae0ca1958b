"""``LocalBox``: this machine. The project folder is the workdir; nothing is synced.

Commands run under ``bash -c`` with the project folder as the current folder, in their own
process group so Ctrl-C can stop the whole command (and nothing else) and say so. Their caches
(the offline corpus, matplotlib's font list) go to .launcher/cache/ in the project: the local
box writes nothing outside the project (``cache_env``).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from launcher.box.base import Box, BoxError, ProgressFn, RunResult, SyncStats
from runcontract.atomic import atomic_write_text


LOCAL_CACHE_DIR = ".launcher/cache"


class LocalBox(Box):
    kind = "local"

    def __init__(self, project_root: Path, python: Optional[str] = None):
        self.project_root = Path(project_root).resolve()
        self.workdir = str(self.project_root)
        self.python = python or sys.executable
        self.base_python = self.python
        self.last_exit_code = None

    @property
    def label(self) -> str:
        return "this machine (local box)"

    def _env(self) -> dict:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.cache_env()}

    def cache_env(self) -> dict:
        """Cache folders inside the project (XDG_CACHE_HOME is where the trainer's corpus cache and most
        tools write; matplotlib keeps its own under MPLCONFIGDIR)."""
        cache = self.project_root / LOCAL_CACHE_DIR
        return {"XDG_CACHE_HOME": str(cache), "MPLCONFIGDIR": str(cache / "matplotlib")}

    def run(self, cmd: str, check: bool = True, timeout: Optional[float] = None, cwd: bool = True) -> RunResult:
        proc = subprocess.Popen(
            ["bash", "-c", cmd], cwd=self.workdir if cwd else None, env=self._env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise BoxError(
                f"on {self.label}, `{cmd}` did not finish within {timeout:.0f} s and was stopped; "
                "run it by hand (`launcher ssh -- CMD`) to see why it hangs."
            ) from None
        except KeyboardInterrupt:
            _kill_group(proc)
            raise
        result = RunResult(cmd, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not result.ok:
            from launcher.box.base import command_failed

            raise command_failed(self, result)
        return result

    def stream(self, cmd: str, cwd: bool = True) -> Iterator[bytes]:
        proc = subprocess.Popen(
            ["bash", "-c", cmd], cwd=self.workdir if cwd else None, env=self._env(),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.last_exit_code = None
        try:
            assert proc.stdout is not None
            while True:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                yield chunk
            self.last_exit_code = proc.wait()
        finally:
            if proc.poll() is None:
                _kill_group(proc)

    def sync(self, local_dir: Path, excludes: Sequence[str] = (), progress: Optional[ProgressFn] = None,
             dry_run: bool = False) -> SyncStats:
        # the workdir IS the project folder: nothing to copy
        if progress:
            progress(1.0, "local box: the project folder is used in place")
        return SyncStats(method="none")

    def _resolve(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else self.project_root / p

    def put_text(self, path: str, text: str, mode: int = 0o644) -> None:
        atomic_write_text(self._resolve(path), text, mode=mode)

    def get_file(self, path: str) -> Optional[bytes]:
        try:
            return self._resolve(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def describe_command(self, cmd: str, cwd: bool = True) -> str:
        return f"(cd {shlex.quote(self.workdir)} && {cmd})" if cwd else cmd

    def interactive(self, cmd: Optional[str] = None) -> int:
        argv = [os.environ.get("SHELL", "bash")] if cmd is None else ["bash", "-c", cmd]
        return subprocess.call(argv, cwd=self.workdir)


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the command's process group, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return
            time.sleep(0.05)
