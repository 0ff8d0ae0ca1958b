"""Stage cost: ``trainer.cost`` projects the run's price from the measured speed and stops
before training when it is over budget.max_cost (exit 3), unless --allow-over-budget."""
from __future__ import annotations

from typing import Optional

from launcher.box.base import command_failed
from launcher.run.context import RunContext, module_command
from runcontract.errors import EXIT_OVER_BUDGET, OverBudgetError, UserError
from runcontract.run_files import CostFile
from runcontract.run_folder import COST_FILE, THROUGHPUT_FILE


def command(ctx: RunContext) -> str:
    return module_command(ctx, "trainer.cost", [*ctx.model_train_args(), "--throughput", f"{ctx.run_dir}/{THROUGHPUT_FILE}",
                                                "--gpu_count", str(ctx.config.run.gpu_count)])


def is_done(ctx: RunContext) -> Optional[str]:
    if not ctx.config.run.benchmark:
        return "no benchmark (run.benchmark is off), so no measured speed to project from"
    return None


def _over_budget_reason(ctx: RunContext) -> str:
    """The cost verdict's figures, from the cost.json trainer.cost wrote (never from its output)."""
    path = f"{ctx.run_dir}/{COST_FILE}"
    try:
        cost = CostFile.parse(ctx.box.get_file(path) or b"", path)
        return (f"projected cost ${cost.total_cost:,.2f} ({cost.hours:,.1f} h at ${cost.hourly_rate:.2f}/h "
                f"for {cost.target_tokens:,} tokens) exceeds budget.max_cost ${cost.max_cost or 0:,.2f}")
    except UserError:
        return f"the projected cost exceeds budget.max_cost ({path} is unreadable)"


def run(ctx: RunContext) -> str:
    result = ctx.box.run(command(ctx), check=False, timeout=300)
    table = result.stdout.rstrip()
    if table:
        ctx.console.print(table, markup=False, highlight=False)
    if result.exit_code == EXIT_OVER_BUDGET:
        reason = _over_budget_reason(ctx)
        if not ctx.allow_over_budget:
            raise OverBudgetError(
                f"stopped before training on {ctx.box.label}: {reason}. Raise budget.max_cost (or shorten the run: "
                "train.target_tokens / train.max_steps), or pass --allow-over-budget to train anyway."
            )
        ctx.console.print(f"[yellow]over budget, going on because of --allow-over-budget: {reason}[/yellow]")
        return "over budget (allowed by --allow-over-budget)"
    if not result.ok:
        raise command_failed(ctx.box, result, "the cost projection failed; fix the cause above and run again.")
    return f"within budget (max ${ctx.config.budget.max_cost:.2f} at ${ctx.rate:.2f}/h)"
