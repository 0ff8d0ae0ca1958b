"""Which box: the spec recorded in state (from the config, or from a rented instance), and the
``Box`` for it. The one module that knows both kinds; neither kind imports it back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher.box.base import Box
from launcher.box.known_hosts import known_hosts_path
from launcher.box.local import LocalBox
from launcher.box.ssh import SSHBox
from launcher.box.ssh_commands import SSHEndpoint
from runcontract.errors import UserError


def box_spec(config, project_root: Path, instance: Optional[dict] = None) -> dict:
    """The resolved connection recorded in state: kind, host, port, user, identity_file, ..."""
    b = config.box
    if b.kind == "local":
        return {"kind": "local", "workdir": str(Path(project_root).resolve()), "python": None}
    if b.kind == "ssh":
        host, port, user = b.host, b.port, b.user
    else:
        if not instance or not instance.get("ssh_host"):
            raise UserError(
                f"no {b.kind} box is recorded for this project (or it has no SSH address yet); "
                "run `launcher up` to rent one."
            )
        host, port, user = instance["ssh_host"], int(instance.get("ssh_port") or 22), instance.get("ssh_user") or "root"
    return {
        "kind": b.kind, "host": host, "port": port, "user": user, "identity_file": b.identity_file,
        "jump_host": b.jump_host, "workdir": b.workdir or "~/llm-box", "python": b.python,
        "connect_timeout": b.connect_timeout,
    }


def open_box(spec: dict, project_root: Path) -> Box:
    """A ``Box`` for a spec from ``box_spec`` (not connected yet: the first command connects)."""
    if spec["kind"] == "local":
        return LocalBox(Path(project_root), python=spec.get("python"))
    ep = SSHEndpoint(
        host=spec["host"], port=int(spec.get("port") or 22), user=spec["user"], identity_file=spec.get("identity_file"),
        jump_host=spec.get("jump_host"), connect_timeout=float(spec.get("connect_timeout") or 15.0),
        known_hosts=str(known_hosts_path(Path(project_root))),
    )
    box = SSHBox(ep, workdir=spec.get("workdir"), base_python=spec.get("python") or "python3")
    box.kind = spec["kind"]
    return box
