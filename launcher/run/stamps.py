"""Stamps that let the tokenizer, data and benchmark stages be skipped: a hash of the stage's
command and the config files it reads, kept on the box in ``.launcher/stamps/<stage>``. A stage
is up to date when its stamp matches and its outputs exist."""
from __future__ import annotations

import hashlib
import shlex
from typing import Optional

from launcher.run.context import RunContext

STAMP_DIR = ".launcher/stamps"


def _stamp_path(stage: str) -> str:
    return f"{STAMP_DIR}/{stage}"


def fingerprint(ctx: RunContext, command: str, *files: str, extra: str = "") -> str:
    return hashlib.sha256(f"{command}\n{extra}\n{ctx.local_file_hash(*files)}".encode()).hexdigest()


def stamp_done(ctx: RunContext, stage: str, fingerprint: str, outputs: list[str]) -> Optional[str]:
    tests = " && ".join(f"test -e {shlex.quote(o)}" for o in outputs)
    result = ctx.box.run(f"cat {shlex.quote(_stamp_path(stage))} 2>/dev/null; echo; {tests} && echo __outputs_ok__",
                         check=False, timeout=60)
    lines = result.stdout.split()
    if lines and lines[0] == fingerprint and "__outputs_ok__" in lines:
        return f"{', '.join(outputs)} up to date for this config"
    return None


def write_stamp(ctx: RunContext, stage: str, fingerprint: str) -> None:
    ctx.box.put_text(_stamp_path(stage), fingerprint + "\n")
