"""Stage setup: the box's Python environment (infra/bootstrap.sh makes .venv from pyproject.toml);
on the local box, a check that this machine's Python imports the trainer's dependencies."""
from __future__ import annotations

import shlex
from typing import Optional

from rich.console import Console

from launcher.box.base import Box, RunResult, command_failed
from launcher.run.context import RunContext
from launcher.run.progress import progress_bar
from runcontract.errors import UserError

BOOTSTRAP = "infra/bootstrap.sh"
LOCAL_IMPORTS = "import torch, sentencepiece, numpy, safetensors, datasets, accelerate"


def extras(ctx: RunContext) -> str:
    """The pyproject extras the box needs: the trainer's, and eval when the run writes a report card."""
    return "trainer,eval" if ctx.train_config().eval.tasks else "trainer"


def bootstrap_command(box: Box, extras: str = "trainer", check: bool = False) -> str:
    return f"bash {BOOTSTRAP}{' --check' if check else ''} --python {shlex.quote(box.base_python)} --extras {extras}"


def commands(ctx: RunContext) -> list[str]:
    if ctx.box.kind == "local":
        return [f"{ctx.python} -c {shlex.quote(LOCAL_IMPORTS)}"]
    return [bootstrap_command(ctx.box, extras(ctx))]


def is_done(ctx: RunContext) -> Optional[str]:
    if ctx.box.kind == "local":
        return None  # the check is the work: run() imports them
    check = bootstrap_command(ctx.box, extras(ctx), check=True)
    return "the box's .venv matches pyproject.toml" if ctx.box.run(check, check=False, timeout=120).ok else None


def run(ctx: RunContext) -> str:
    if ctx.box.kind == "local":
        result = ctx.box.run(commands(ctx)[0], check=False, timeout=300)
        if not result.ok:
            raise UserError(
                f"this machine's Python ({ctx.box.python}) cannot import the trainer's dependencies: "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'import failed'}. "
                "Install them with `pip install -e '.[trainer]'` (pin torch first to avoid CUDA wheels on a CPU "
                "machine: `pip install torch==<version>`), then run again."
            )
        return "this machine's Python has the trainer's dependencies"
    return bootstrap(ctx.box, ctx.console, extras(ctx))


def bootstrap(box: Box, console: Console, extras: str = "trainer") -> str:
    """Run infra/bootstrap.sh on the box with a progress bar (its ``::progress N/M text`` lines)."""
    command = bootstrap_command(box, extras)
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
        tail = "\n".join(l for l in lines if not l.startswith("::progress"))[-2000:]
        raise command_failed(box, RunResult(command, box.last_exit_code if box.last_exit_code is not None else -1, tail, ""),
                             "bootstrapping the box's Python environment failed; fix the cause above (disk space, "
                             "network to the package index, box.python) and run `launcher up` again.")
    summary = next((l for l in reversed(lines) if l.startswith("bootstrap:")), "bootstrap: done")
    return summary
