"""``launcher ssh [-- CMD]``: an interactive shell on the box (in its workdir), or one command."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import click

from launcher.state import box_for_command, load_command_context


@click.command("ssh", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one).")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def command(config_path: Optional[str], cmd: tuple[str, ...]) -> None:
    """A shell on the box, or `launcher ssh -- CMD` to run one command there."""
    root = Path.cwd()
    config, _, state = load_command_context(root, config_path)
    box = box_for_command(config, state, root)
    line = None if not cmd else (cmd[0] if len(cmd) == 1 else shlex.join(cmd))
    code = box.interactive(line)
    box.close()
    sys.exit(code)
