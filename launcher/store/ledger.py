"""Append-only ledgers in the store: one object per record, never a read-modify-write.

    <store root>/_ledgers/<ledger>/<UTC time to the microsecond>-<random hex>.json

Two writers at once (two runs, two controllers, a box and a laptop) both keep their records:
an append writes a new object under a key nobody else can choose, and nothing is rewritten, so
there is no shared file to lose an update of. Readers list the ledger's folder and read every
record in key order, which is time order. A record that cannot be read or parsed is skipped and
counted (``Records.unreadable``), never fatal: one broken object must not hide the rest.

Run names start with a letter or digit (launcher/config.py), so ``_ledgers`` is never a run.
The ledgers this project keeps are named here, once: the throughput ledger (what each
benchmark measured, for ``launcher plan``) and the spend ledger (what each box cost, for one
total budget across the boxes of a managed run).
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from launcher.store.base import Store

LEDGERS_ROOT = "_ledgers"
THROUGHPUT_LEDGER = "throughput"
SPEND_LEDGER = "spend"


@dataclass
class Records:
    """What a ledger holds: its records in append order, and how many objects could not be read."""

    items: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


class Ledger:
    """One append-only ledger (``name``) in ``store``."""

    def __init__(self, store: Store, name: str):
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad ledger name {name!r}: one path segment, like 'throughput'")
        self.store = store
        self.name = name
        self.prefix = f"{LEDGERS_ROOT}/{name}/"

    def append(self, record: dict[str, Any], *, now: Optional[datetime] = None) -> str:
        """Write ``record`` as a new object; returns its key. Never touches another record."""
        when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        key = f"{self.prefix}{when.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(6)}.json"
        self.store.write_bytes(key, json.dumps(record, sort_keys=True).encode("utf-8"))
        return key

    def read(self) -> Records:
        """Every record, oldest first; unreadable objects are listed apart, not raised."""
        out = Records()
        for info in self.store.list(self.prefix):
            if not info.key.endswith(".json"):
                continue
            data = self.store.read_bytes(info.key)
            try:
                record = json.loads(data.decode("utf-8")) if data is not None else None
            except (UnicodeDecodeError, ValueError):
                record = None
            if not isinstance(record, dict):
                out.unreadable.append(info.key)
                continue
            out.items.append(record)
            out.keys.append(info.key)
        return out
