"""``launcher``: the laptop's CLI. Each command lives in its own module under launcher/commands/.

    launcher up                              # rent or connect to a box, bootstrap it
    launcher run --config configs/run.yaml   # sync, benchmark, cost gate, train in tmux
    launcher logs --follow                   # watch; Ctrl-C leaves the job running
    launcher status                          # step, loss, tokens/s, ETA, $ spent / $ projected
    launcher fetch-checkpoint                # latest (or --step N) from the store
    launcher prune                           # delete old checkpoints from the store
    launcher down                            # stop paying
"""
from __future__ import annotations

import importlib

import click

from trainer.errors import cli_main

# Module names under launcher.commands; each defines ``command`` (a click.Command).
COMMAND_MODULES = ("up", "run", "logs", "status", "stop", "down", "ssh", "fetch_checkpoint", "prune")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train a ~100M Llama-style model on a rented GPU (or this machine), driven from here."""


for _name in COMMAND_MODULES:
    cli.add_command(importlib.import_module(f"launcher.commands.{_name}").command)


@cli_main
def main() -> None:
    cli(prog_name="launcher")


if __name__ == "__main__":
    main()
