"""The one place that builds every ``ssh`` and ``rsync`` command line the launcher runs.

Like SkyPilot's ``command_runner.py``: each option is commented here, once, so a reader can
see exactly what the system ssh client and rsync are told. paramiko (ssh.py) is used for
commands and SFTP; the system client is used for ``launcher ssh`` (a real terminal) and as
rsync's transport. Both read the same project known_hosts file (.launcher/known_hosts), and
the system client only ever verifies: paramiko records a new key first (trust on first use).

Nothing secret goes on these command lines: no keys, no tokens, only paths and names.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

# Paths never synced to the box, whatever .gitignore says. Anchored ("/x/") ones are only at
# the project root; the box writes its own runs/, data/, tokenizer/ and .venv/ there, and
# rsync --delete never removes an excluded path on the receiver.
ALWAYS_EXCLUDED = (
    ".git/",
    "/runs/",
    "/data/",
    "/tokenizer/",
    "/.venv/",
    "/venv/",
    "/.launcher/",
    "/.llm-box/",
    "__pycache__/",
    "*.pyc",
)


@dataclass(frozen=True)
class SSHEndpoint:
    """Where and as whom to connect; everything a command line needs, no secrets."""

    host: str
    port: int = 22
    user: str = "root"
    identity_file: Optional[str] = None  # None: the ssh agent / default keys
    jump_host: Optional[str] = None  # user@host[:port]
    connect_timeout: float = 15.0
    known_hosts: Optional[str] = None  # the project's known_hosts file

    @property
    def label(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.user}@{self.host}:{self.port}"


def ssh_options(ep: SSHEndpoint, batch: bool = True) -> list[str]:
    """Options shared by every system ssh invocation (plain ssh and rsync's transport)."""
    opts: list[str] = []
    # the port the box's sshd listens on (rented boxes often use a high port)
    opts += ["-p", str(ep.port)]
    if ep.identity_file:
        # the key to log in with, and only that key: an agent full of keys can hit the
        # server's MaxAuthTries before the right one is offered
        opts += ["-i", str(Path(ep.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
    if ep.known_hosts:
        # verify the box against the project's own known_hosts (recorded on first use by
        # paramiko), never the user's ~/.ssh/known_hosts, and refuse unknown or changed keys
        opts += ["-o", f"UserKnownHostsFile={ep.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        opts += ["-o", "StrictHostKeyChecking=yes"]
    # give up on an unreachable box after this many seconds instead of the TCP default (minutes)
    opts += ["-o", f"ConnectTimeout={max(1, int(round(ep.connect_timeout)))}"]
    # notice a dead connection within ~30 s (3 unanswered keepalives, 10 s apart)
    opts += ["-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
    if batch:
        # never prompt for a password or passphrase: scripts and progress bars cannot answer
        opts += ["-o", "BatchMode=yes"]
    # do not forward the laptop's agent or X11 to a rented machine
    opts += ["-o", "ForwardAgent=no", "-o", "ForwardX11=no"]
    # quiet: no banners or "Warning: Permanently added" lines mixed into command output
    opts += ["-o", "LogLevel=ERROR"]
    if ep.jump_host:
        # reach the box through a bastion (user@host[:port])
        opts += ["-J", ep.jump_host]
    return opts


def ssh_argv(ep: SSHEndpoint, remote_command: Optional[str] = None, tty: bool = False) -> list[str]:
    """``ssh ... user@host [remote_command]``; ``tty`` asks for a terminal (interactive shells)."""
    argv = ["ssh", *ssh_options(ep, batch=not tty)]
    if tty:
        # force a pseudo-terminal so an interactive shell (or tmux attach) behaves
        argv.append("-t")
    argv.append(f"{ep.user}@{ep.host}")
    if remote_command is not None:
        argv.append(remote_command)
    return argv


def rsync_argv(
    ep: SSHEndpoint,
    local_dir: str,
    remote_dir: str,
    excludes: Sequence[str] = (),
    exclude_from: Sequence[str] = (),
    dry_run: bool = False,
    progress: bool = True,
) -> list[str]:
    """rsync of ``local_dir``'s contents into ``remote_dir`` (absolute, existing) on the box, over ssh."""
    transport = shlex.join(["ssh", *ssh_options(ep, batch=True)])
    argv = ["rsync"]
    # archive mode (recurse, keep permissions, symlinks and mtimes: mtimes make the next
    # quick check skip unchanged files) and compress on the wire
    argv += ["-a", "-z"]
    # the box mirrors the project: files deleted here go there too (excluded paths are
    # protected, so runs/, data/, tokenizer/ and .venv/ on the box are never touched)
    argv += ["--delete"]
    # the totals ("Total bytes sent") the launcher reports and the tests assert
    argv += ["--stats"]
    if progress:
        # one overall progress line (percent of the whole transfer) for the progress bar;
        # --no-inc-recursive makes the total known up front so the percentage means something
        argv += ["--info=progress2", "--no-inc-recursive"]
    if dry_run:
        # list what would change, change nothing
        argv += ["--dry-run", "--itemize-changes"]
    # every .gitignore in the tree, applied like git does (per directory)
    argv += ["--filter=:- .gitignore"]
    for path in exclude_from:
        # the project's .launcherignore (gitignore-like patterns)
        argv += [f"--exclude-from={path}"]
    for pattern in (*ALWAYS_EXCLUDED, *excludes):
        argv += [f"--exclude={pattern}"]
    # ssh as the transport, with the same options as every other ssh command
    argv += ["-e", transport]
    # trailing slashes: copy the folder's contents, not the folder itself
    src = str(local_dir).rstrip("/") + "/"
    dest = remote_dir.rstrip("/") + "/"
    argv += [src, f"{ep.user}@{ep.host}:{dest}"]
    return argv


def remote_path(path: str) -> str:
    """Quote a path for a remote POSIX shell, keeping a leading ``~/`` expandable."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def in_dir(workdir: str, command: str) -> str:
    """``cd WORKDIR && COMMAND`` for a POSIX shell (the folder is created if missing)."""
    wd = remote_path(workdir)
    return f"mkdir -p {wd} && cd {wd} && {command}"


def proxy_command(ep: SSHEndpoint) -> Optional[str]:
    """For paramiko: the ``ProxyCommand`` that reaches the box through ``ep.jump_host``."""
    if not ep.jump_host:
        return None
    user_host, _, port = ep.jump_host.rpartition(":") if ep.jump_host.count(":") == 1 else (ep.jump_host, "", "")
    jump = SSHEndpoint(host=user_host.split("@")[-1], port=int(port) if port else 22,
                       user=user_host.split("@")[0] if "@" in user_host else ep.user,
                       identity_file=ep.identity_file, connect_timeout=ep.connect_timeout,
                       known_hosts=ep.known_hosts)
    # -W: forward stdin/stdout to the box's sshd through the bastion (no shell on the bastion)
    return shlex.join(["ssh", *ssh_options(jump), "-W", f"{ep.host}:{ep.port}", f"{jump.user}@{jump.host}"])
