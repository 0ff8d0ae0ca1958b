"""Stage restore (``launcher run --resume`` only): the run folder and its latest verified checkpoint
from the store, by ``launcher.agent restore`` on the box."""
from __future__ import annotations

import shlex

from launcher.run.context import RunContext, module_command
from launcher.run.step_output import run_logged
from launcher.run.store_and_secrets import secrets_prefix, write_secrets, write_store_config
from runcontract.run_folder import STORE_CONFIG_FILE


def commands(ctx: RunContext) -> list[str]:
    return [module_command(ctx, "launcher.agent", ["restore", "--run_dir", ctx.run_dir, "--store_config", f"{ctx.run_dir}/{STORE_CONFIG_FILE}"])]


def run(ctx: RunContext) -> str:
    write_store_config(ctx)
    write_secrets(ctx)  # the store's credentials: a new box (or one after `launcher down`) has no secrets file yet
    command = f"{secrets_prefix(ctx)} {commands(ctx)[0]}"
    out = run_logged(ctx, f"bash -c {shlex.quote(command)}", "restoring the run from the store")
    lines = out.strip().splitlines()
    # a corrupt stored checkpoint skipped for an older one that verifies: the user must see which and why
    shown = [line for line in lines if line.startswith(("skipped stored checkpoint", "restored checkpoint")) or line.endswith("is already here")]
    return "; ".join(shown) or (lines or ["restored"])[-1]
