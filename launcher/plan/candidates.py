"""The config side of the plan: every candidate's offers, and a candidates config made concrete.

``candidate_offers`` asks each provider of ``box.candidates`` for its offers (every GPU count
listed; Vast up to ``box.plan.offers_per_search``, RunPod's whole catalog), and prices an SSH
candidate at its stated $/h. A provider that cannot answer is reported, not fatal: the plan
ranks the rest and says what is missing. Hosts in ``avoided`` (slow hosts, canary.py) are left out.

``resolve_for_record`` turns a ``box.kind: plan`` config into the config of the box that was
rented (kind, GPU, count, and for an SSH host its address and $/h), so every command after
``launcher up`` acts on the recorded box; teardown goes by the record alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from launcher.config import RENTED_KINDS, CandidateConfig, LauncherConfig, RunpodConfig, VastaiConfig
from launcher.plan.rank import PlanOffer
from launcher.providers.base import Offer, Provider
from runcontract.errors import UserError

# What a provider is built from (the registry's ``rented_provider``; tests may pass their own).
ProviderFactory = Callable[[str, "RunpodConfig | VastaiConfig"], Provider]


@dataclass
class CandidateOffer:
    """An offer the plan can rank (``plan_offer``) and ``launcher up`` can rent (the rest)."""

    plan_offer: PlanOffer
    candidate: CandidateConfig
    gpu_count: int
    provider_config: Optional[RunpodConfig | VastaiConfig] = None   # None for an SSH host
    offer: Optional[Offer] = None
    host: Optional[str] = None


def ssh_offer_id(c: CandidateConfig) -> str:
    return f"{c.user}@{c.host}:{c.port}"


def offer_id(kind: str, offer: Offer, pcfg: RunpodConfig | VastaiConfig) -> str:
    """Vast: the ask id; RunPod (which picks the machine itself): CLOUD/GPU type id/count."""
    if kind == "runpod":
        return f"{offer.cloud}/{pcfg.gpu_name}/{offer.gpu_count}"
    return str(offer.offer_id)


def candidate_provider_config(config: LauncherConfig, c: CandidateConfig, count: int) -> RunpodConfig | VastaiConfig:
    base = config.box.runpod if c.kind == "runpod" else config.box.vastai
    return base.model_copy(update={"gpu_name": c.gpu_name or base.gpu_name, "gpu_count": count})


def candidate_offers(config: LauncherConfig, make_provider: ProviderFactory,
                     avoided: Iterable[str] = ()) -> tuple[list[CandidateOffer], list[str]]:
    """(every candidate's offers, what could not be listed and why)."""
    avoided = set(avoided)
    found: list[CandidateOffer] = []
    problems: list[str] = []
    for c in config.box.candidates:
        for count in c.gpu_count:
            if c.kind == "ssh":
                if c.host in avoided:
                    problems.append(f"ssh host {c.host}: avoided (it benchmarked slow; .launcher/avoided_hosts.json)")
                    continue
                found.append(CandidateOffer(
                    PlanOffer("ssh", ssh_offer_id(c), c.gpu_name or "?", count, float(c.hourly_rate or 0.0),
                              c.gpu_memory_gb, c.host), c, count, host=c.host))
                continue
            pcfg = candidate_provider_config(config, c, count)
            try:
                offers = make_provider(c.kind, pcfg).offers(limit=config.box.plan.offers_per_search)
            except UserError as err:  # ProviderError included; a missing API key too
                problems.append(f"{c.kind} {pcfg.gpu_name} x{count}: not listed ({err})")
                continue
            for o in offers:
                price = o.billed_per_hour
                if price is None:
                    continue
                if o.host is not None and o.host in avoided:
                    continue
                found.append(CandidateOffer(
                    PlanOffer(c.kind, offer_id(c.kind, o, pcfg), o.gpu_name, o.gpu_count, price, o.gpu_memory_gb,
                              o.location), c, count, pcfg, o, o.host))
    return found, problems


def resolve_for_record(config: LauncherConfig, record: Optional[dict]) -> LauncherConfig:
    """A ``box.kind: plan`` config as the config of the recorded box (unchanged without a record or for
    another kind). The record says which provider, GPU and count were rented."""
    if config.box.kind != "plan" or not record or not record.get("provider"):
        return config
    provider = record["provider"]
    count = int(record.get("gpu_count") or 1)
    box = config.box
    if provider == "static":
        host, port, user = record.get("ssh_host"), int(record.get("ssh_port") or 22), record.get("ssh_user")
        match = next((c for c in box.candidates if c.kind == "ssh" and c.host == host and c.port == port), None)
        rate = float(record.get("hourly_price") or (match.hourly_rate if match else 0.0) or 0.0)
        update_box = {"kind": "ssh", "host": host, "port": port, "user": user}
        budget = config.budget.model_copy(update={"hourly_rate": rate})
    elif provider in RENTED_KINDS:
        pcfg = getattr(box, provider).model_copy(update={"gpu_name": record.get("gpu_name") or getattr(box, provider).gpu_name,
                                                          "gpu_count": count})
        update_box = {"kind": provider, provider: pcfg}
        budget = config.budget
    else:
        return config
    run = config.run.model_copy(update={"gpu_count": count})
    return config.model_copy(update={"box": box.model_copy(update={**update_box, "candidates": []}), "run": run,
                                     "budget": budget})
