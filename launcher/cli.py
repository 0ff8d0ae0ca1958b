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

from runcontract.errors import cli_main

# Module names under launcher.commands; each defines ``command`` (a click.Command).
COMMAND_MODULES = ("plan", "up", "run", "logs", "status", "stop", "down", "ssh", "fetch_checkpoint", "prune")
# The order a user meets them in (click would sort them by name).
WORKFLOW_ORDER = ("plan", "up", "run", "logs", "status", "stop", "fetch-checkpoint", "prune", "ssh", "down")
PACKAGE = "llm-box"


def version() -> str:
    """The installed package's version; from pyproject.toml in a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed
    from pathlib import Path

    try:
        return installed(PACKAGE)
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


class WorkflowGroup(click.Group):
    """Lists commands in workflow order with their whole first paragraph (click cuts them at ~45 characters)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands, key=lambda name: (WORKFLOW_ORDER.index(name) if name in WORKFLOW_ORDER else 99, name))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            text = (cmd.short_help or cmd.help or "").strip().split("\n\n")[0]
            rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=WorkflowGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(version(), "--version", "-V", prog_name="launcher", message="%(prog)s (llm-box) %(version)s")
def cli() -> None:
    """Train a ~100M Llama-style model on a rented GPU (or this machine), driven from here.

    With no config, every command works on this machine with configs/quickstart.yaml (the
    quick start); `launcher up --config configs/run_runpod.yaml` (or run_vastai.yaml,
    run_ssh.yaml) picks a GPU box, and later commands remember it. `launcher COMMAND --help`
    shows a command's options.
    """


for _name in COMMAND_MODULES:
    cli.add_command(importlib.import_module(f"launcher.commands.{_name}").command)


@cli_main
def main() -> None:
    cli(prog_name="launcher")


if __name__ == "__main__":
    main()
