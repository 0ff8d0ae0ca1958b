"""Stage nccl_probe (several GPUs only): ``trainer.nccl_probe`` all-reduces across the box's
GPUs, bounded in time, retried with NCCL_P2P_DISABLE=1 when it hangs or crawls, and records
what worked in the run's nccl_probe.json. The environment that worked goes to ``ctx.nccl_env``,
which the benchmark and train launches carry (``launch_command``). A result is reused on the
same box (host name and GPU list, hashed on the box: ``BOX_ID_SHELL``) for the same GPU count."""
from __future__ import annotations

import shlex
from typing import Optional

from launcher.run.context import RunContext, module_command
from launcher.run.step_output import run_logged
from runcontract.errors import UserError
from runcontract.run_files import NcclProbe
from runcontract.run_folder import NCCL_PROBE_FILE, TRAIN_LOG

# the box's identity: its host name and its GPUs with their UUIDs (none listed on a box without nvidia-smi)
BOX_ID_SHELL = "( hostname; nvidia-smi -L 2>/dev/null ) | sha256sum | cut -c1-16"
_SEPARATOR = "__nccl_probe_file__"


def output(ctx: RunContext) -> str:
    return f"{ctx.run_dir}/{NCCL_PROBE_FILE}"


def command(ctx: RunContext) -> str:
    probe = ctx.config.run.nccl_probe
    args = ["--gpu_count", str(ctx.config.run.gpu_count), "--output_path", output(ctx), "--size_mb", f"{probe.size_mb:g}",
            "--iterations", str(probe.iterations), "--timeout_s", f"{probe.timeout_s:g}",
            "--startup_timeout_s", f"{probe.startup_timeout_s:g}", "--min_busbw_gbps", f"{probe.min_busbw_gbps:g}"]
    return f'{module_command(ctx, "trainer.nccl_probe", args)} --box_id "$({BOX_ID_SHELL})"'


def commands(ctx: RunContext) -> list[str]:
    return [command(ctx)]


def describe(ctx: RunContext) -> list[str]:
    """--dry-run's lines: the command, and what its verdict changes in the launches after it."""
    return [ctx.box.describe_command(command(ctx)),
            f"(if NCCL's defaults hang or crawl and NCCL_P2P_DISABLE=1 works, the benchmark and train launches below get "
            f"NCCL_P2P_DISABLE=1 in front; {output(ctx)} records it)"]


def _recorded(ctx: RunContext) -> tuple[str, Optional[NcclProbe]]:
    """This box's identity and the run's nccl_probe.json (None when missing or unreadable), in one box command."""
    result = ctx.box.run(f"{BOX_ID_SHELL}; echo {_SEPARATOR}; cat {shlex.quote(output(ctx))} 2>/dev/null", check=False, timeout=60)
    box_id, _, text = result.stdout.partition(_SEPARATOR)
    try:
        return box_id.strip(), NcclProbe.parse(text, output(ctx)) if text.strip() else None
    except UserError:
        return box_id.strip(), None  # a damaged file is probed again, not trusted


def summary(probe: NcclProbe) -> str:
    env = " ".join(f"{k}={v}" for k, v in probe.nccl_env.items()) or "NCCL defaults"
    bus = f"{probe.busbw_gbps:.2f}" if probe.busbw_gbps is not None else "?"
    return f"{probe.gpu_count} GPUs all-reduce with {env} ({probe.backend}, bus {bus} GB/s)"


def is_done(ctx: RunContext) -> Optional[str]:
    if ctx.config.run.gpu_count == 1:
        return "one GPU (run.gpu_count 1): nothing to probe"
    box_id, probe = _recorded(ctx)
    if probe is None or not probe.ok or probe.gpu_count != ctx.config.run.gpu_count or probe.box_id != box_id:
        return None
    ctx.nccl_env = dict(probe.nccl_env)
    return f"{output(ctx)} for this box: {summary(probe)}"


def run(ctx: RunContext) -> str:
    run_logged(ctx, command(ctx), "the NCCL probe", tee=f"{ctx.run_dir}/{TRAIN_LOG}",
               remedy=f"the GPUs' all-reduce probe failed on the box ({output(ctx)} lists every attempt); "
                      "fix the cause above, or set run.gpu_count: 1, and run `launcher run` again.")
    _, probe = _recorded(ctx)
    if probe is None or not probe.ok:
        raise UserError(f"the NCCL probe ended without a usable {output(ctx)} on {ctx.box.label}; run `launcher run` again.")
    ctx.nccl_env = dict(probe.nccl_env)
    return summary(probe)
