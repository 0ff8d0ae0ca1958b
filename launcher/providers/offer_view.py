"""What ``launcher up`` shows before it rents: the offers, the one it picks and why, and what the
budget buys at that price (with the run's projected cost when a local cost.json has it)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.table import Table

from launcher.config import LauncherConfig
from launcher.providers.base import Offer
from runcontract.budget import spent
from runcontract.errors import UserError
from runcontract.run_files import CostFile
from runcontract.run_folder import COST_FILE, run_rel


def money(value: Optional[float]) -> str:
    return "?" if value is None else f"${value:,.3f}"


def offers_table(offers: list[Offer], title: str) -> Table:
    table = Table(title=title)
    for column in ("#", "GPU", "$/h", "location", "reliability", "disk GB", "note"):
        table.add_column(column, justify="right" if column in ("#", "$/h", "reliability", "disk GB") else "left")
    for i, o in enumerate(offers, 1):
        table.add_row(
            str(i), f"{o.gpu_count}x {o.gpu_name}", money(o.hourly_price), o.location or "-",
            "-" if o.reliability is None else f"{o.reliability:.3f}", "-" if o.disk_gb is None else f"{o.disk_gb:.0f}",
            o.note or "",
        )
    return table


def known_run_hours(config: LauncherConfig) -> Optional[float]:
    """Hours the run needs, when a local ``runs/<name>/cost.json`` (from trainer.cost) says so."""
    try:
        hours = CostFile.read(Path(run_rel(config.run.name)) / COST_FILE).hours
    except UserError:
        return None
    return hours if hours > 0 else None


def projection_lines(config: LauncherConfig, price: Optional[float]) -> list[str]:
    max_cost = config.budget.max_cost
    if price is None or price <= 0:
        return [f"Budget: ${max_cost:,.2f} (hourly price unknown: the cost gate uses the live price after renting)"]
    lines = [f"Budget: ${max_cost:,.2f} -> at most {max_cost / price:,.1f} h at {money(price)}/h"]
    hours = known_run_hours(config)
    if hours is not None:
        cost = spent(hours * 3600, price)
        verdict = "within budget" if cost <= max_cost else "[bold red]OVER BUDGET[/bold red]"
        lines.append(f"Projected run ({config.run.name}): {hours:,.2f} h -> ${cost:,.2f} ({verdict})")
    else:
        lines.append("Projected run: unknown until the benchmark runs (launcher run measures tokens/s, then gates on cost)")
    return lines


def cloud_choice(offers: list[Offer], chosen: Offer) -> str:
    """', in the community cloud (secure costs $x/h)' when clouds were compared."""
    if not chosen.cloud:
        return ""
    others = [o for o in offers if o.cloud and o.cloud != chosen.cloud]
    text = f", in the {chosen.cloud.lower()} cloud"
    if others:
        text += f" (cheaper than {others[0].cloud.lower()} at {money(others[0].hourly_price)}/h)"
    return text
