"""``launcher run`` as an explicit, ordered list of stages, and how a list of them is run.

    sync -> setup -> [restore] -> [nccl_probe] -> tokenizer -> data -> benchmark -> cost -> train

(restore with --resume only; nccl_probe with run.gpu_count > 1 only: it refuses a box whose GPUs
cannot all-reduce before hours of data preparation, and its NCCL settings go to every launch.)

Each stage has a name, an ``is_done`` check (a reason string when its output is already valid,
so it is skipped), the box command(s) it runs (``commands``: also what ``--dry-run`` prints)
and a note on the state Ctrl-C leaves it in. ``run_stages`` prints each stage with its status.

Work products on the box: ``.venv/`` (setup), ``tokenizer/`` and ``data/`` (shared by runs
with the same data config), ``runs/NAME/`` (benchmark, cost, training). The tokenizer, data
and benchmark stages leave a stamp (stamps.py); the stage is skipped when the stamp matches
and its outputs exist. The trainer commands are themselves idempotent, so a stale stamp only
costs time, never correctness.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Callable, Optional

from rich.markup import escape

from launcher.box.base import BoxError
from launcher.plan.canary import SlowHostReplaced
from launcher.stages import benchmark, cost, data, nccl_probe, restore, setup, sync, tokenizer, train
from launcher.run.context import RunContext
from launcher.run.run_status import write_launcher_phase
from launcher.run.stamps import stamp_done, write_stamp
from launcher.run.step_output import run_logged
from launcher.run.store_and_secrets import secrets_prefix, write_secrets
from runcontract.errors import EXIT_INTERRUPTED, UserError
from runcontract.run_folder import FAILED, STOPPED


class StageInterrupted(UserError):
    """Ctrl-C during a stage: the message says which stage and what state it left."""

    exit_code = EXIT_INTERRUPTED


@dataclass
class Stage:
    name: str
    commands: Callable[[RunContext], list[str]]  # box commands, in order (dry-run prints them)
    run: Callable[[RunContext], str]  # does the work; returns a one-line summary
    is_done: Callable[[RunContext], Optional[str]] = lambda ctx: None
    interrupted: str = "nothing was started on the box by this stage"
    describe: Optional[Callable[[RunContext], list[str]]] = None  # dry-run lines (default: commands)


def _stamped_stage(name: str, command: Callable[[RunContext], str], fp: Callable[[RunContext], str],
                   outputs: Callable[[RunContext], list[str]], what: str, interrupted: str,
                   switched_off: Callable[[RunContext], Optional[str]] = lambda ctx: None,
                   tee: Callable[[RunContext], Optional[str]] = lambda ctx: None,
                   after: Callable[[RunContext], Optional[str]] = lambda ctx: None, secrets: bool = False) -> Stage:
    """A stage that runs one trainer command and leaves a stamp; ``switched_off`` says why the config
    skips it, ``tee`` names a file its output is also copied to, ``after`` runs once it is done (a line
    it returns joins the summary); with ``secrets`` the command runs with the box's secrets file
    sourced (HF_TOKEN and HF_ENDPOINT for the steps that read the hub)."""
    def is_done(ctx: RunContext) -> Optional[str]:
        return switched_off(ctx) or stamp_done(ctx, name, fp(ctx), outputs(ctx))

    def run(ctx: RunContext) -> str:
        shell = command(ctx)
        if secrets:
            write_secrets(ctx)
            shell = f"bash -c {shlex.quote(f'{secrets_prefix(ctx)} {shell}')}"
        out = run_logged(ctx, shell, what, tee=tee(ctx))
        write_stamp(ctx, name, fp(ctx))
        last = [l for l in out.strip().splitlines() if l.strip()]
        extra = after(ctx)
        return (last[-1] if last else "done") + (f"; {extra}" if extra else "")

    return Stage(name, lambda ctx: [command(ctx)], run, is_done, interrupted)


# ---- the list ----------------------------------------------------------------------------------
def build_stages(ctx: RunContext) -> list[Stage]:
    stages = [
        Stage("sync", sync.commands, sync.run, sync.is_done,
              "the project on the box may be partly updated; nothing was started. Run `launcher run` again to finish",
              describe=sync.describe),
        Stage("setup", setup.commands, setup.run, setup.is_done,
              "the box's .venv may be half installed; the next `launcher up` or `launcher run` repairs it"),
    ]
    if ctx.resume:
        stages.append(Stage("restore", restore.commands, restore.run, interrupted=
                            "the run folder may be partly restored; `launcher run --resume` again restores it fully"))
    if ctx.config.run.gpu_count > 1:
        stages.append(Stage("nccl_probe", nccl_probe.commands, nccl_probe.run, nccl_probe.is_done,
                            "the all-reduce probe was stopped on the box (its processes end with it); it runs again next time",
                            describe=nccl_probe.describe))
    stages += [
        _stamped_stage("tokenizer", tokenizer.command, tokenizer.stamp_fingerprint, lambda ctx: tokenizer.OUTPUTS,
                       "training the tokenizer", "the tokenizer step was stopped on the box; it is rebuilt next run",
                       secrets=True),
        _stamped_stage("data", data.command, data.stamp_fingerprint, lambda ctx: data.OUTPUTS,
                       "preparing the data", "data preparation was stopped on the box; it resumes where it stopped next run",
                       secrets=True),
        _stamped_stage("benchmark", benchmark.command, benchmark.stamp_fingerprint, benchmark.outputs,
                       "the throughput benchmark", "the benchmark was stopped on the box; it runs again next time",
                       switched_off=benchmark.switched_off, tee=benchmark.progress_log, after=benchmark.after_run),
        Stage("cost", lambda ctx: [cost.command(ctx)], cost.run, cost.is_done, "nothing was started"),
        Stage("train", train.commands, train.run, train.is_done,
              "training may have been started in the tmux session: check with `launcher status`"),
    ]
    return stages


def run_stages(ctx: RunContext, stages: list[Stage], dry_run: bool = False) -> None:
    console = ctx.console
    total = len(stages)
    if dry_run:
        console.print(f"[bold]dry run[/bold]: the commands `launcher run` would run on {escape(ctx.box.label)}; "
                      "nothing is changed.", highlight=False)
        for i, stage in enumerate(stages, 1):
            console.print(f"[bold][{i}/{total}] {stage.name}[/bold] {escape(_would(ctx, stage))}", highlight=False)
            if stage.describe is not None:
                lines = stage.describe(ctx)
            else:
                lines = [line if line.startswith("(") else ctx.box.describe_command(line) for line in stage.commands(ctx)]
            for line in lines:
                console.print(f"      $ {line}", markup=False, highlight=False, soft_wrap=True)
        return
    for i, stage in enumerate(stages, 1):
        label = f"[{i}/{total}] {stage.name}"
        start = time.monotonic()
        try:
            reason = stage.is_done(ctx)
            if reason:
                console.print(f"[bold]{label}[/bold] [cyan]skipped[/cyan]: {escape(reason)}", highlight=False)
                continue
            console.print(f"[bold]{label}[/bold] running ...")
            write_launcher_phase(ctx, stage.name)
            summary = stage.run(ctx)
        except KeyboardInterrupt:
            console.print(f"[bold]{label}[/bold] [red]interrupted[/red]")
            write_launcher_phase(ctx, stage.name, STOPPED, f"stopped during {stage.name} (Ctrl-C in launcher run)")
            raise StageInterrupted(
                f"interrupted during stage '{stage.name}' on {ctx.box.label}: the command running there was stopped; "
                f"{stage.interrupted}. Stages before it are complete. `launcher status` shows the box."
            ) from None
        except SlowHostReplaced:  # the box is released: nothing more is written to it
            console.print(f"[bold]{label}[/bold] [yellow]box released as slow[/yellow]")
            raise
        except (UserError, BoxError):
            console.print(f"[bold]{label}[/bold] [red]failed[/red]")
            write_launcher_phase(ctx, stage.name, FAILED, f"failed during {stage.name}")
            raise
        console.print(f"[bold]{label}[/bold] [green]done[/green] in {time.monotonic() - start:.1f} s: {escape(summary)}",
                      highlight=False)


def _would(ctx: RunContext, stage: Stage) -> str:
    """What the stage would do now, for --dry-run: its is_done check only reads the box. A box never
    connected (no `launcher up` yet) is not contacted: that would record its host key."""
    if not ctx.probe_box:
        return "would run unless already up to date (not checked: the box was never connected; `launcher up` first)"
    try:
        reason = stage.is_done(ctx)
    except BoxError as exc:
        return f"(cannot tell whether it is up to date: {exc})"
    except UserError as exc:
        return f"would stop here: {exc}"
    return f"would be skipped: {reason}" if reason else "would run:"
