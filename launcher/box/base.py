"""``Box``: where the launcher's commands run. One small interface, two kinds.

- ``LocalBox`` (local.py): this machine; the project folder itself is the box's workdir.
- ``SSHBox`` (ssh.py): any SSH host (a rented GPU box is one); the project is synced to
  its workdir (``~/llm-box`` by default).

Every command is a POSIX shell string run with the box's workdir as the current folder, so
``python -m trainer.X`` finds the synced packages. Errors a user can act on are
``BoxError``s (a ``UserError``): they name the host, the command and the remedy. Which box a
config or a recorded instance means is factory.py's (``box_spec``, ``open_box``).
"""
from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from runcontract.errors import UserError



class BoxError(UserError):
    """A command on the box failed, or the box could not be reached."""


class BoxUnreachable(BoxError):
    """No connection to the box (refused, timed out, bad key, unknown host)."""


class ConnectionLost(BoxError):
    """An established connection dropped while a command was running or streaming."""


@dataclass
class RunResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class SyncStats:
    bytes_sent: int = 0  # bytes that went over the wire (rsync's "Total bytes sent")
    files: int = 0  # regular files transferred
    total_files: int = 0  # regular files in the synced tree
    total_bytes: int = 0  # size of the synced tree
    method: str = "none"  # rsync, sftp or none (local box)
    seconds: float = 0.0


@dataclass
class BoxInfo:
    """What ``launcher up`` reports about a box."""

    os: str = "?"
    kernel: str = "?"
    disk_free_gb: float = 0.0
    python: str = "?"
    gpus: list[dict] = field(default_factory=list)  # {name, memory, driver}
    tools: dict[str, bool] = field(default_factory=dict)  # tmux, screen, rsync, uv


ProgressFn = Callable[[float, str], None]  # (fraction 0..1, message)


class Box(abc.ABC):
    kind: str = "?"
    workdir: str  # the project folder on the box
    python: str  # the python that runs trainer commands (the box's venv)
    base_python: str  # the python the venv is created from

    # ---- commands -------------------------------------------------------------------------
    @abc.abstractmethod
    def run(self, cmd: str, check: bool = True, timeout: Optional[float] = None, cwd: bool = True) -> RunResult:
        """Run ``cmd`` (a shell string) in the workdir; raise ``BoxError`` on failure if ``check``.

        Ctrl-C while it runs stops the command on the box too (its whole process group).
        """

    @abc.abstractmethod
    def stream(self, cmd: str, cwd: bool = True) -> Iterator[bytes]:
        """Yield ``cmd``'s stdout as it comes. Raises ``ConnectionLost`` when the connection
        drops; ends normally when the command exits (check ``last_exit_code``)."""

    last_exit_code: Optional[int] = None

    # ---- files ----------------------------------------------------------------------------
    @abc.abstractmethod
    def sync(self, local_dir: Path, excludes: Sequence[str] = (), progress: Optional[ProgressFn] = None,
             dry_run: bool = False) -> SyncStats:
        """Make the workdir a copy of ``local_dir`` (only changed files travel)."""

    @abc.abstractmethod
    def put_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write ``text`` to ``path`` (relative to the workdir, or ``~/...``) atomically."""

    @abc.abstractmethod
    def get_file(self, path: str) -> Optional[bytes]:
        """The content of ``path`` (relative to the workdir, or ``~/...``), None when missing."""

    # ---- descriptions ---------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def label(self) -> str:
        """How messages name the box: ``llmbox@1.2.3.4:22`` or ``this machine``."""

    @abc.abstractmethod
    def describe_command(self, cmd: str, cwd: bool = True) -> str:
        """The command line a user could type to do what ``run(cmd)`` does (for --dry-run)."""

    @abc.abstractmethod
    def interactive(self, cmd: Optional[str] = None) -> int:
        """An interactive shell on the box (or ``cmd`` with a terminal); returns its exit code."""

    def info(self) -> BoxInfo:
        """OS, disk, Python, GPUs and tools of the box, in one round trip."""
        script = (
            'echo "kernel=$(uname -srm)"; '
            '(. /etc/os-release 2>/dev/null && echo "os=$PRETTY_NAME") || echo "os=$(uname -s)"; '
            f'echo "disk=$(df -Pk {_shq_parent(self.workdir)} 2>/dev/null | tail -1 | tr -s " " | cut -d" " -f4)"; '
            f'echo "python=$({self.base_python} -c "import sys; print(sys.version.split()[0])" 2>/dev/null)"; '
            "for t in tmux screen rsync uv nvidia-smi; do command -v $t >/dev/null 2>&1 && echo tool=$t; done; "
            "command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version "
            "--format=csv,noheader 2>/dev/null | sed 's/^/gpu=/'; true"
        )
        result = self.run(script, check=False, timeout=60, cwd=False)
        info = BoxInfo()
        for line in result.stdout.splitlines():
            key, _, value = line.partition("=")
            value = value.strip()
            if key == "kernel":
                info.kernel = value
            elif key == "os":
                info.os = value
            elif key == "disk" and value.isdigit():
                info.disk_free_gb = int(value) / 1024 / 1024
            elif key == "python":
                info.python = value or "missing"
            elif key == "tool":
                info.tools[value] = True
            elif key == "gpu":
                parts = [p.strip() for p in value.split(",")]
                if len(parts) == 3:
                    info.gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
        for tool in ("tmux", "screen", "rsync", "uv", "nvidia-smi"):
            info.tools.setdefault(tool, False)
        return info

    def close(self) -> None:
        """Drop any open connection (the box keeps running)."""

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shq_parent(workdir: str) -> str:
    """The nearest existing folder to ask ``df`` about: the workdir's parent, or $HOME."""
    from launcher.box.ssh_commands import remote_path

    parent = os.path.dirname(workdir.rstrip("/")) or "~"
    return remote_path(parent)


def command_failed(box: Box, result: RunResult, remedy: str = "") -> BoxError:
    """A ``BoxError`` for a failed command: host, command, exit code, last output, remedy."""
    tail = (result.stderr.strip() or result.stdout.strip())[-1500:]
    message = f"on {box.label}, `{_short(result.command)}` exited with code {result.exit_code}"
    if tail:
        message += f"; its last output:\n{tail}\n"
    else:
        message += ". "
    message += remedy or "Fix the cause above and run the launcher command again."
    return BoxError(message)


def _short(cmd: str, limit: int = 300) -> str:
    cmd = " ".join(cmd.split())
    return cmd if len(cmd) <= limit else cmd[: limit - 3] + "..."
