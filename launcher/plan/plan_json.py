"""``launcher plan --json``: the contract, owned here once (docs/plan-json.md lists exactly these fields).

    {"run", "target_tokens", "remaining_tokens", "memory_needed_gb", "max_cost",
     "offers": [{"provider", "offer_id", "gpu_name", "gpu_count", "gpu_memory_gb", "location",
                 "price_per_hour", "tokens_per_second", "tokens_per_second_source", "speed_basis",
                 "setup_hours", "train_hours", "total_cost", "total_cost_p80", "within_budget"}, ...],
     "skipped": ["..."]}

``offers`` are sorted by ``total_cost`` ascending, and every row's ``total_cost`` is
``price_per_hour x (train_hours + setup_hours)``.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class PlanRow(BaseModel):
    """One offer, priced for the whole run."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(..., description="runpod, vastai or ssh (a host of your own at a stated $/h).")
    offer_id: str = Field(..., description="What `launcher up --offer ID` rents: Vast's ask id, RunPod's CLOUD/GPU id/count, ssh's user@host:port.")
    gpu_name: str = Field(..., description="The GPU model, as the provider names it.")
    gpu_count: int = Field(..., description="GPUs on the box (training uses all of them).")
    gpu_memory_gb: Optional[float] = Field(None, description="Memory per GPU in GiB as the provider lists it; null when it does not say.")
    location: Optional[str] = Field(None, description="Where the box is (Vast: geolocation; RunPod: its cloud).")
    price_per_hour: float = Field(..., description="$/h as billed: the machine with its disk and storage.")
    tokens_per_second: float = Field(..., description="The run's projected training speed on this box (median of the measurements when measured).")
    tokens_per_second_source: Literal["measured", "estimated"] = Field(..., description="measured: from the throughput ledger for this model, GPU and count; estimated: otherwise.")
    speed_basis: str = Field(..., description="Where the speed figure came from, in words.")
    setup_hours: float = Field(..., description="Hours billed before training: image pull, bootstrap, data (past runs' median, else box.plan.setup_hours).")
    train_hours: float = Field(..., description="remaining_tokens / tokens_per_second, in hours.")
    total_cost: float = Field(..., description="price_per_hour x (train_hours + setup_hours): the $ for the run.")
    total_cost_p80: Optional[float] = Field(None, description="The same at the 20th-percentile measured speed (a slow host), with two or more measurements; else null.")
    within_budget: bool = Field(..., description="total_cost <= budget.max_cost.")


class PlanJson(BaseModel):
    """The whole plan."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(..., description="run.name.")
    target_tokens: int = Field(..., description="train.target_tokens of the run.")
    remaining_tokens: int = Field(..., description="Tokens still to train (target less what the run's status in the store says is done).")
    memory_needed_gb: float = Field(..., description="GiB of GPU memory one process needs (launcher/plan/memory.py); offers below it are left out.")
    max_cost: float = Field(..., description="budget.max_cost.")
    offers: list[PlanRow] = Field(default_factory=list, description="Offers that can hold the run, by total_cost ascending.")
    skipped: list[str] = Field(default_factory=list, description="What was left out and why (offers too small, GPUs with no speed, providers that did not answer).")
