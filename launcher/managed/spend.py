"""The spend ledger: what every box of a run cost, in the store, so one budget holds across boxes.

Records go to the store's spend ledger (launcher/store/ledger.py: append-only, one object per
record, so two controllers never lose one). Per box, two records:

    {"event": "rent", "run", "provider", "id", "hourly_price", "start"}
    {"event": "end",  "run", "provider", "id", "hourly_price", "start", "end", "cost", "reason"}

``start`` is when the provider acknowledged the rental (the local state's ``rented_at``),
``end`` when the provider confirmed the box gone, ``cost`` = $/h x (end - start). The total is
derived by reading the records, never kept in a record: a box still open costs $/h x (now -
start) so far. Appends are idempotent by (event, id): a controller killed between an append
and its next step appends nothing twice when it makes the same decision again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from launcher.store.base import Store
from launcher.store.ledger import SPEND_LEDGER, Ledger

RENT, END = "rent", "end"
INTERRUPTION_REASONS = ("lost", "hung")  # an end that was not the run's own


@dataclass
class BoxSpend:
    provider: str
    id: str
    hourly_price: float
    start: float
    end: Optional[float] = None
    reason: Optional[str] = None

    @property
    def state(self) -> str:
        return "ended" if self.end is not None else "open"

    def hours(self, now: Optional[float] = None) -> float:
        """Hours rented: until its end, or until ``now`` while open."""
        until = self.end if self.end is not None else (now if now is not None else time.time())
        return max(0.0, until - self.start) / 3600.0

    def cost(self, now: Optional[float] = None) -> float:
        return self.hourly_price * self.hours(now)

    def to_status(self, now: Optional[float] = None) -> dict:
        """One entry of ``status --json``'s ``boxes``."""
        return {"provider": self.provider, "id": self.id, "state": self.state, "hourly_price": self.hourly_price,
                "cost": round(self.cost(now), 6)}


@dataclass
class RunSpend:
    boxes: list[BoxSpend] = field(default_factory=list)

    def total(self, now: Optional[float] = None) -> float:
        return sum(box.cost(now) for box in self.boxes)

    @property
    def interruptions(self) -> int:
        return sum(1 for box in self.boxes if box.reason in INTERRUPTION_REASONS)

    def box(self, box_id: str) -> Optional[BoxSpend]:
        return next((b for b in self.boxes if b.id == str(box_id)), None)


class SpendLedger:
    """The spend ledger, read and appended for one run."""

    def __init__(self, store: Store, run: str):
        self.ledger = Ledger(store, SPEND_LEDGER)
        self.run = run

    def read(self) -> RunSpend:
        spend = RunSpend()
        for record in self.ledger.read().items:
            if record.get("run") != self.run:
                continue
            box = spend.box(str(record.get("id")))
            if box is None:
                box = BoxSpend(provider=str(record.get("provider")), id=str(record.get("id")),
                               hourly_price=float(record.get("hourly_price") or 0.0), start=float(record.get("start") or 0.0))
                spend.boxes.append(box)
            if record.get("event") == END:
                box.end = float(record.get("end") or box.start)
                box.reason = record.get("reason")
        return spend

    def rented(self, provider: str, box_id: str, hourly_price: float, start: float) -> None:
        if self.read().box(box_id) is None:
            self.ledger.append({"event": RENT, "run": self.run, "provider": provider, "id": str(box_id),
                                "hourly_price": float(hourly_price), "start": float(start)})

    def ended(self, provider: str, box_id: str, hourly_price: float, start: float, end: float, reason: str) -> None:
        existing = self.read().box(box_id)
        if existing is not None and existing.end is not None:
            return
        box = BoxSpend(provider, str(box_id), float(hourly_price), float(start), float(end), reason)
        self.ledger.append({"event": END, "run": self.run, "provider": provider, "id": box.id,
                            "hourly_price": box.hourly_price, "start": box.start, "end": box.end,
                            "cost": box.cost(), "reason": reason})
