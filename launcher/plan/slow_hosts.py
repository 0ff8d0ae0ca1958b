"""Hosts the plan avoids: ones whose benchmark measured far under the planned speed (canary.py).

Kept in ``.launcher/avoided_hosts.json`` (local, written atomically), apart from state.json, so
that `launcher down` clearing the state does not forget them. ``{"hosts": {"<host>": "why"}}``;
a host is Vast's ``machine_id`` or an SSH candidate's host name (RunPod chooses machines itself).
"""
from __future__ import annotations

import json
from pathlib import Path

from launcher.state import state_dir
from runcontract.atomic import atomic_write_json

AVOIDED_NAME = "avoided_hosts.json"


def avoided_path(root: Path) -> Path:
    return state_dir(root) / AVOIDED_NAME


def load_avoided(root: Path) -> dict[str, str]:
    try:
        data = json.loads(avoided_path(root).read_text())
    except (OSError, ValueError):
        return {}
    hosts = data.get("hosts") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in hosts.items()} if isinstance(hosts, dict) else {}


def avoid(root: Path, host: str, why: str) -> None:
    hosts = load_avoided(root)
    hosts[host] = why
    atomic_write_json(avoided_path(root), {"hosts": hosts})
