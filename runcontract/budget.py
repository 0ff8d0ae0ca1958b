"""The budget, once: what the box costs, the most a run may spend, and what it has spent.

``BudgetConfig`` is the ``budget`` section of both halves' configs (``train.budget`` in the
trainer's YAML, ``budget`` in the launcher's, and store.json's for the box agent): one class,
so one set of rules validates it wherever it is read. ``spent`` turns hours of training into
dollars for the trainer, the agent and ``launcher status`` alike. No torch here.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from runcontract.configlib import Config


def spent(elapsed_s: float, hourly_rate: float) -> float:
    """Dollars spent after ``elapsed_s`` seconds of training at ``hourly_rate`` $/hour."""
    return elapsed_s / 3600.0 * hourly_rate


class BudgetConfig(Config):
    """Money: what the box costs and the most the run may spend. Shared with the launcher."""

    hourly_rate: float = Field(0.0, ge=0, description="Price of the box in $/hour (all its GPUs together); 0 for a machine you own.")
    max_cost: float = Field(10.0, gt=0, description="Most the run may spend in $: projected cost over it refuses to start; spent cost reaching it stops the run with a final checkpoint.")
    max_total_cost: Optional[float] = Field(None, gt=0, description="Managed runs (`launcher run --managed`): the most the run may spend in $ across every box it rents (the spend ledger in the store); null: max_cost.")

    def reached(self, spent_dollars: float) -> bool:
        """Whether a run that has spent ``spent_dollars`` must stop (a free box never does)."""
        return self.hourly_rate > 0 and spent_dollars >= self.max_cost

    def overrides(self, section: str = "train.budget") -> list[str]:
        """This budget as ``--set`` overrides of the trainer's config (``train.budget.max_cost=5.0``)."""
        return [f"{section}.{key}={value!r}" for key, value in self.to_dict().items() if value is not None]
