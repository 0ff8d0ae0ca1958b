"""Stage train: the trainer and ``launcher.agent mirror`` started side by side in the run's detached
session (a window each), after store.json and the secrets file are written on the box."""
from __future__ import annotations

import shlex
import time
from typing import Optional

from launcher.box import detached_session
from launcher.box.detached_session import Window
from launcher.run.context import RunContext, launch_command, module_command
from launcher.run.run_status import write_launcher_phase
from launcher.run.store_and_secrets import secrets_prefix, write_secrets, write_store_config
from runcontract.errors import UserError
from runcontract.run_files import StatusFile
from runcontract.run_folder import (
    CHECKPOINTS_DIR, FAILED, FINAL_DIR, STATUS_FILE, STORE_CONFIG_FILE, STORE_HEALTH_FILE, TRAINER_EXIT_FILE, TRAINER_STARTING, TRAINER_STDERR_LOG,
)

# How long `launcher run` waits for a resuming trainer to accept its checkpoint (loading torch and the
# checkpoint); past it the run is left to start and `launcher status` tells.
RESUME_VERDICT_TIMEOUT_S = 300


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
            probe_command(ctx),
            *detached_session.start_commands(ctx.box, ctx.session, train_windows(ctx), ctx.multiplexer)]


def is_done(ctx: RunContext) -> Optional[str]:
    if detached_session.has(ctx.box, ctx.session, ctx.multiplexer):
        raise UserError(
            f"training for run {ctx.run_name!r} is already running on {ctx.box.label} in {ctx.multiplexer} session "
            f"{ctx.session!r}; follow it with `launcher logs --follow`, or `launcher stop` it before starting again."
        )
    return None


def probe_command(ctx: RunContext) -> str:
    return f"{secrets_prefix(ctx)} " + module_command(ctx, "launcher.agent", ["probe", "--run_dir", ctx.run_dir, "--store_config",
                                                                              f"{ctx.run_dir}/{STORE_CONFIG_FILE}"])


def probe_store_from_box(ctx: RunContext) -> None:
    """The box's own check of the store (its network, the credentials it was handed) before the
    trainer starts: a store the box cannot write is an error now, not a run that stores nothing."""
    result = ctx.box.run(probe_command(ctx), check=False, timeout=300)
    if not result.ok:
        said = [line[len("error: "):] if line.startswith("error: ") else line
                for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        raise UserError(" ".join(said[-3:]) or f"the store probe on {ctx.box.label} exited with code {result.exit_code} and said nothing.")


def run(ctx: RunContext) -> str:
    write_store_config(ctx)
    count = write_secrets(ctx)
    probe_store_from_box(ctx)
    rd = shlex.quote(ctx.run_dir)
    ctx.box.run(f"mkdir -p {rd} && rm -f {rd}/{TRAINER_EXIT_FILE} {rd}/{STORE_HEALTH_FILE}", timeout=30)  # the last run's verdicts
    resuming = ctx.resume or ctx.box.run(f"test -d {rd}/{CHECKPOINTS_DIR} -o -d {rd}/{FINAL_DIR}", check=False, timeout=30).ok
    # before the session starts: the trainer's own first status.json (or its refusal) must come after it
    write_launcher_phase(ctx, "setup", progress=TRAINER_STARTING)
    detached_session.start(ctx.box, ctx.session, train_windows(ctx), ctx.multiplexer)
    if resuming:
        await_resume_verdict(ctx)
    secrets = f"{count} secret variable(s) in {ctx.secrets_path}" if count else "no secrets needed"
    return f"started in {ctx.multiplexer} session {ctx.session!r} with the store agent; {secrets}"


def await_resume_verdict(ctx: RunContext, timeout_s: float = RESUME_VERDICT_TIMEOUT_S) -> None:
    """A resuming trainer checks the checkpoint (model shape, sample stream) before it trains: wait
    for that verdict, so that `launcher run` never says "training started" for a resume the trainer
    refused. The verdict: status.json leaves "the trainer is starting", or the trainer exits."""
    status_path, exit_path = f"{ctx.run_dir}/{STATUS_FILE}", f"{ctx.run_dir}/{TRAINER_EXIT_FILE}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = StatusFile.parse(ctx.box.get_file(status_path) or b"{}", status_path)
        except UserError:
            status = None  # not there, or being replaced
        exit_text = (ctx.box.get_file(exit_path) or b"").decode().strip()
        if status is not None and status.state == FAILED:
            raise UserError(f"failed: {status.progress or 'the trainer failed before training'}. Nothing was trained on "
                            f"{ctx.box.label}; `launcher status` shows the same.")
        if exit_text.lstrip("-").isdigit() and int(exit_text) != 0:
            tail = "\n".join((ctx.box.get_file(f"{ctx.run_dir}/{TRAINER_STDERR_LOG}") or b"").decode(errors="replace").strip().splitlines()[-5:])
            raise UserError(f"failed: the trainer exited with code {exit_text} before training on {ctx.box.label}: {tail or 'no error output'}")
        if exit_text or (status is not None and status.progress != TRAINER_STARTING):
            return  # training (or nothing left to do): the run's own status takes over
        time.sleep(1.0)
