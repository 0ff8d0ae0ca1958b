"""The plan: every offer priced for the whole run, cheapest run first. A pure function, no I/O.

    total_cost = price_per_hour x (train_hours + setup_hours)
    train_hours = remaining tokens / projected tokens/s / 3600

Offers whose GPU memory cannot hold the run are left out (counted in ``skipped``), and so are
GPUs with no speed to go on (launcher/plan/speed.py). Rows are sorted by total cost, then $/h.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from launcher.plan.memory import GIB, fits
from launcher.plan.plan_json import PlanJson, PlanRow
from launcher.plan.speed import SpeedModel


@dataclass(frozen=True)
class PlanOffer:
    """An offer as the plan sees it (providers' offers are turned into these by candidates.py)."""

    provider: str
    offer_id: str
    gpu_name: str
    gpu_count: int
    price_per_hour: float                  # as billed: disk and storage included
    gpu_memory_gb: Optional[float] = None
    location: Optional[str] = None


@dataclass(frozen=True)
class RunNeeds:
    """What the run asks of a box."""

    run: str
    target_tokens: int
    memory_bytes: int
    max_cost: float
    tokens_done: int = 0
    default_setup_hours: float = 0.5
    setup_hours_by_provider: dict[str, float] = field(default_factory=dict)

    @property
    def remaining_tokens(self) -> int:
        return max(0, self.target_tokens - self.tokens_done)


def setup_hours_from_ledger(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Median hours from rental to the end of the benchmark, per provider, from the ledger."""
    seen: dict[str, list[float]] = {}
    for r in records:
        seconds, provider = r.get("setup_seconds"), r.get("provider")
        if isinstance(seconds, (int, float)) and seconds > 0 and isinstance(provider, str):
            seen.setdefault(provider, []).append(seconds / 3600.0)
    return {p: statistics.median(hours) for p, hours in seen.items()}


def plan(offers: Iterable[PlanOffer], needs: RunNeeds, speeds: SpeedModel) -> PlanJson:
    """Every offer that can hold the run, priced for the run, cheapest first."""
    rows: list[PlanRow] = []
    too_small: dict[str, int] = {}
    no_speed: dict[str, int] = {}
    remaining = needs.remaining_tokens
    for o in offers:
        if not fits(o.gpu_memory_gb, needs.memory_bytes):
            label = f"{o.gpu_name} ({o.gpu_memory_gb:g} GiB)"
            too_small[label] = too_small.get(label, 0) + 1
            continue
        speed = speeds.speed(o.gpu_name, o.gpu_count)
        if speed is None:
            no_speed[o.gpu_name] = no_speed.get(o.gpu_name, 0) + 1
            continue
        setup = needs.setup_hours_by_provider.get(o.provider, needs.default_setup_hours)
        train_hours = remaining / speed.tokens_per_second / 3600.0
        total = o.price_per_hour * (train_hours + setup)
        p80 = None
        if speed.pessimistic_tokens_per_second:
            p80 = o.price_per_hour * (remaining / speed.pessimistic_tokens_per_second / 3600.0 + setup)
        rows.append(PlanRow.model_construct(
            provider=o.provider, offer_id=o.offer_id, gpu_name=o.gpu_name, gpu_count=o.gpu_count,
            gpu_memory_gb=o.gpu_memory_gb, location=o.location, price_per_hour=o.price_per_hour,
            tokens_per_second=speed.tokens_per_second, tokens_per_second_source=speed.source,
            speed_basis=speed.basis, setup_hours=setup, train_hours=train_hours, total_cost=total,
            total_cost_p80=p80, within_budget=total <= needs.max_cost,
        ))
    rows.sort(key=lambda r: (r.total_cost, r.price_per_hour))
    skipped = [f"{n} offer(s) of {label}: less GPU memory than the run needs ({needs.memory_bytes / GIB:.1f} GiB)"
               for label, n in sorted(too_small.items())]
    skipped += [f"{n} offer(s) of {gpu}: no measurement and no known peak FLOP/s to estimate its speed from"
                for gpu, n in sorted(no_speed.items())]
    return PlanJson.model_construct(
        run=needs.run, target_tokens=needs.target_tokens, remaining_tokens=remaining,
        memory_needed_gb=needs.memory_bytes / GIB, max_cost=needs.max_cost, offers=rows, skipped=skipped,
    )
