"""Which offer a managed run rents next: the plan's ranking, avoiding hosts that failed the run.

``next_offer`` is the one place the choice is made. The offers are ranked as ``launcher plan``
ranks them (launcher/plan/rank.py: dollars for the run's remaining tokens, from the throughput
ledger's measured speeds or a roofline estimate); an offer whose GPU cannot hold the run is never
taken; offers the plan has no speed for come after every ranked one, cheapest $/h first (the
provider's order). Hosts that failed this run are skipped.

A host is named by ``host_key``: the provider's machine where it says (an Offer's ``host``, Vast's
machine_id), else the offer's location; the recorded instance keeps the key it was rented under.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from launcher.plan.memory import fits
from launcher.plan.rank import PlanOffer, RunNeeds, plan
from launcher.plan.speed import SpeedModel
from launcher.providers.base import Offer

Ranking = Callable[[list[Offer]], list[Offer]]


def host_key(host: Optional[str], location: Optional[str] = None) -> Optional[str]:
    return host or location or None


def plan_ranking(kind: str, needs: RunNeeds, speeds: SpeedModel) -> Ranking:
    """Offers of provider ``kind`` in the plan's order (cheapest run first); too small ones dropped."""

    def rank(offers: list[Offer]) -> list[Offer]:
        priced = [PlanOffer(kind, str(i), o.gpu_name, o.gpu_count, o.billed_per_hour, o.gpu_memory_gb, o.location)
                  for i, o in enumerate(offers) if o.billed_per_hour is not None]
        order = [int(row.offer_id) for row in plan(priced, needs, speeds).offers]
        rest = [i for i, o in enumerate(offers) if i not in set(order) and fits(o.gpu_memory_gb, needs.memory_bytes)]
        return [offers[i] for i in order + rest]

    return rank


def next_offer(offers: list[Offer], avoid_hosts: Iterable[str], rank: Optional[Ranking] = None) -> Optional[Offer]:
    """The first offer in ``rank``'s order (else the provider's, cheapest first) whose host has not
    failed this run; None when none is left."""
    avoid = set(avoid_hosts)
    for offer in (rank(offers) if rank is not None else offers):
        key = host_key(offer.host, offer.location)
        if key is None or key not in avoid:
            return offer
    return None
