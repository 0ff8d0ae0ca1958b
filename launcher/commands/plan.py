"""``launcher plan``: every offer of every candidate, ranked by the dollars the whole run costs on it.

A table by default; ``--json`` prints the contract of docs/plan-json.md (launcher/plan/plan_json.py).
Nothing is rented: ``launcher up`` rents the first row within budget.max_cost, or ``--offer ID``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from rich.table import Table

from launcher.console import make_console
from launcher.plan.plan_json import PlanJson
from launcher.plan.slow_hosts import load_avoided
from launcher.state import load_state
from launcher.config import load_launcher_config

SHOWN = 20  # rows the table shows; --json has them all


def plan_table(result: PlanJson, shown: int = SHOWN) -> Table:
    table = Table(title=f"Run {result.run}: {result.remaining_tokens:,} tokens to train, {result.memory_needed_gb:.1f} GiB "
                        f"per GPU, budget ${result.max_cost:,.2f} (cheapest run first)")
    for column in ("#", "provider", "offer", "GPU", "$/h", "tokens/s", "setup h", "train h", "$ run", "$ P80", ""):
        table.add_column(column, justify="left" if column in ("provider", "offer", "GPU", "") else "right")
    for i, r in enumerate(result.offers[:shown], 1):
        table.add_row(
            str(i), r.provider, r.offer_id, f"{r.gpu_count}x {r.gpu_name}", f"${r.price_per_hour:,.3f}",
            f"{r.tokens_per_second:,.0f} {'(m)' if r.tokens_per_second_source == 'measured' else '(est)'}",
            f"{r.setup_hours:.2f}", f"{r.train_hours:,.2f}", f"${r.total_cost:,.2f}",
            "-" if r.total_cost_p80 is None else f"${r.total_cost_p80:,.2f}", "" if r.within_budget else "over budget",
        )
    return table


@click.command("plan")
@click.option("--config", "config_path", default=None, help="Launcher config with box.kind: plan (default: the recorded one).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a launcher config key (box., run., storage., budget., agent.).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (docs/plan-json.md).")
def command(config_path: Optional[str], overrides: tuple[str, ...], as_json: bool) -> None:
    """Rank every candidate offer by the $ the whole run costs on it (price x (train + setup) hours)."""
    from launcher.plan.make import make_plan
    from launcher.providers.registry import rented_provider

    root = Path.cwd()
    config = load_launcher_config(config_path or load_state(root).get("config_path"), overrides)
    planned = make_plan(config, root, rented_provider, load_avoided(root))
    if as_json:
        click.echo(planned.result.model_dump_json(indent=2))
        return
    console = make_console()
    result = planned.result
    console.print(plan_table(result))
    if not result.offers:
        console.print("[red]no offer can run this[/red]: every candidate's offers were left out (below), or none are "
                      "listed now. Add candidates, or try again later.", highlight=False)
    if len(result.offers) > SHOWN:
        console.print(f"... and {len(result.offers) - SHOWN} more (--json lists them all)")
    for line in result.skipped:
        console.print(f"[yellow]left out[/yellow]: {line}", highlight=False)
    console.print("(m) measured on this model, GPU and count; (est) estimated. `launcher up` rents the first row within "
                  "budget; `launcher up --offer ID` another.", highlight=False)
