"""A real OpenSSH server on 127.0.0.1, logged into by key as a non-root user."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.procs import free_port, run, stop, wait_for_port

TEST_USER = "llmbox"


@dataclass
class SSHTarget:
    host: str
    port: int
    user: str
    identity_file: Path  # the client's private key (the "laptop's" key)
    home: Path           # the user's home on the "box"
    known_hosts: Path    # a known_hosts line for the server's host key, for tests that pre-trust it
    host_key_pub: Path

    def ssh_argv(self, *command: str) -> list[str]:
        """A plain ssh client command line, for tests that check the server directly."""
        return [
            "ssh", "-p", str(self.port), "-i", str(self.identity_file),
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", f"{self.user}@{self.host}", *command,
        ]


def ensure_user(name: str) -> pwd.struct_passwd:
    """Create an unprivileged login user once (needs root); unlock it for key logins."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise RuntimeError(f"user {name} does not exist and creating it needs root; run the tests as root or create it")
        run(["useradd", "-m", "-s", "/bin/bash", name])
        entry = pwd.getpwnam(name)
    if os.geteuid() == 0:
        run(["usermod", "-p", "*", name])  # a locked account ('!') is refused by sshd
    return entry


class SSHServer:
    def __init__(self, workdir: Path, user: str = TEST_USER):
        self.workdir = workdir
        self.user = user
        self.proc: subprocess.Popen | None = None
        self.port = free_port()

    def start(self) -> SSHTarget:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd):
            raise RuntimeError("sshd is not installed: apt-get install -y openssh-server (.ci/run does this)")
        entry = ensure_user(self.user)
        work = self.workdir
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o755)
        host_key = work / "host_ed25519"
        client_key = work / "client_ed25519"
        for key in (host_key, client_key):
            if not key.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llm-box-test", "-f", str(key)])
        authorized = work / f"authorized_keys_{self.user}"
        shutil.copy(client_key.with_suffix(".pub"), authorized)
        os.chown(authorized, entry.pw_uid, entry.pw_gid)
        os.chmod(authorized, 0o600)
        known_hosts = work / "known_hosts"
        host_pub = host_key.with_suffix(".pub").read_text().split()
        known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        config = work / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {work / 'sshd.pid'}",
                    f"AuthorizedKeysFile {work}/authorized_keys_%u",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "MaxStartups 50:30:100",
                    "MaxSessions 50",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        log = work / "sshd.log"
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, 10, "sshd", str(log))
        return SSHTarget(
            host="127.0.0.1", port=self.port, user=self.user, identity_file=client_key,
            home=Path(entry.pw_dir), known_hosts=known_hosts, host_key_pub=host_key.with_suffix(".pub"),
        )

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


def session_processes(sshd: SSHTarget) -> list[int]:
    """PIDs of the sshd processes serving the test user's connections under THIS test's sshd."""
    server_pid = int((sshd.identity_file.parent / "sshd.pid").read_text().split()[0])
    uid = pwd.getpwnam(sshd.user).pw_uid
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        ppid = int(fields["PPid"].strip())
        proc_uid = int(fields["Uid"].split()[0])
        children.setdefault(ppid, []).append(int(entry))
        info[int(entry)] = (proc_uid, cmd)
    found, todo = [], list(children.get(server_pid, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        proc_uid, cmd = info.get(pid, (None, ""))
        if proc_uid == uid and cmd.startswith("sshd:"):
            found.append(pid)
    return found
