"""Which offer a managed run rents next.

``next_offer`` is the one place the choice is made. Today: the provider's own search (offers
cheapest first), skipping hosts that already failed this run. This is where ``launcher
plan``'s ranking (offers ranked by dollars for the whole run) plugs in: replace the body with
the plan's first offer that avoids ``avoid_hosts``.

A host is named by ``host_key``: the offer's location (the fakes and Vast's geolocation give
one per host; an Instance records the location it was rented at).
"""
from __future__ import annotations

from typing import Iterable, Optional

from launcher.providers.base import Offer


def host_key(location: Optional[str]) -> Optional[str]:
    return location or None


def next_offer(offers: list[Offer], avoid_hosts: Iterable[str]) -> Optional[Offer]:
    """The first offer (cheapest first) whose host has not failed this run; None when none is left."""
    avoid = set(avoid_hosts)
    for offer in offers:
        key = host_key(offer.location)
        if key is None or key not in avoid:
            return offer
    return None
