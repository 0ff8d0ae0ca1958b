"""``launcher up`` with ``box.kind: plan``: plan, pick, say why in one line, rent through the money-safe flow.

The pick is the first row (the cheapest run) within ``budget.max_cost``, or the row ``--offer ID``
names (any row: the user chose it; one over budget is rented with a warning, and the cost gate
still stands before training). The offer is rented with the chosen candidate's provider settings
(providers/provisioning.py ``rent_offer``: recorded the moment it exists, terminated if anything
fails before SSH answers). What the plan promised for it is kept in state.json's ``plan`` for
the canary, with the rental time for the setup hours of the next plans.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from launcher.config import LauncherConfig
from launcher.plan.candidates import CandidateOffer
from launcher.plan.make import Planned, make_plan
from launcher.plan.plan_json import PlanRow
from launcher.plan.slow_hosts import load_avoided
from launcher.providers.base import RUNNING, Instance
from launcher.state import load_state, resolved_config, update_state
from runcontract.errors import UserError

SHOWN_BEFORE_RENTING = 5


def choose(planned: Planned, offer_id: Optional[str]) -> PlanRow:
    """The row to rent: ``offer_id``'s, else the cheapest run within budget."""
    rows = planned.result.offers
    if offer_id is not None:
        row = planned.row(offer_id)
        if row is None:
            known = ", ".join(r.offer_id for r in rows[:10]) or "none"
            raise UserError(f"--offer {offer_id} is not among the plan's offers now (offers come and go): the first ones "
                            f"are {known}. Run `launcher plan` to see them all.")
        return row
    within = [r for r in rows if r.within_budget]
    if not within:
        cheapest = f"; the cheapest run is ${rows[0].total_cost:,.2f} ({rows[0].gpu_count}x {rows[0].gpu_name}, " \
                   f"{rows[0].provider} {rows[0].offer_id})" if rows else ""
        raise UserError(f"no offer runs within budget.max_cost ${planned.result.max_cost:,.2f}{cheapest}. Raise "
                        "budget.max_cost, train fewer tokens (train.target_tokens), add candidates, or pick one with "
                        "--offer ID." + (" Left out: " + "; ".join(planned.result.skipped) if planned.result.skipped else ""))
    return within[0]


def why(row: PlanRow) -> str:
    """The one line that says why this offer: $ for the run, hours, where the speed figure came from."""
    p80 = f" (P80 ${row.total_cost_p80:,.2f})" if row.total_cost_p80 is not None else ""
    return (f"Renting {row.provider} {row.offer_id}: {row.gpu_count}x {row.gpu_name} at ${row.price_per_hour:,.3f}/h -> "
            f"${row.total_cost:,.2f} for the run{p80}, {row.train_hours + row.setup_hours:,.1f} h "
            f"({row.train_hours:,.1f} training + {row.setup_hours:.1f} setup) at {row.tokens_per_second:,.0f} tokens/s, "
            f"{row.tokens_per_second_source}: {row.speed_basis}")


def chosen_config(config: LauncherConfig, chosen: CandidateOffer) -> LauncherConfig:
    """The config of the chosen box: its kind and provider settings (or SSH address and $/h), its GPU count."""
    c = chosen.candidate
    box = config.box
    if c.kind == "ssh":
        update = {"kind": "ssh", "host": c.host, "port": c.port, "user": c.user, "candidates": []}
        budget = config.budget.model_copy(update={"hourly_rate": float(c.hourly_rate or 0.0)})
    else:
        update = {"kind": c.kind, c.kind: chosen.provider_config, "candidates": []}
        budget = config.budget
    return config.model_copy(update={"box": box.model_copy(update=update), "budget": budget,
                                     "run": config.run.model_copy(update={"gpu_count": chosen.gpu_count})})


def rent_planned(config: LauncherConfig, root: Path, console: Console, assume_yes: bool, offer_id: Optional[str],
                 on_created: Callable[[Instance], None], on_chosen: Callable[[dict], None]) -> LauncherConfig:
    """Plan, rent the pick; returns the chosen box's config. ``on_chosen`` gets the plan's promise
    (before the rental, so a box the canary later finds slow is compared with what was promised)."""
    from launcher.commands.plan import plan_table
    from launcher.providers.provisioning import read_public_key, rent_offer
    from launcher.providers.registry import rented_provider
    from launcher.providers.static import static_instance

    planned = make_plan(config, root, rented_provider, load_avoided(root))
    console.print(plan_table(planned.result, SHOWN_BEFORE_RENTING))
    for line in planned.result.skipped:
        console.print(f"[yellow]left out[/yellow]: {line}", highlight=False)
    row = choose(planned, offer_id)
    chosen = planned.offers[row.offer_id]
    if not row.within_budget:
        console.print(f"[yellow]--offer {row.offer_id} projects ${row.total_cost:,.2f}, over budget.max_cost "
                      f"${config.budget.max_cost:,.2f}: the cost gate before training still applies[/yellow]")
    console.print(why(row), highlight=False, soft_wrap=True)
    concrete = chosen_config(config, chosen)
    on_chosen({"offer_id": row.offer_id, "provider": row.provider, "host": chosen.host,
               "tokens_per_second": row.tokens_per_second, "tokens_per_second_source": row.tokens_per_second_source,
               "total_cost": row.total_cost, "rented_at": time.time()})
    if chosen.candidate.kind == "ssh":
        instance = static_instance(concrete)
        instance.gpu_name, instance.gpu_count, instance.state = chosen.candidate.gpu_name, chosen.gpu_count, RUNNING
        instance.hourly_price = row.price_per_hour
        on_created(instance)
        return concrete
    public_key = read_public_key(config.box.identity_file)  # fail before anything is rented
    provider = rented_provider(chosen.candidate.kind, chosen.provider_config)
    instance = rent_offer(concrete, provider, chosen.offer, public_key, console, assume_yes, on_created)
    instance.gpu_count = instance.gpu_count or chosen.gpu_count
    on_created(instance)
    return concrete


def choose_and_rent(config, config_path: Optional[str], root: Path, console: Console, assume_yes: bool,
                    offer_id: Optional[str]):
    """``box.kind: plan``: the recorded box's config when one is recorded, else the plan's pick, rented and
    recorded; returns (config of the chosen box, its static instance record or None)."""
    state = load_state(root)
    if state.get("instance"):
        if offer_id is not None:
            raise UserError(f"a box is already recorded for this project ({state['instance'].get('provider')} "
                            f"{state['instance'].get('id')}): `launcher down` it before renting --offer {offer_id}")
        concrete = resolved_config(config, state)
    else:
        def on_created(instance) -> None:
            update_state(root, config_path=config_path, instance=instance.to_dict(), box=None, run=None)

        from launcher.providers.base import ProvisionError

        try:
            concrete = rent_planned(config, root, console, assume_yes, offer_id, on_created,
                                    lambda promise: update_state(root, plan=promise))
        except ProvisionError as err:
            if err.terminated:  # confirmed gone: nothing left to track
                update_state(root, instance=None, box=None, plan=None)
            raise
    static = load_state(root).get("instance") if concrete.box.kind == "ssh" else None
    return concrete, static
