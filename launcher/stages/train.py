"""Stage train: the trainer and ``launcher.agent mirror`` started side by side in the run's detached
session (a window each), after store.json and the secrets file are written on the box."""
from __future__ import annotations

import shlex
from typing import Optional

from launcher import detached_session
from launcher.detached_session import Window
from launcher.stages.context import RunContext, launch_command, module_command
from launcher.stages.run_status import write_launcher_phase
from launcher.stages.store_and_secrets import secrets_prefix, write_secrets, write_store_config
from runcontract.errors import UserError
from runcontract.run_folder import STORE_CONFIG_FILE, TRAINER_EXIT_FILE, TRAINER_STARTING, TRAINER_STDERR_LOG


def _cache_exports(ctx: RunContext) -> str:
    # a tmux window gets the tmux server's environment, not ours: the local box's cache folders explicitly
    env = ctx.box.cache_env() if ctx.box.kind == "local" else {}  # type: ignore[attr-defined]
    return "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())


def train_command(ctx: RunContext) -> str:
    args = [*ctx.model_train_args()]
    if ctx.resume:
        args.append("--resume")
    if ctx.allow_over_budget:
        args.append("--allow_over_budget")
    return launch_command(ctx, "trainer.train", args)  # on all run.gpu_count GPUs


def agent_command(ctx: RunContext) -> str:
    return module_command(ctx, "launcher.agent", ["mirror", "--run_dir", ctx.run_dir, "--store_config", f"{ctx.run_dir}/{STORE_CONFIG_FILE}"])


def train_windows(ctx: RunContext) -> list[Window]:
    rd = shlex.quote(ctx.run_dir)
    train = (f"{secrets_prefix(ctx)} {_cache_exports(ctx)}export PYTHONUNBUFFERED=1; mkdir -p {rd}; "
             # stderr (tracebacks, "error: ..." lines) also kept in a file for `launcher status`;
             # tee -i ignores the Ctrl-C that `launcher stop` sends, so it outlives the trainer
             f"{train_command(ctx)} 2> >(tee -ia {rd}/{TRAINER_STDERR_LOG} >&2); echo $? > {rd}/{TRAINER_EXIT_FILE}")
    agent = f"{secrets_prefix(ctx)} {_cache_exports(ctx)}export PYTHONUNBUFFERED=1; exec {agent_command(ctx)}"
    return [Window("train", train), Window("agent", agent)]


def commands(ctx: RunContext) -> list[str]:
    how = "directly on this machine" if ctx.box.kind == "local" else "over SFTP"
    return [f"(write {ctx.run_dir}/{STORE_CONFIG_FILE}, and {ctx.secrets_path} (mode 600) if the box needs secrets, {how})",
            *detached_session.start_commands(ctx.box, ctx.session, train_windows(ctx), ctx.multiplexer)]


def is_done(ctx: RunContext) -> Optional[str]:
    if detached_session.has(ctx.box, ctx.session, ctx.multiplexer):
        raise UserError(
            f"training for run {ctx.run_name!r} is already running on {ctx.box.label} in {ctx.multiplexer} session "
            f"{ctx.session!r}; follow it with `launcher logs --follow`, or `launcher stop` it before starting again."
        )
    return None


def run(ctx: RunContext) -> str:
    write_store_config(ctx)
    count = write_secrets(ctx)
    ctx.box.run(f"mkdir -p {shlex.quote(ctx.run_dir)} && rm -f {shlex.quote(ctx.run_dir)}/{TRAINER_EXIT_FILE}", timeout=30)
    detached_session.start(ctx.box, ctx.session, train_windows(ctx), ctx.multiplexer)
    write_launcher_phase(ctx, "setup", progress=TRAINER_STARTING)  # until the trainer's first status.json
    secrets = f"{count} secret variable(s) in {ctx.secrets_path}" if count else "no secrets needed"
    return f"started in {ctx.multiplexer} session {ctx.session!r} with the store agent; {secrets}"
