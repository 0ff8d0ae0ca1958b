"""The account-wide watch: every instance on every configured provider account, whose it is,
and which are orphans (``launcher status --all``, ``launcher down --orphans``).

A provider account is configured when its API key is found (the environment variable of
``box.<provider>.api_key_env``, else its mode-600 key file); the config's ``box.<provider>``
section gives its API base. An instance's owner run comes from the unique name every create
carries, ``llm-box-<run>-<6 hex>``; an instance without such a name is not the launcher's and
is listed but never touched. A launcher instance is an orphan when neither this project's
local state records it nor the spend ledger has it open for its run (nothing would ever end
it): a controller or ``up`` killed before it could record, or a box a crashed teardown left.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.config import RENTED_KINDS, LauncherConfig
from launcher.providers.base import Instance
from runcontract.errors import UserError

NAME = re.compile(r"^llm-box-(?P<run>[A-Za-z0-9][A-Za-z0-9._-]*)-[0-9a-f]{6}$")


def owner_run(name: Optional[str]) -> Optional[str]:
    """The run a launcher-named instance was rented for; None for anything else."""
    match = NAME.match(name or "")
    return match.group("run") if match else None


@dataclass
class AccountInstance:
    instance: Instance
    run: Optional[str]          # the owner run; None: not the launcher's
    orphan: bool

    def to_json(self) -> dict:
        i = self.instance
        return {"provider": i.provider, "id": i.id, "name": i.name, "state": i.raw_state or i.state,
                "hourly_price": i.hourly_price, "run": self.run, "orphan": self.orphan}


def configured_providers(config: LauncherConfig) -> tuple[dict, list[str]]:
    """({kind: provider client}, [why a provider is skipped]) for every provider whose key is found."""
    from launcher.providers.registry import rented_provider

    clients, skipped = {}, []
    for kind in RENTED_KINDS:
        cfg = getattr(config.box, kind)
        try:
            clients[kind] = rented_provider(kind, cfg)
        except UserError as exc:
            skipped.append(f"{kind}: not configured ({str(exc).splitlines()[0]})")
    return clients, skipped


def watch(config: LauncherConfig, root: Path, state: dict) -> tuple[list[AccountInstance], list[str]]:
    """Every instance on every configured account, with its owner run and whether it is an orphan."""
    from launcher.managed.spend import SpendLedger
    from launcher.store.factory import open_store

    clients, notes = configured_providers(config)
    recorded = state.get("instance") or {}
    store = None
    try:
        store = open_store(config.storage, root)
    except Exception as exc:  # noqa: BLE001 - without the store, only the local state vouches for an instance
        notes.append(f"the store could not be opened ({exc}): only this project's recorded instance counts as owned")
    open_boxes: dict[str, set[str]] = {}
    found: list[AccountInstance] = []
    for kind, client in clients.items():
        for instance in client.list_instances():
            run = owner_run(instance.name)
            orphan = False
            if run is not None and not (recorded.get("provider") == kind and str(recorded.get("id")) == instance.id):
                if run not in open_boxes:
                    try:
                        spend = SpendLedger(store, run).read() if store is not None else None
                        open_boxes[run] = {b.id for b in spend.boxes if b.end is None} if spend else set()
                    except Exception:  # noqa: BLE001 - an unreadable ledger vouches for nothing
                        open_boxes[run] = set()
                orphan = instance.id not in open_boxes[run]
            found.append(AccountInstance(instance, run, orphan))
    return found, notes
