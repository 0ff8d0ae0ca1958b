"""Stage benchmark: ``trainer.benchmark`` measures tokens/s on the box into the run's throughput.json
(stamped; its progress lines also go to train.log for `launcher logs --follow`). With several GPUs
it runs on all of them under DDP, launched as training is (``launch_command``, with the probe's
NCCL environment). Once it is done the measurement joins the throughput ledger and, on a box the
plan chose, the canary compares it with the plan's figure (launcher/plan/canary.py)."""
from __future__ import annotations

from typing import Optional

from launcher.run.context import RunContext, launch_command
from launcher.run.stamps import fingerprint
from runcontract.run_folder import THROUGHPUT_FILE, TRAIN_LOG


def switched_off(ctx: RunContext) -> Optional[str]:
    return None if ctx.config.run.benchmark else "run.benchmark is off"


def progress_log(ctx: RunContext) -> str:
    """Where its progress lines are copied, for `launcher logs --follow`."""
    return f"{ctx.run_dir}/{TRAIN_LOG}"


def outputs(ctx: RunContext) -> list[str]:
    return [f"{ctx.run_dir}/{THROUGHPUT_FILE}"]


def command(ctx: RunContext) -> str:
    return launch_command(ctx, "trainer.benchmark", [*ctx.model_train_args(), "--output_path", f"{ctx.run_dir}/{THROUGHPUT_FILE}"])


def stamp_fingerprint(ctx: RunContext) -> str:
    run = ctx.config.run
    return fingerprint(ctx, command(ctx), run.model_config_path, run.train_config_path)


def after_run(ctx: RunContext) -> Optional[str]:
    from launcher.plan.canary import after_benchmark

    return after_benchmark(ctx)
