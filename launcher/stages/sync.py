"""Stage sync: the project folder to the box (rsync over ssh, else SFTP); nothing for the local box."""
from __future__ import annotations

import shlex
from typing import Optional

from launcher.run.context import RunContext
from launcher.run.progress import progress_bar
from launcher.store.base import human_bytes


def commands(ctx: RunContext) -> list[str]:
    return []  # rsync runs here, not on the box: see describe


def describe(ctx: RunContext) -> list[str]:
    if ctx.box.kind == "local":
        return ["(nothing to sync: the local box uses the project folder in place)"]
    return ["(on this machine) " + shlex.join(ctx.box.rsync_command(ctx.project_root, describe=True))]  # type: ignore[attr-defined]


def is_done(ctx: RunContext) -> Optional[str]:
    return "the local box uses the project folder in place" if ctx.box.kind == "local" else None


def run(ctx: RunContext) -> str:
    with progress_bar(ctx.console, "sync") as (progress, task):
        stats = ctx.box.sync(ctx.project_root, progress=lambda frac, msg: progress.update(task, completed=frac * 100))
    share = (100.0 * stats.bytes_sent / stats.total_bytes) if stats.total_bytes else 0.0
    return (f"{stats.files} of {stats.total_files} files changed, {human_bytes(stats.bytes_sent)} sent "
            f"({share:.2f}% of {human_bytes(stats.total_bytes)}) by {stats.method} in {stats.seconds:.1f} s")
