"""``SSHBox``: any SSH host. paramiko for commands and files, rsync over ssh for the project.

- Commands: one paramiko connection, one exec channel per command. Each command reports its
  process id first, so Ctrl-C (or closing a stream) stops it on the box too.
- Host keys: trust on first use in .launcher/known_hosts (known_hosts.py); the system ssh
  and rsync then verify against that file (ssh_commands.py builds their command lines).
- Sync: rsync over ssh when both ends have rsync (only changed files travel; .gitignore,
  .launcherignore and fixed excludes apply), else an SFTP fallback that uploads files whose
  size or mtime differ.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shlex
import shutil
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional, Sequence

import paramiko

from launcher.box.base import Box, BoxError, BoxUnreachable, ConnectionLost, ProgressFn, RunResult, SyncStats, command_failed
from launcher.project_files import LAUNCHERIGNORE, local_files, read_launcherignore
from launcher.box.known_hosts import HostKeyChangedError, TrustOnFirstUsePolicy
from launcher.box.ssh_commands import SSHEndpoint, in_dir, proxy_command, rsync_argv, ssh_argv

# paramiko logs dropped sockets itself ("Socket exception: ..."); the launcher reports them
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_WORKDIR = "~/llm-box"
_PID_PREFIX = "__llmbox_pid__="
UP_HINT = "`launcher up` to check"


def default_identity() -> Optional[str]:
    """box.identity_file unset: ~/.ssh/id_ed25519 when present, else the ssh agent (None)."""
    candidate = Path("~/.ssh/id_ed25519").expanduser()
    return str(candidate) if candidate.is_file() else None


class SSHBox(Box):
    kind = "ssh"

    def __init__(self, endpoint: SSHEndpoint, workdir: Optional[str] = None, base_python: str = "python3",
                 use_rsync: Optional[bool] = None):
        if endpoint.identity_file is None and default_identity():
            endpoint = SSHEndpoint(**{**endpoint.__dict__, "identity_file": default_identity()})
        self.ep = endpoint
        self.workdir = workdir or DEFAULT_WORKDIR
        self.base_python = base_python
        self.python = ".venv/bin/python"  # relative: every command runs in the workdir
        self.use_rsync = use_rsync
        self.last_exit_code = None
        self._client: Optional[paramiko.SSHClient] = None
        self._home: Optional[str] = None

    # ---- connection -----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.ep.label

    def _unreachable(self, reason: str, remedy: str = "", not_yet: bool = False) -> BoxUnreachable:
        remedy = remedy or f"is the box running? {UP_HINT}"
        err = BoxUnreachable(f"could not connect to {self.ep.host}:{self.ep.port} as {self.ep.user}: {reason} - {remedy}")
        err.not_yet = not_yet  # type: ignore[attr-defined]  # sshd still starting: worth another try
        return err

    def wait_until_reachable(self, timeout_s: float, sleep=time.sleep, clock=time.monotonic) -> None:
        """Connect, retrying refused/reset/banner errors with backoff until ``timeout_s``.

        A freshly published port often answers before the box's sshd does (refused, reset, or
        closed before the SSH banner); anything else (a refused key, an unknown host) fails at once.
        """
        deadline, delay = clock() + timeout_s, 1.0
        while True:
            try:
                self.connect()
                return
            except BoxUnreachable as exc:
                left = deadline - clock()
                if not getattr(exc, "not_yet", False) or left <= 0:
                    raise
            sleep(min(delay, left))
            delay = min(delay * 2, 15.0)

    def connect(self) -> paramiko.SSHClient:
        if self._client is not None and self._client.get_transport() is not None and self._client.get_transport().is_active():
            return self._client
        self.close()
        client = paramiko.SSHClient()
        # no keys are loaded into the client: the policy is asked about every key and checks
        # (or records, on first use) the project's known_hosts file
        client.set_missing_host_key_policy(TrustOnFirstUsePolicy(Path(self.ep.known_hosts), self.ep.port))
        kwargs: dict = dict(
            hostname=self.ep.host, port=self.ep.port, username=self.ep.user, timeout=self.ep.connect_timeout,
            banner_timeout=self.ep.connect_timeout, auth_timeout=self.ep.connect_timeout, allow_agent=True,
        )
        if self.ep.identity_file:
            key_path = Path(self.ep.identity_file).expanduser()
            if not key_path.is_file():
                raise BoxUnreachable(
                    f"could not connect to {self.ep.host}:{self.ep.port} as {self.ep.user}: the identity file "
                    f"{key_path} does not exist - set box.identity_file to your private key (or create one with "
                    f"`ssh-keygen -t ed25519`)."
                )
            kwargs.update(key_filename=str(key_path), look_for_keys=False)
        proxy = proxy_command(self.ep)
        if proxy:
            kwargs["sock"] = paramiko.ProxyCommand(proxy)
        try:
            client.connect(**kwargs)
        except HostKeyChangedError:
            raise
        except paramiko.AuthenticationException:
            key = self.ep.identity_file or "the ssh agent's keys"
            raise self._unreachable(
                f"the box refused the key ({key})",
                f"is {key}.pub in ~{self.ep.user}/.ssh/authorized_keys on the box, and is box.user right? "
                f"Set box.identity_file to the right key, then {UP_HINT}",
            ) from None
        except paramiko.SSHException as exc:
            if "private key" in str(exc).lower() or "not a valid" in str(exc).lower() or "encrypted" in str(exc).lower():
                raise self._unreachable(
                    f"the identity file {self.ep.identity_file} is not a usable private key ({exc})",
                    "set box.identity_file to an unencrypted private key or load it into ssh-agent",
                ) from None
            raise self._unreachable(f"SSH error: {exc}", not_yet="banner" in str(exc).lower()) from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            raise self._unreachable("connection refused", not_yet=True) from None
        except (ConnectionRefusedError, ConnectionResetError, EOFError) as exc:
            raise self._unreachable("connection refused" if isinstance(exc, ConnectionRefusedError) else
                                    "connection reset before the SSH handshake", not_yet=True) from None
        except socket.gaierror as exc:
            raise self._unreachable(f"host name not found ({exc.strerror})", "check box.host in the config") from None
        except (socket.timeout, TimeoutError):
            raise self._unreachable(f"timed out after {self.ep.connect_timeout:.0f} s",
                                    f"is the box running and port {self.ep.port} open? {UP_HINT}") from None
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc)) from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(10)
        self._client = client
        return client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a dead connection must not raise
                pass
        self._client = None

    @property
    def home(self) -> str:
        if self._home is None:
            self._home = self.run("printf %s \"$HOME\"", cwd=False, timeout=30).stdout.strip()
        return self._home

    def abs_path(self, path: str) -> str:
        """``~/x`` -> $HOME/x; relative -> workdir/x; absolute stays."""
        if path == "~":
            return self.home
        if path.startswith("~/"):
            return f"{self.home}/{path[2:]}"
        if path.startswith("/"):
            return path
        return f"{self.abs_path(self.workdir)}/{path}"

    # ---- commands -------------------------------------------------------------------------
    def _open(self, cmd: str, cwd: bool) -> paramiko.Channel:
        full = in_dir(self.workdir, cmd) if cwd else cmd
        # report the shell's pid first (sshd makes it a process-group leader), then become
        # the command: Ctrl-C can then stop the whole group on the box
        wrapped = f"echo {_PID_PREFIX}$$; exec bash -c {shlex.quote(full)}"
        transport = self.connect().get_transport()
        try:
            chan = transport.open_session(timeout=self.ep.connect_timeout)
            chan.exec_command(wrapped)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            raise ConnectionLost(f"the connection to {self.label} dropped while starting `{cmd}` ({exc}); run the command again.") from None
        return chan

    def _kill_remote(self, pid: Optional[int]) -> None:
        if not pid:
            return
        try:
            self.run(f"kill -TERM -- -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null; true", check=False, timeout=15, cwd=False)
        except Exception:  # best effort: the box may be gone
            pass

    def run(self, cmd: str, check: bool = True, timeout: Optional[float] = None, cwd: bool = True) -> RunResult:
        chan = self._open(cmd, cwd)
        out, err = bytearray(), bytearray()
        pid: Optional[int] = None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                    if pid is None:
                        pid, out = _take_pid(out)
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.exit_status_ready():
                    raise ConnectionLost(f"the connection to {self.label} dropped while running `{cmd}`; "
                                         f"it may or may not have finished on the box. {UP_HINT}, then run again.")
                transport = chan.get_transport()
                if transport is None or not transport.is_active():
                    raise ConnectionLost(f"the connection to {self.label} dropped while running `{cmd}`; "
                                         f"it may or may not have finished on the box. {UP_HINT}, then run again.")
                if deadline is not None and time.monotonic() > deadline:
                    self._kill_remote(pid)
                    raise BoxError(f"on {self.label}, `{cmd}` did not finish within {timeout:.0f} s and was stopped; "
                                   f"run it by hand (`launcher ssh -- CMD`) to see why it hangs.")
                select.select([chan], [], [], 0.2)
            status = chan.recv_exit_status()
            transport = chan.get_transport()
            if status == -1 and (transport is None or not transport.is_active()):  # closed with the connection, no status
                raise ConnectionLost(f"the connection to {self.label} dropped while running `{cmd}`; "
                                     f"it may or may not have finished on the box. {UP_HINT}, then run again.")
        except KeyboardInterrupt:
            self._kill_remote(pid)
            raise
        except ConnectionLost:
            self.close()
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:  # the socket cut mid-command (paramiko raises EOFError)
            self.close()
            raise ConnectionLost(f"the connection to {self.label} dropped while running `{cmd}` ({exc or type(exc).__name__}); "
                                 f"it may or may not have finished on the box. {UP_HINT}, then run again.") from None
        finally:
            chan.close()
        if pid is None:
            pid, out = _take_pid(out)
        result = RunResult(cmd, status, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not result.ok:
            raise command_failed(self, result)
        return result

    def stream(self, cmd: str, cwd: bool = True) -> Iterator[bytes]:
        chan = self._open(cmd, cwd)
        self.last_exit_code = None
        pid: Optional[int] = None
        buf = bytearray()
        finished = False
        try:
            while True:
                if chan.recv_ready():
                    data = chan.recv(65536)
                    if pid is None:
                        buf += data
                        pid, rest = _take_pid(buf)
                        if pid is None:
                            continue
                        data = bytes(rest)
                    if data:
                        yield data
                    continue
                if chan.recv_stderr_ready():
                    chan.recv_stderr(65536)  # discarded: stream() is for stdout
                    continue
                if chan.exit_status_ready():
                    self.last_exit_code = chan.recv_exit_status()
                    finished = True
                    return
                transport = chan.get_transport()
                # EOF on stdout comes before the exit status: only a dead transport, or a channel
                # closed without an exit status, means the connection is gone
                if transport is None or not transport.is_active() or (chan.closed and not chan.exit_status_ready()):
                    self.close()
                    raise ConnectionLost(f"the connection to {self.label} dropped while streaming `{cmd}`.")
                select.select([chan], [], [], 0.05 if chan.eof_received else 0.5)
        finally:
            chan.close()
            if not finished and self._client is not None:
                self._kill_remote(pid)  # the consumer stopped early (Ctrl-C, or enough read)

    # ---- files ----------------------------------------------------------------------------
    def _sftp(self) -> paramiko.SFTPClient:
        return self.connect().open_sftp()

    def put_text(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.abs_path(path)
        parent = os.path.dirname(target)
        self.run(f"mkdir -p {shlex.quote(parent)}", cwd=False, timeout=30)
        tmp = f"{parent}/.{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp"
        sftp = self._sftp()
        try:
            with sftp.open(tmp, "w") as f:
                f.chmod(mode)  # before any byte is written: a secret is never readable by others
                f.write(text.encode("utf-8"))
            sftp.posix_rename(tmp, target)
        except BaseException:
            try:
                sftp.remove(tmp)
            except Exception:
                pass
            raise
        finally:
            sftp.close()

    def get_file(self, path: str) -> Optional[bytes]:
        try:
            sftp = self._sftp()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            raise ConnectionLost(f"the connection to {self.label} dropped while reading {path} ({exc or type(exc).__name__}). "
                                 f"{UP_HINT}, then run again.") from None
        try:
            with sftp.open(self.abs_path(path), "r") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == 2:
                return None
            if getattr(exc, "errno", None) is not None:  # the box answered: permission denied, a folder, ...
                raise BoxError(f"cannot read {path} on {self.label}: {exc}") from None
            self.close()  # no errno: the socket went away under SFTP
            raise ConnectionLost(f"the connection to {self.label} dropped while reading {path} ({exc}). "
                                 f"{UP_HINT}, then run again.") from None
        except (paramiko.SSHException, EOFError) as exc:
            self.close()
            raise ConnectionLost(f"the connection to {self.label} dropped while reading {path} ({exc or type(exc).__name__}). "
                                 f"{UP_HINT}, then run again.") from None
        finally:
            with contextlib.suppress(Exception):  # closing a dead channel must not hide what happened
                sftp.close()

    def remote_has(self, tool: str) -> bool:
        return self.run(f"command -v {shlex.quote(tool)} >/dev/null 2>&1", check=False, cwd=False, timeout=30).ok

    def sync(self, local_dir: Path, excludes: Sequence[str] = (), progress: Optional[ProgressFn] = None,
             dry_run: bool = False) -> SyncStats:
        local_dir = Path(local_dir).resolve()
        use_rsync = self.use_rsync
        if use_rsync is None:
            use_rsync = shutil.which("rsync") is not None and self.remote_has("rsync")
        workdir = self.abs_path(self.workdir)
        if not dry_run:
            self.run(f"mkdir -p {shlex.quote(workdir)}", cwd=False, timeout=30)
        if use_rsync:
            return self._sync_rsync(local_dir, workdir, excludes, progress, dry_run)
        return self._sync_sftp(local_dir, workdir, excludes, progress, dry_run)

    def rsync_command(self, local_dir: Path, excludes: Sequence[str] = (), dry_run: bool = False,
                      describe: bool = False) -> list[str]:
        """The rsync command line; ``describe``: for --dry-run output (no connection to resolve ~)."""
        ignore = Path(local_dir) / LAUNCHERIGNORE
        dest = self.workdir if describe else self.abs_path(self.workdir)
        return rsync_argv(self.ep, str(local_dir), dest, excludes=excludes,
                          exclude_from=[str(ignore)] if ignore.is_file() else [], dry_run=dry_run)

    def _sync_rsync(self, local_dir: Path, workdir: str, excludes, progress, dry_run) -> SyncStats:
        self.connect()  # records the host key on first use, before ssh verifies it strictly
        argv = self.rsync_command(local_dir, excludes, dry_run)
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        out = bytearray()
        assert proc.stdout is not None
        try:
            pending = b""
            while True:
                chunk = os.read(proc.stdout.fileno(), 8192)
                if not chunk:
                    break
                out += chunk
                pending += chunk
                parts = re.split(rb"[\r\n]", pending)
                pending = parts.pop()
                for part in parts:
                    match = re.search(rb"\s(\d+)%\s", part)
                    if match and progress:
                        progress(int(match.group(1)) / 100.0, "rsync")
            err = proc.stderr.read() if proc.stderr else b""
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        text = out.decode(errors="replace")
        if code != 0:
            stderr = err.decode(errors="replace").strip()
            if "Host key verification failed" in stderr:
                raise BoxUnreachable(f"rsync to {self.label} refused the box's host key (not the one in {self.ep.known_hosts}); "
                                     f"if the box was really replaced remove its line from that file, then `launcher up`.")
            raise BoxError(f"syncing the project to {self.label}:{workdir} failed: `{shlex.join(argv[:8])} ...` exited "
                           f"{code}: {stderr[-1000:]} - check the box's disk space and that rsync works there "
                           f"(`launcher ssh -- rsync --version`).")
        stats = SyncStats(method="rsync", seconds=time.monotonic() - start)
        stats.bytes_sent = _stat_int(text, r"Total bytes sent:\s*([\d,.]+)")
        stats.files = _stat_int(text, r"Number of regular files transferred:\s*([\d,.]+)")
        stats.total_files = _stat_int(text, r"Number of files:.*?reg:\s*([\d,.]+)")
        stats.total_bytes = _stat_int(text, r"Total file size:\s*([\d,.]+)")
        if progress:
            progress(1.0, "rsync done")
        return stats

    def _sync_sftp(self, local_dir: Path, workdir: str, excludes, progress, dry_run) -> SyncStats:
        start = time.monotonic()
        files = local_files(local_dir, [*read_launcherignore(local_dir), *excludes])
        listing = self.run("find . -type f -printf '%P\\t%s\\t%T@\\n' 2>/dev/null; true", timeout=120).stdout
        remote: dict[str, tuple[int, int]] = {}
        for line in listing.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                remote[parts[0]] = (int(parts[1]), int(float(parts[2])))
        stats = SyncStats(method="sftp", total_files=len(files))
        todo = []
        for rel in files:
            st = (local_dir / rel).stat()
            stats.total_bytes += st.st_size
            if remote.get(rel) != (st.st_size, int(st.st_mtime)):
                todo.append((rel, st))
        if dry_run:
            stats.files = len(todo)
            return stats
        sftp = self._sftp()
        made: set[str] = set()
        try:
            for i, (rel, st) in enumerate(todo):
                target = f"{workdir}/{rel}"
                parent = os.path.dirname(target)
                if parent not in made:
                    self.run(f"mkdir -p {shlex.quote(parent)}", cwd=False, timeout=30)
                    made.add(parent)
                sftp.put(str(local_dir / rel), target)
                sftp.chmod(target, stat.S_IMODE(st.st_mode))
                sftp.utime(target, (st.st_atime, st.st_mtime))
                stats.bytes_sent += st.st_size
                stats.files += 1
                if progress:
                    progress((i + 1) / len(todo), rel)
        finally:
            sftp.close()
        stats.seconds = time.monotonic() - start
        if progress:
            progress(1.0, "sftp done")
        return stats

    # ---- descriptions ---------------------------------------------------------------------
    def describe_command(self, cmd: str, cwd: bool = True) -> str:
        return shlex.join(ssh_argv(self.ep, in_dir(self.workdir, cmd) if cwd else cmd))

    def interactive(self, cmd: Optional[str] = None) -> int:
        self.connect()  # record / verify the host key before the system ssh checks it strictly
        remote = in_dir(self.workdir, cmd if cmd is not None else 'exec "${SHELL:-bash}" -l')
        import sys

        return subprocess.call(ssh_argv(self.ep, remote, tty=cmd is None or sys.stdin.isatty()))


def _take_pid(buf: bytearray):
    """Split the ``__llmbox_pid__=N`` first line off ``buf``: (pid, rest), or (None, buf) until
    the whole line has arrived."""
    nl = buf.find(b"\n")
    if nl < 0:
        return None, buf
    line = bytes(buf[:nl])
    if not line.startswith(_PID_PREFIX.encode()):
        return 0, buf  # no marker (should not happen): keep the output as it is
    try:
        pid = int(line[len(_PID_PREFIX):])
    except ValueError:
        pid = 0
    return pid, bytearray(buf[nl + 1:])


def _stat_int(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    if not match:
        return 0
    return int(re.sub(r"[,.]", "", match.group(1)) or 0)
