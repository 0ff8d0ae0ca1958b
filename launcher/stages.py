"""``launcher run`` as an explicit, ordered list of stages.

    sync -> setup -> [restore] -> tokenizer -> data -> benchmark -> cost -> train

Each stage has a name, an ``is_done`` check (a reason string when its output is already valid,
so it is skipped), the box command(s) it runs (``commands``: also what ``--dry-run`` prints)
and a note on the state Ctrl-C leaves it in. ``run_stages`` prints each stage with its status.

Work products on the box: ``.venv/`` (setup), ``tokenizer/`` and ``data/`` (shared by runs
with the same data config), ``runs/NAME/`` (benchmark, cost, training). The tokenizer, data
and benchmark stages leave a stamp (a hash of their command and the config files it reads)
in ``.launcher/stamps/`` on the box; the stage is skipped when the stamp matches and its
outputs exist. The trainer commands are themselves idempotent, so a stale stamp only costs
time, never correctness.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from launcher.box import Box, BoxError, command_failed
from launcher.config import LauncherConfig
from launcher.store import human_bytes
from launcher.tmux_job import Window, session_name
from runcontract.budget import BudgetConfig
from runcontract.errors import EXIT_INTERRUPTED, EXIT_OVER_BUDGET, OverBudgetError, UserError
from runcontract.run_files import CostFile, StatusFile
from runcontract.run_folder import (
    CONFIG_FILE, COST_FILE, FAILED, FINISHED, LAUNCHER_PHASES, STOPPED, STATUS_FILE, STORE_CONFIG_FILE, THROUGHPUT_FILE, TRAIN_LOG, TRAINER_EXIT_FILE, TRAINER_STARTING,
    TRAINER_STDERR_LOG, run_rel,
)

STAMP_DIR = ".launcher/stamps"
SECRETS_PATH = "~/.llm-box/secrets.env"  # on a remote box; the local box keeps it in the project
LOCAL_SECRETS_PATH = ".launcher/secrets.env"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TQDM_QUIET_INTERVAL = 30  # seconds between progress lines when the output is not a terminal
BOOTSTRAP = "infra/bootstrap.sh"


class StageInterrupted(UserError):
    """Ctrl-C during a stage: the message says which stage and what state it left."""

    exit_code = EXIT_INTERRUPTED


@dataclass
class RunContext:
    config: LauncherConfig
    project_root: Path
    box: Box
    console: Console
    config_path: Optional[str] = None
    resume: bool = False
    allow_over_budget: bool = False
    hourly_rate: Optional[float] = None  # live price of a rented box; None: budget.hourly_rate
    instance_id: Optional[str] = None
    multiplexer: str = "tmux"
    probe_box: bool = True  # --dry-run may read the box (False: it was never connected)

    # ---- names ------------------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        return self.config.run.name

    @property
    def run_dir(self) -> str:
        return run_rel(self.run_name)

    @property
    def session(self) -> str:
        return session_name(self.run_name)

    @property
    def python(self) -> str:
        return shlex.quote(self.box.python) if self.box.kind == "local" else self.box.python

    @property
    def secrets_path(self) -> str:
        return secrets_path(self.box)

    @property
    def rate(self) -> float:
        return float(self.hourly_rate if self.hourly_rate is not None else self.config.budget.hourly_rate)

    @property
    def budget(self) -> BudgetConfig:
        """The run's budget: budget.max_cost at the box's live rate; the trainer (--set) and the agent (store.json) get it."""
        return self.config.budget.model_copy(update={"hourly_rate": self.rate})

    def trainer_sets(self) -> list[str]:
        """``--set`` overrides for every trainer step: run.set, then the launcher's budget and run name."""
        sets = [*self.config.run.overrides, *self.budget.overrides("train.budget"), f"train.run_name={self.run_name}"]
        by_key: dict[str, str] = {}  # each key once: the last value wins, as it would on the trainer's command line
        for item in sets:
            key = item.partition("=")[0].strip()
            by_key.pop(key, None)
            by_key[key] = item
        return [arg for s in by_key.values() for arg in ("--set", s)]

    def train_config(self):
        """The trainer's TrainConfig as this run resolves it (train_config file + run.set): no torch needed."""
        from runcontract.config import SECTIONS, TrainConfig
        from runcontract.configlib import load_config

        run = self.config.run
        return load_config(TrainConfig, self.project_root / run.train_config_path, run.overrides, "train", SECTIONS)

    def model_train_args(self) -> list[str]:
        run = self.config.run
        return ["--model_config", run.model_config_path, "--train_config", run.train_config_path, *self.trainer_sets()]

    def local_file_hash(self, *rel_paths: str) -> str:
        h = hashlib.sha256()
        for rel in rel_paths:
            path = self.project_root / rel
            h.update(rel.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"<missing>") + b"\0")
        return h.hexdigest()


@dataclass
class Stage:
    name: str
    commands: Callable[[RunContext], list[str]]  # box commands, in order (dry-run prints them)
    run: Callable[[RunContext], str]  # does the work; returns a one-line summary
    is_done: Callable[[RunContext], Optional[str]] = lambda ctx: None
    interrupted: str = "nothing was started on the box by this stage"
    describe: Optional[Callable[[RunContext], list[str]]] = None  # dry-run lines (default: commands)


# ---- helpers -----------------------------------------------------------------------------------
def _py(ctx: RunContext, module: str, args: list[str]) -> str:
    return f"{ctx.python} -m {module} {shlex.join(args)}"


def split_progress_lines(buf: bytes) -> tuple[list[tuple[bytes, bool]], bytes]:
    """Complete pieces of ``buf`` and the unfinished rest. A piece ended by a bare carriage return
    is a progress update (True), one ended by a newline a line (False)."""
    pieces: list[tuple[bytes, bool]] = []
    start = 0
    for match in re.finditer(rb"\r\n|\n|\r(?!$)", buf):
        pieces.append((buf[start:match.start()], match.group() == b"\r"))
        start = match.end()
    return pieces, buf[start:]


def _stamp_path(ctx: RunContext, stage: str) -> str:
    return f"{STAMP_DIR}/{stage}"


def _fingerprint(ctx: RunContext, command: str, *files: str, extra: str = "") -> str:
    return hashlib.sha256(f"{command}\n{extra}\n{ctx.local_file_hash(*files)}".encode()).hexdigest()


def _stamp_done(ctx: RunContext, stage: str, fingerprint: str, outputs: list[str]) -> Optional[str]:
    tests = " && ".join(f"test -e {shlex.quote(o)}" for o in outputs)
    result = ctx.box.run(f"cat {shlex.quote(_stamp_path(ctx, stage))} 2>/dev/null; echo; {tests} && echo __outputs_ok__",
                         check=False, timeout=60)
    lines = result.stdout.split()
    if lines and lines[0] == fingerprint and "__outputs_ok__" in lines:
        return f"{', '.join(outputs)} up to date for this config"
    return None


def _write_stamp(ctx: RunContext, stage: str, fingerprint: str) -> None:
    ctx.box.put_text(_stamp_path(ctx, stage), fingerprint + "\n")


def _run_logged(ctx: RunContext, command: str, what: str, remedy: str = "", timeout: Optional[float] = None,
                tee: Optional[str] = None) -> str:
    """Run a trainer step on the box, its output shown dimmed as it comes (long steps).

    Progress bars (tqdm's carriage-return updates) redraw in place on a terminal; off one, tqdm
    is told to update at most every TQDM_QUIET_INTERVAL seconds and each update is a line.
    ``tee``: a file on the box that also gets the output (train.log, for `launcher logs`)."""
    lines: list[str] = []
    tty = ctx.console.is_terminal
    shell = command if tty else f"export TQDM_MININTERVAL={TQDM_QUIET_INTERVAL}; {command}"
    if tee:
        shell = f"set -o pipefail; mkdir -p {shlex.quote(os.path.dirname(tee))}; ({shell}) 2>&1 | tee -a {shlex.quote(tee)}"
    stream = ctx.box.stream(f"bash -c {shlex.quote(shell)} 2>&1" if tee else f"{shell} 2>&1")
    in_place = False  # a bar is drawn on the current terminal line
    try:
        buf = b""
        for chunk in stream:
            buf += chunk
            pieces, buf = split_progress_lines(buf)
            for raw, is_update in pieces:
                line = raw.decode(errors="replace").rstrip()
                if not tty:
                    line = ANSI_ESCAPE.sub("", line)  # tqdm's cursor moves for nested bars mean nothing in a file
                if not line:
                    continue
                if is_update and tty:
                    ctx.console.file.write(f"\r      {line[:max(10, ctx.console.width - 7)]}\x1b[K")
                    ctx.console.file.flush()
                    in_place = True
                    continue
                if in_place:
                    ctx.console.file.write("\r\x1b[K")
                    in_place = False
                lines.append(line)
                ctx.console.print(f"      {line}", style="dim", markup=False, highlight=False)
        if in_place:
            ctx.console.file.write("\n")
        if buf.strip():
            lines.append(buf.decode(errors="replace"))
    finally:
        stream.close()
    code = ctx.box.last_exit_code
    if code != 0:
        from launcher.box import RunResult

        raise command_failed(ctx.box, RunResult(command, -1 if code is None else code, "\n".join(lines[-30:]), ""),
                             remedy or f"{what} failed on the box; fix the cause above and run `launcher run` again "
                                       "(finished stages are skipped).")
    return "\n".join(lines)


# ---- sync ------------------------------------------------------------------------------------
def _sync_commands(ctx: RunContext) -> list[str]:
    return []  # rsync runs here, not on the box: see _sync_describe


def _sync_describe(ctx: RunContext) -> list[str]:
    if ctx.box.kind == "local":
        return ["(nothing to sync: the local box uses the project folder in place)"]
    return ["(on this machine) " + shlex.join(ctx.box.rsync_command(ctx.project_root, describe=True))]  # type: ignore[attr-defined]


def _sync_done(ctx: RunContext) -> Optional[str]:
    return "the local box uses the project folder in place" if ctx.box.kind == "local" else None


def _sync_run(ctx: RunContext) -> str:
    with progress_bar(ctx.console, "sync") as (progress, task):
        stats = ctx.box.sync(ctx.project_root, progress=lambda frac, msg: progress.update(task, completed=frac * 100))
    share = (100.0 * stats.bytes_sent / stats.total_bytes) if stats.total_bytes else 0.0
    return (f"{stats.files} of {stats.total_files} files changed, {human_bytes(stats.bytes_sent)} sent "
            f"({share:.2f}% of {human_bytes(stats.total_bytes)}) by {stats.method} in {stats.seconds:.1f} s")


# ---- setup -----------------------------------------------------------------------------------
LOCAL_IMPORTS = "import torch, sentencepiece, numpy, safetensors, datasets, accelerate"


def _setup_commands(ctx: RunContext) -> list[str]:
    if ctx.box.kind == "local":
        return [f"{ctx.python} -c {shlex.quote(LOCAL_IMPORTS)}"]
    return [f"bash {BOOTSTRAP} --python {shlex.quote(ctx.box.base_python)}"]


def _setup_done(ctx: RunContext) -> Optional[str]:
    if ctx.box.kind == "local":
        return None  # the check is the work: run() imports them
    check = f"bash {BOOTSTRAP} --check --python {shlex.quote(ctx.box.base_python)}"
    return "the box's .venv matches pyproject.toml" if ctx.box.run(check, check=False, timeout=120).ok else None


def _setup_run(ctx: RunContext) -> str:
    if ctx.box.kind == "local":
        result = ctx.box.run(_setup_commands(ctx)[0], check=False, timeout=300)
        if not result.ok:
            raise UserError(
                f"this machine's Python ({ctx.box.python}) cannot import the trainer's dependencies: "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'import failed'}. "
                "Install them with `pip install -e '.[trainer]'` (pin torch first to avoid CUDA wheels on a CPU "
                "machine: `pip install torch==<version>`), then run again."
            )
        return "this machine's Python has the trainer's dependencies"
    return bootstrap(ctx.box, ctx.console)


def bootstrap(box: Box, console: Console) -> str:
    """Run infra/bootstrap.sh on the box with a progress bar (its ``::progress N/M text`` lines)."""
    command = f"bash {BOOTSTRAP} --python {shlex.quote(box.base_python)}"
    lines: list[str] = []
    with progress_bar(console, "bootstrap") as (progress, task):
        stream = box.stream(f"{command} 2>&1")
        try:
            buf = b""
            for chunk in stream:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace").rstrip()
                    lines.append(line)
                    if line.startswith("::progress "):
                        parts = line.split(" ", 2)
                        done, _, total = parts[1].partition("/")
                        if done.isdigit() and total.isdigit() and int(total):
                            progress.update(task, completed=100 * int(done) / int(total),
                                            description=f"bootstrap: {parts[2] if len(parts) > 2 else ''}"[:60])
        finally:
            stream.close()
    if box.last_exit_code != 0:
        from launcher.box import RunResult

        tail = "\n".join(l for l in lines if not l.startswith("::progress"))[-2000:]
        raise command_failed(box, RunResult(command, box.last_exit_code if box.last_exit_code is not None else -1, tail, ""),
                             "bootstrapping the box's Python environment failed; fix the cause above (disk space, "
                             "network to the package index, box.python) and run `launcher up` again.")
    summary = next((l for l in reversed(lines) if l.startswith("bootstrap:")), "bootstrap: done")
    return summary


# ---- restore (--resume) ----------------------------------------------------------------------
def _restore_commands(ctx: RunContext) -> list[str]:
    return [_py(ctx, "launcher.agent", ["restore", "--run_dir", ctx.run_dir, "--store_config", f"{ctx.run_dir}/{STORE_CONFIG_FILE}"])]


def _restore_run(ctx: RunContext) -> str:
    write_store_config(ctx)
    write_secrets(ctx)  # the store's credentials: a new box (or one after `launcher down`) has no secrets file yet
    command = f"{_secrets_prefix(ctx)} {_restore_commands(ctx)[0]}"
    out = _run_logged(ctx, f"bash -c {shlex.quote(command)}", "restoring the run from the store")
    lines = out.strip().splitlines()
    # a corrupt stored checkpoint skipped for an older one that verifies: the user must see which and why
    shown = [line for line in lines if line.startswith(("skipped stored checkpoint", "restored checkpoint")) or line.endswith("is already here")]
    return "; ".join(shown) or (lines or ["restored"])[-1]


# ---- tokenizer / data / benchmark ------------------------------------------------------------
def _tokenizer_command(ctx: RunContext) -> str:
    run = ctx.config.run
    return _py(ctx, "trainer.tokenizer", ["--data_config", run.data_config_path, "--output_dir", "tokenizer",
                                          "--vocab_size", str(run.tokenizer.vocab_size),
                                          "--sample_bytes", str(run.tokenizer.sample_bytes)])


def _tokenizer_fp(ctx: RunContext) -> str:
    return _fingerprint(ctx, _tokenizer_command(ctx), ctx.config.run.data_config_path)


def _data_command(ctx: RunContext) -> str:
    run = ctx.config.run
    return _py(ctx, "trainer.data", ["--data_config", run.data_config_path, "--tokenizer_model", "tokenizer/spm.model",
                                     "--out_dir", "data", "--train_tokens", str(run.data.train_tokens),
                                     "--val_tokens", str(run.data.val_tokens)])


def _data_fp(ctx: RunContext) -> str:
    return _fingerprint(ctx, _data_command(ctx), ctx.config.run.data_config_path, extra=_tokenizer_fp(ctx))


def _benchmark_command(ctx: RunContext) -> str:
    return _py(ctx, "trainer.benchmark", [*ctx.model_train_args(), "--output_path", f"{ctx.run_dir}/{THROUGHPUT_FILE}"])


def _benchmark_fp(ctx: RunContext) -> str:
    run = ctx.config.run
    return _fingerprint(ctx, _benchmark_command(ctx), run.model_config_path, run.train_config_path)


def _stamped_stage(name: str, command: Callable[[RunContext], str], fp: Callable[[RunContext], str],
                   outputs: Callable[[RunContext], list[str]], what: str, interrupted: str) -> Stage:
    def is_done(ctx: RunContext) -> Optional[str]:
        if name == "benchmark" and not ctx.config.run.benchmark:
            return "run.benchmark is off"
        return _stamp_done(ctx, name, fp(ctx), outputs(ctx))

    def run(ctx: RunContext) -> str:
        # the benchmark's progress lines also go to train.log, where `launcher logs --follow` shows them
        out = _run_logged(ctx, command(ctx), what, tee=f"{ctx.run_dir}/{TRAIN_LOG}" if name == "benchmark" else None)
        _write_stamp(ctx, name, fp(ctx))
        last = [l for l in out.strip().splitlines() if l.strip()]
        return last[-1] if last else "done"

    return Stage(name, lambda ctx: [command(ctx)], run, is_done, interrupted)


# ---- cost ------------------------------------------------------------------------------------
def _cost_command(ctx: RunContext) -> str:
    return _py(ctx, "trainer.cost", [*ctx.model_train_args(), "--throughput", f"{ctx.run_dir}/{THROUGHPUT_FILE}",
                                     "--gpu_count", str(ctx.config.run.gpus)])


def _cost_done(ctx: RunContext) -> Optional[str]:
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


def _cost_run(ctx: RunContext) -> str:
    result = ctx.box.run(_cost_command(ctx), check=False, timeout=300)
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


# ---- train -----------------------------------------------------------------------------------
def secrets_path(box: Box) -> str:
    """Where the box keeps its secrets file: in the project for the local box (nothing written
    outside it), in the box user's home for a remote one (the synced project must never hold it)."""
    return LOCAL_SECRETS_PATH if box.kind == "local" else SECRETS_PATH


def _cache_exports(ctx: RunContext) -> str:
    # a tmux window gets the tmux server's environment, not ours: the local box's cache folders explicitly
    env = ctx.box.cache_env() if ctx.box.kind == "local" else {}  # type: ignore[attr-defined]
    return "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())


def _secrets_prefix(ctx: RunContext) -> str:
    # the secrets reach the processes' environment from a mode-600 file, never their argv
    path = ctx.secrets_path
    return f"set -a; [ -f {path} ] && . {path}; set +a;"


def train_command(ctx: RunContext) -> str:
    args = [*ctx.model_train_args()]
    if ctx.resume:
        args.append("--resume")
    if ctx.allow_over_budget:
        args.append("--allow_over_budget")
    gpus = ctx.config.run.gpus
    if gpus > 1:
        launch = ["--multi_gpu", "--num_processes", str(gpus), "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "-m", "trainer.train"]
        return f"{ctx.python} -m accelerate.commands.launch {shlex.join(launch)} {shlex.join(args)}"
    return _py(ctx, "trainer.train", args)


def agent_command(ctx: RunContext) -> str:
    return _py(ctx, "launcher.agent", ["mirror", "--run_dir", ctx.run_dir, "--store_config", f"{ctx.run_dir}/{STORE_CONFIG_FILE}"])


def train_windows(ctx: RunContext) -> list[Window]:
    rd = shlex.quote(ctx.run_dir)
    train = (f"{_secrets_prefix(ctx)} {_cache_exports(ctx)}export PYTHONUNBUFFERED=1; mkdir -p {rd}; "
             # stderr (tracebacks, "error: ..." lines) also kept in a file for `launcher status`;
             # tee -i ignores the Ctrl-C that `launcher stop` sends, so it outlives the trainer
             f"{train_command(ctx)} 2> >(tee -ia {rd}/{TRAINER_STDERR_LOG} >&2); echo $? > {rd}/{TRAINER_EXIT_FILE}")
    agent = f"{_secrets_prefix(ctx)} {_cache_exports(ctx)}export PYTHONUNBUFFERED=1; exec {agent_command(ctx)}"
    return [Window("train", train), Window("agent", agent)]


def write_store_config(ctx: RunContext) -> None:
    from launcher.agent import store_config_json

    config = ctx.config.model_copy(update={"budget": ctx.budget})
    ctx.box.put_text(f"{ctx.run_dir}/{STORE_CONFIG_FILE}", store_config_json(config, ctx.run_name, ctx.instance_id))


def write_secrets(ctx: RunContext) -> int:
    """Write the box's secrets file (mode 600); returns how many variables (never their values).
    With none to hand over, no file is written (and a stale one is removed)."""
    from launcher.secrets import box_secret_env, render_env_file

    env = box_secret_env(ctx.config, train_config=ctx.train_config())
    if not env:
        ctx.box.run(f"rm -f {ctx.secrets_path}", check=False, timeout=30, cwd=ctx.box.kind == "local")
        return 0
    ctx.box.put_text(ctx.secrets_path, render_env_file(env), mode=0o600)
    return len(env)


def _train_commands(ctx: RunContext) -> list[str]:
    from launcher.tmux_job import start_commands

    how = "directly on this machine" if ctx.box.kind == "local" else "over SFTP"
    return [f"(write {ctx.run_dir}/{STORE_CONFIG_FILE}, and {ctx.secrets_path} (mode 600) if the box needs secrets, {how})",
            *start_commands(ctx.box, ctx.session, train_windows(ctx), ctx.multiplexer)]


def _train_done(ctx: RunContext) -> Optional[str]:
    from launcher import tmux_job

    if tmux_job.has(ctx.box, ctx.session, ctx.multiplexer):
        raise UserError(
            f"training for run {ctx.run_name!r} is already running on {ctx.box.label} in {ctx.multiplexer} session "
            f"{ctx.session!r}; follow it with `launcher logs --follow`, or `launcher stop` it before starting again."
        )
    return None


def _train_run(ctx: RunContext) -> str:
    from launcher import tmux_job

    write_store_config(ctx)
    count = write_secrets(ctx)
    ctx.box.run(f"mkdir -p {shlex.quote(ctx.run_dir)} && rm -f {shlex.quote(ctx.run_dir)}/{TRAINER_EXIT_FILE}", timeout=30)
    tmux_job.start(ctx.box, ctx.session, train_windows(ctx), ctx.multiplexer)
    write_launcher_phase(ctx, "setup", progress=TRAINER_STARTING)  # until the trainer's first status.json
    secrets = f"{count} secret variable(s) in {ctx.secrets_path}" if count else "no secrets needed"
    return f"started in {ctx.multiplexer} session {ctx.session!r} with the store agent; {secrets}"


# ---- the list ----------------------------------------------------------------------------------
def build_stages(ctx: RunContext) -> list[Stage]:
    stages = [
        Stage("sync", _sync_commands, _sync_run, _sync_done,
              "the project on the box may be partly updated; nothing was started. Run `launcher run` again to finish",
              describe=_sync_describe),
        Stage("setup", _setup_commands, _setup_run, _setup_done,
              "the box's .venv may be half installed; the next `launcher up` or `launcher run` repairs it"),
    ]
    if ctx.resume:
        stages.append(Stage("restore", _restore_commands, _restore_run, interrupted=
                            "the run folder may be partly restored; `launcher run --resume` again restores it fully"))
    stages += [
        _stamped_stage("tokenizer", _tokenizer_command, _tokenizer_fp, lambda ctx: ["tokenizer/spm.model"],
                       "training the tokenizer", "the tokenizer step was stopped on the box; it is rebuilt next run"),
        _stamped_stage("data", _data_command, _data_fp, lambda ctx: ["data/train.bin", "data/val.bin"],
                       "preparing the data", "data preparation was stopped on the box; it is rebuilt next run"),
        _stamped_stage("benchmark", _benchmark_command, _benchmark_fp,
                       lambda ctx: [f"{ctx.run_dir}/{THROUGHPUT_FILE}"], "the throughput benchmark",
                       "the benchmark was stopped on the box; it runs again next time"),
        Stage("cost", lambda ctx: [_cost_command(ctx)], _cost_run, _cost_done, "nothing was started"),
        Stage("train", _train_commands, _train_run, _train_done,
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


def write_launcher_phase(ctx: RunContext, stage: str, state: str = "preparing", progress: Optional[str] = None) -> None:
    """Put the stage in the run's status.json (phase; docs/status-json.md), keeping the last figures a
    previous run left there. Only the stages that prepare a run are phases; the trainer takes over after."""
    if stage not in LAUNCHER_PHASES:
        return
    path = f"{ctx.run_dir}/{STATUS_FILE}"
    try:
        previous = StatusFile.parse(ctx.box.get_file(path) or b"", path).to_json()
    except (UserError, BoxError):
        previous = {}
    previous.pop("pid", None)  # no trainer runs yet
    record = StatusFile(**{**previous, "state": state, "phase": stage, "progress": progress, "updated": time.time()})
    try:
        ctx.box.put_text(path, record.to_text())
    except BoxError:
        pass  # the stage itself reports an unreachable box


def finished_run(ctx: RunContext) -> Optional[str]:
    """A message when the run on the box has finished everything this config asks for, else None.

    The steps asked for are train.max_steps, else train.target_tokens over the tokens per step
    the run trained with (its config.yaml); a larger value than the finished step trains further."""
    import math

    import yaml

    try:
        status = StatusFile.parse(ctx.box.get_file(f"{ctx.run_dir}/{STATUS_FILE}") or b"", f"{ctx.run_dir}/{STATUS_FILE}")
        resolved = yaml.safe_load(ctx.box.get_file(f"{ctx.run_dir}/{CONFIG_FILE}") or b"{}") or {}
    except (UserError, ValueError):
        return None
    if status.state != FINISHED or status.step is None:
        return None
    train_cfg = ctx.train_config()
    tokens_per_step = (resolved.get("runtime") or {}).get("tokens_per_step") if isinstance(resolved, dict) else None
    if train_cfg.max_steps:
        asked = train_cfg.max_steps
    elif isinstance(tokens_per_step, int) and tokens_per_step > 0:
        asked = math.ceil(train_cfg.target_tokens / tokens_per_step)
    else:
        asked = status.max_steps or status.step
    if status.step < asked:
        return None
    figures = ", ".join(f"{label} {value:.4f}" for value, label in ((status.loss, "loss"), (status.val_loss, "val loss"))
                        if value is not None)
    where = f" in {ctx.config_path}" if ctx.config_path else ""
    return (f"run {ctx.run_name!r} is complete: it finished at step {status.step}/{status.max_steps if status.max_steps is not None else asked}"
            f"{' (' + figures + ')' if figures else ''} on {ctx.box.label}, and this config asks for no more. Nothing was "
            f"run or changed. To train it further, raise train.max_steps or train.target_tokens under run.set{where} "
            "(training resumes from its final checkpoint); to start a fresh run, give it a new run.name. "
            "`launcher status` shows its figures, `launcher fetch-checkpoint` downloads it.")


# ---- small things ------------------------------------------------------------------------------
class progress_bar:
    """A rich progress bar (0..100) for sync and bootstrap; transient, so the log stays tidy.
    Off a terminal (a file, a CI log), a plain line per step of the work or per 10% instead."""

    def __init__(self, console: Console, description: str):
        self.console = console
        self.description = description
        self.progress = None
        if console.is_terminal:
            self.progress = Progress(TextColumn("      {task.description}"), BarColumn(), TaskProgressColumn(),
                                     TimeElapsedColumn(), console=console, transient=True)

    def __enter__(self):
        if self.progress is None:
            return _LineProgress(self.console, self.description), 0
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=100)
        return self.progress, self.task

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()


class _LineProgress:
    """progress_bar's stand-in off a terminal: the same ``update`` calls, printed as lines."""

    def __init__(self, console: Console, description: str):
        self.console = console
        self.description = description
        self.shown = (None, -1)  # (description, tens of percent) last printed

    def update(self, task, completed: Optional[float] = None, description: Optional[str] = None) -> None:
        if description is not None:
            self.description = description
        done = int(completed or 0)
        if (self.description, done // 10) == self.shown:
            return
        self.shown = (self.description, done // 10)
        self.console.print(f"      {self.description}: {done}%", markup=False, highlight=False)
