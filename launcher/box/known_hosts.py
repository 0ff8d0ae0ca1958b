"""Host keys: trust on first use, recorded in the project's own known_hosts file, then verified.

The file is ``.launcher/known_hosts`` in the project, in OpenSSH's format, so the system
``ssh`` and ``rsync`` (which run with ``StrictHostKeyChecking=yes`` against it) agree with
paramiko. A key that differs from the recorded one is refused: the message names the host and
the line to remove if the box was really replaced (a rented box at a recycled address).
"""
from __future__ import annotations

import threading
from pathlib import Path

import paramiko

from runcontract.atomic import atomic_write_text
from runcontract.errors import UserError

KNOWN_HOSTS_NAME = "known_hosts"
_lock = threading.Lock()


class HostKeyChangedError(UserError):
    """The box presented a different key than the one recorded for it."""


def host_entry_name(host: str, port: int) -> str:
    """The name OpenSSH files a host under: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_path(project_root: Path) -> Path:
    return Path(project_root) / ".launcher" / KNOWN_HOSTS_NAME


def _load(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if path.is_file():
        keys.load(str(path))
    return keys


def record(path: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Add ``key`` for host:port to ``path`` (atomic rewrite; other entries kept)."""
    with _lock:
        keys = _load(path)
        keys.add(host_entry_name(host, port), key.get_name(), key)
        lines = []
        for entry in keys._entries:  # HostKeys has no public iterator over entries
            line = entry.to_line()
            if line:
                lines.append(line)
        atomic_write_text(path, "".join(lines), mode=0o600)


def lookup(path: Path, host: str, port: int) -> dict[str, paramiko.PKey]:
    """The recorded keys for host:port, by key type (empty when unknown)."""
    keys = _load(path)
    found = keys.lookup(host_entry_name(host, port))
    return dict(found) if found else {}


def check_or_record(path: Path, host: str, port: int, key: paramiko.PKey) -> bool:
    """Verify ``key`` against the file; record it when the host is new. True when recorded now.

    Raises ``HostKeyChangedError`` when the host has a recorded key of any type and the offered
    key is not it.
    """
    recorded = lookup(path, host, port)
    if not recorded:
        record(path, host, port, key)
        return True
    same_type = recorded.get(key.get_name())
    if same_type is not None and same_type.asbytes() == key.asbytes():
        return False
    name = host_entry_name(host, port)
    raise HostKeyChangedError(
        f"the host key of {host}:{port} has CHANGED since it was first recorded in {path} "
        f"(recorded {', '.join(recorded)}, now offered {key.get_name()} "
        f"{key.fingerprint if hasattr(key, 'fingerprint') else ''}). This can mean someone is "
        f"intercepting the connection, so the launcher refuses to connect. If the box was really "
        f"replaced (a new rented machine at the same address), remove the line starting with "
        f"'{name}' from {path} and run `launcher up` again."
    )


class TrustOnFirstUsePolicy(paramiko.MissingHostKeyPolicy):
    """paramiko policy: record an unknown host's key in the project's known_hosts file."""

    def __init__(self, path: Path, port: int):
        self.path = Path(path)
        self.port = port

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        # paramiko passes "[host]:port" for non-22 ports; check_or_record wants the bare host
        host = hostname
        if host.startswith("[") and "]:" in host:
            host = host[1:].split("]:", 1)[0]
        check_or_record(self.path, host, self.port, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
