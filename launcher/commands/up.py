"""``launcher up``: connect to the box (or rent one), check it, bootstrap its Python environment.

Records the box in .launcher/state.json before anything slow (a rented box is recorded the
moment the provider acknowledges it), so `launcher down` can always find it. A recorded
rental is never replaced by a new one: a config for another provider is refused, an
instance that still exists but is not reachable is reported, not forgotten, and an
unconfirmed create (its answer lost) is looked for by name before anything is rented.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click
from rich.console import Console
from rich.table import Table

from launcher.box.base import Box, BoxUnreachable
from launcher.box.factory import box_spec, open_box
from launcher.state import check_config_matches_record, load_state, update_state
from launcher.store.base import human_bytes
from launcher.config import RENTED_KINDS, load_launcher_config
from runcontract.errors import UserError

MIN_DISK_GB = 20.0


def provision_instance(config, root: Path, config_path: Optional[str], console: Console, assume_yes: bool,
                       pick_offer=None, create_name: Optional[str] = None) -> dict:
    """Reuse the recorded rented instance when it is still there; else rent one (recorded at once)."""
    import launcher.providers as providers

    recorded = load_state(root).get("instance")  # bring_up checked that it matches the config
    if recorded and recorded.get("provider") == config.box.kind:
        if providers.is_unconfirmed(recorded):  # never a second box over a create that may have made one
            recorded = providers.reconcile_unconfirmed(recorded, config, console,
                                                       on_found=lambda found: update_state(root, instance=found))
        current = providers.describe(config, recorded["id"])
        if current is not None and current.ssh_ready:
            console.print(f"reusing {config.box.kind} instance {current.id} ({current.gpu_name}, ${current.hourly_price}/h)")
            update_state(root, instance={**recorded, **{k: v for k, v in current.to_dict().items() if v is not None}})
            return load_state(root)["instance"]
        if current is not None:
            raise UserError(
                f"the recorded {providers.PROVIDER_NAMES[config.box.kind]} instance {current.id} still exists "
                f"(state {current.raw_state or current.state}) but has no reachable SSH port yet, and it bills: run "
                "`launcher up` again once it runs, or `launcher down` to terminate it")

    def on_created(instance) -> None:
        # rented_at: when billing started, as near as the launcher knows (the spend ledger's start)
        update_state(root, config_path=config_path, instance={**instance.to_dict(), "rented_at": time.time()}, box=None, run=None)

    try:
        instance = providers.provision(config, console, assume_yes=assume_yes, on_created=on_created, pick_offer=pick_offer,
                                         name=create_name)
    except providers.ProvisionError as err:
        if err.terminated:  # confirmed gone: nothing left to track
            update_state(root, instance=None, box=None)
        raise
    state = update_state(root, instance={**(load_state(root).get("instance") or {}), **instance.to_dict()})
    return state["instance"]


def wait_for_ssh(box: Box, config, instance: dict, console: Console) -> None:
    """A rented box's sshd often refuses for a while after its port is published: retry until
    ready_timeout_s; a final failure says the instance still bills and how to stop it."""
    import launcher.providers as providers

    pcfg = config.box.runpod if config.box.kind == "runpod" else config.box.vastai
    with console.status(f"waiting for SSH on {box.label} (up to {pcfg.ready_timeout_s:.0f}s) ..."):
        try:
            box.wait_until_reachable(pcfg.ready_timeout_s)
        except BoxUnreachable as exc:
            raise UserError(
                f"{exc}. {providers.PROVIDER_NAMES[instance['provider']]} instance {instance['id']} is still running "
                f"and billing: stop it with `launcher down` (or {providers.manual_terminate_command(instance)})"
            ) from None


def info_table(box: Box, info) -> Table:
    table = Table(title=f"box: {box.label}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("OS", f"{info.os} ({info.kernel})")
    table.add_row("disk free", f"{info.disk_free_gb:.1f} GB")
    table.add_row("python", f"{box.base_python}: {info.python}")
    if info.gpus:
        for i, gpu in enumerate(info.gpus):
            table.add_row(f"GPU {i}", f"{gpu['name']}, {gpu['memory']}, driver {gpu['driver']}")
    else:
        table.add_row("GPU", "none found (nvidia-smi missing or no GPU): training runs on CPU")
    table.add_row("tools", ", ".join(f"{t} {'yes' if ok else 'no'}" for t, ok in sorted(info.tools.items())))
    table.add_row("workdir", box.workdir)
    return table


def bring_up(config, config_path: Optional[str], root: Path, console: Console, assume_yes: bool = False,
             bootstrap_box: bool = True, offer_id: Optional[str] = None, pick_offer=None,
             create_name: Optional[str] = None) -> Box:
    from launcher.stages.setup import bootstrap

    check_config_matches_record(config, config_path, load_state(root))  # a recorded rental is never overwritten
    instance = None
    if config.box.kind == "plan":
        from launcher.plan.rent import choose_and_rent

        config, instance = choose_and_rent(config, config_path, root, console, assume_yes, offer_id)
    elif offer_id is not None:
        raise UserError(f"--offer picks among the plan's offers, and this config's box is kind {config.box.kind}: use "
                        "box.kind: plan with candidates (see `launcher plan`)")
    if config.box.kind in RENTED_KINDS:
        instance = provision_instance(config, root, config_path, console, assume_yes, pick_offer, create_name)
    spec = box_spec(config, root, instance)
    box = open_box(spec, root)
    if instance is not None:
        wait_for_ssh(box, config, instance, console)
    with console.status(f"connecting to {box.label} ..."):
        info = box.info()
    update_state(root, config_path=config_path, box=spec, instance=instance)
    console.print(info_table(box, info))
    if info.python in ("?", "missing", ""):
        raise UserError(f"{box.base_python} was not found on {box.label}; set box.python in the config to an installed "
                        "Python >= 3.10 (for example python3) and run `launcher up` again.")
    if info.disk_free_gb and info.disk_free_gb < MIN_DISK_GB:
        console.print(f"[yellow]warning: only {info.disk_free_gb:.1f} GB free on {box.label}; the 2B-token run needs "
                      f"about {MIN_DISK_GB:.0f} GB (data, checkpoints).[/yellow]")
    if not (info.tools.get("tmux") or info.tools.get("screen")):
        console.print(f"[yellow]warning: neither tmux nor screen on {box.label}: `launcher run` needs one "
                      "(`launcher ssh -- sudo apt-get install -y tmux`).[/yellow]")
    if not bootstrap_box:
        return box
    if box.kind == "local":
        result = box.run(f"{box.python} -c 'import torch, sentencepiece, numpy, safetensors'", check=False, timeout=300)
        if result.ok:
            console.print("local box: this machine's Python has the trainer's dependencies")
        else:
            console.print("[yellow]local box: this Python cannot import the trainer's dependencies; "
                          "`pip install -e '.[trainer]'` before `launcher run`.[/yellow]")
        return box
    from launcher.run.progress import progress_bar

    with progress_bar(console, "sync") as (progress, task):
        stats = box.sync(root, progress=lambda frac, msg: progress.update(task, completed=frac * 100))
    console.print(f"synced the project: {stats.files} file(s) changed, {human_bytes(stats.bytes_sent)} sent ({stats.method})")
    console.print(bootstrap(box, console))
    return box


@click.command("up")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one, else configs/quickstart.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a launcher config key (box., run., storage., budget., agent.).")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Rent without asking for confirmation.")
@click.option("--offer", "offer_id", default=None, metavar="ID", help="box.kind plan: rent this offer of `launcher plan` instead of the cheapest run within budget.")
def command(config_path: Optional[str], overrides: tuple[str, ...], assume_yes: bool, offer_id: Optional[str]) -> None:
    """Connect to the box (or rent one: with box.kind plan, the plan's cheapest run within budget), check it and bootstrap it."""
    root = Path.cwd()
    config_path = config_path or load_state(root).get("config_path")
    config = load_launcher_config(config_path, overrides)
    console = Console()
    box = bring_up(config, config_path, root, console, assume_yes, offer_id=offer_id)
    box.close()
    hint = f" --config {config_path}" if config_path else ""
    console.print(f"[green]box ready[/green]: {box.label}. Next: `launcher run{hint}`")
