"""``launcher status``: box, run, training state, step, loss, val loss, tokens/s, ETA, $ spent / projected.

Reads runs/NAME/status.json and cost.json on the box (written by the launcher's stages and the
trainer) and asks tmux whether the session is alive: status.json saying "running" with no session
left is reported as "failed (process gone)". When the box cannot be reached, the stored copy is
read instead. An unconfirmed rental (a create whose answer was lost) is looked for by name
first: found, it is recorded and shown; not found, the error says how to check. ``--json`` prints one object whose fields and types are STATUS_FIELDS, documented
in docs/status-json.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from launcher.box import detached_session
from launcher.box.base import Box, BoxUnreachable, ConnectionLost
from launcher.config import RENTED_KINDS
from launcher.console import make_console
from launcher.state import box_for_command, load_command_context, run_name, update_state
from runcontract.detached import session_name
from runcontract.errors import UserError
from runcontract.run_files import CostFile, RunFile, StatusFile, StoreHealth
from runcontract.run_folder import (
    COST_FILE, FAILED, FINISHED, REPORT_JSON, REPORT_MD, STATUS_FILE, STOPPED, STORE_HEALTH_FILE, TRAINER_EXIT_FILE, TRAINER_STARTING,
    TRAINER_STDERR_LOG, run_rel,
)

# `launcher status --json`: every field, its JSON type(s) and meaning (docs/status-json.md shows this table).
STATUS_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "run": (("string",), "the run's name (runs/<run>/ on the box, <run>/ in the store)"),
    "box": (("string",), "where the run is: the box's label, with \"(unreachable)\" when the store's copy was read"),
    "instance": (("object", "null"), "the rented instance (provider, id, state, hourly_price, ...); null for a box you own"),
    "source": (("string",), "\"box\", or \"store (<url>)\" when the box could not be reached"),
    "state": (("string",), "not started, starting, preparing, running, finished, failed, stopped, or failed (process gone); "
                           "\" (stored copy)\" is appended when read from the store"),
    "phase": (("string", "null"), "what the run is doing: setup, restore, nccl_probe, tokenizer, data, benchmark, cost, overfit-check, "
                                  "training, eval, checkpoint, or the ended state (finished, failed, stopped); null before any"),
    "progress": (("string", "null"), "progress within the phase (\"12/25 steps, loss 3.1\") or the phase a failed run "
                                     "ended in (\"failed during overfit-check\")"),
    "session_alive": (("boolean",), "whether the run's tmux session is running on the box"),
    "step": (("integer", "null"), "optimizer steps done"),
    "max_steps": (("integer", "null"), "optimizer steps the run is planned for"),
    "tokens_seen": (("integer", "null"), "training tokens consumed"),
    "loss": (("number", "null"), "training loss at the last logged step"),
    "val_loss": (("number", "null"), "validation loss at the last eval"),
    "val_bpb": (("number", "null"), "validation bits per byte of the mix at the last eval"),
    "val_sources": (("object",), "per data source at the last eval: {source: {\"loss\": .., \"bpb\": ..}} (C4 apart from Wikipedia); {} before any"),
    "tokens_per_sec": (("number", "null"), "training throughput over the last log interval"),
    "elapsed_s": (("number", "null"), "seconds of training (summed over resumes)"),
    "eta_s": (("number", "null"), "seconds left at the current speed, while running"),
    "hourly_rate": (("number", "null"), "$/hour of the box (the provider's live price for a rented one)"),
    "cost_spent": (("number", "null"), "$ spent so far by training"),
    "cost_projected": (("number", "null"), "$ the cost gate projected for the whole run (cost.json)"),
    "max_cost": (("number", "null"), "budget.max_cost in $"),
    "updated": (("number", "null"), "Unix time status.json was last written"),
    "age_s": (("number", "null"), "seconds since status.json was last written"),
    "exit_code": (("integer", "null"), "the trainer's exit code once it has exited (0: success); null while it runs"),
    "stderr_tail": (("string", "null"), "the last lines the trainer wrote to stderr, when it failed or never started"),
    "store_health": (("object", "null"), "the box agent's uploads (store_health.json): last_upload, waiting_files, waiting_checkpoints, "
                                         "last_error, ended (then the waiting lists are what is not stored); null before the agent wrote it"),
    "report": (("string", "null"), "where the report card (report.md, report.json) is, once written: the run folder on the box "
                                   "or the store's copy; `launcher fetch-checkpoint` brings it; null before"),
    "boxes": (("array",), "every box the run rented, from the store's spend ledger (managed runs): "
                          "{provider, id, state (open or ended), hourly_price, cost}; [] when none was recorded"),
    "interruptions": (("integer",), "boxes ended because they were lost, preempted or hung (managed runs)"),
    "spend_total": (("number", "null"), "$ spent across every box of the run (the spend ledger; an open box counts "
                                        "until now); null when the ledger has no box of the run"),
}
F = TypeVar("F", bound=RunFile)
_CASTS = {"integer": int, "number": float, "string": str, "boolean": bool}


def typed(summary: dict) -> dict:
    """The summary with each field of its documented JSON type: integers as integers, never "0"."""
    out = {}
    for name, (types, _) in STATUS_FIELDS.items():
        value = summary.get(name)
        if value is None and "null" not in types:
            value = {"object": {}, "array": []}.get(types[0], value)  # always present: empty until known
        if value is None or (types[0] == "object" and isinstance(value, dict)) or (types[0] == "array" and isinstance(value, list)):
            out[name] = value
            continue
        try:
            out[name] = _CASTS[types[0]](value)
        except (TypeError, ValueError):
            out[name] = None
    return out


def _parse(model: type[F], data: Optional[bytes | str], source: str) -> Optional[F]:
    """The run file's model, or None when it is absent or not whole (status shows what it can)."""
    if not data:
        return None
    try:
        return model.parse(data, source)
    except UserError:
        return None


def training_state(status: Optional[StatusFile], session_alive: bool, exit_code: Optional[int] = None) -> str:
    state = status.state if status is not None else None
    if state == "preparing" and not session_alive and exit_code is not None and status.progress == TRAINER_STARTING:
        return f"failed (the trainer exited with code {exit_code} before it started)"
    if state is None:
        return "starting" if session_alive else "not started"
    if state == "running" and not session_alive:
        return "failed (process gone)"
    if state == "preparing" and session_alive:
        return "starting"  # the launcher started the trainer, which has not written status.json yet
    return str(state)


def eta_seconds(status: StatusFile) -> Optional[float]:
    step, max_steps = status.step, status.max_steps
    if not step or not max_steps or status.state != "running":
        return None
    remaining = max(0, max_steps - step)
    tps, seen = status.tokens_per_sec, status.tokens_seen
    if tps and seen:
        return remaining * (seen / step) / tps
    if status.elapsed_s:
        return remaining * status.elapsed_s / step
    return None


def read_run(box: Box, name: str, multiplexer: str = "tmux") -> dict:
    """Everything status needs from the box, as a dict."""
    rd = run_rel(name)
    status = _parse(StatusFile, box.get_file(f"{rd}/{STATUS_FILE}"), f"{rd}/{STATUS_FILE}")
    cost = _parse(CostFile, box.get_file(f"{rd}/{COST_FILE}"), f"{rd}/{COST_FILE}")
    alive = detached_session.has(box, session_name(name), multiplexer)
    exit_text = (box.get_file(f"{rd}/{TRAINER_EXIT_FILE}") or b"").decode().strip()
    exit_code = int(exit_text) if exit_text.lstrip("-").isdigit() else None
    stderr_tail, traces = "", status is not None or bool(exit_text)
    if status is None or training_state(status, alive, exit_code).startswith(FAILED):
        err = box.get_file(f"{rd}/{TRAINER_STDERR_LOG}")
        traces = traces or err is not None  # the train stage starts the trainer with its stderr log in the run folder
        stderr_tail = "\n".join((err or b"").decode(errors="replace").strip().splitlines()[-5:])
    health = _parse(StoreHealth, box.get_file(f"{rd}/{STORE_HEALTH_FILE}"), f"{rd}/{STORE_HEALTH_FILE}")
    report = f"{rd}/{REPORT_MD} on the box" if box.get_file(f"{rd}/{REPORT_JSON}") is not None else None
    return {"status": status, "cost": cost, "session_alive": alive, "exit_code": exit_code,
            "stderr_tail": stderr_tail, "source": "box", "store_health": health, "report": report, "trainer_traces": traces}


def read_run_from_store(config, root: Path, name: str) -> dict:
    from launcher.store.factory import open_store

    store = open_store(config.storage, root)
    return {"status": _parse(StatusFile, store.read_text(f"{name}/{STATUS_FILE}"), f"{name}/{STATUS_FILE}"),
            "cost": _parse(CostFile, store.read_text(f"{name}/{COST_FILE}"), f"{name}/{COST_FILE}"),
            "store_health": _parse(StoreHealth, store.read_text(f"{name}/{STORE_HEALTH_FILE}"), f"{name}/{STORE_HEALTH_FILE}"),
            "session_alive": False, "exit_code": None, "stderr_tail": "", "source": f"store ({config.storage.url})",
            "report": f"{name}/{REPORT_MD} in the store" if store.read_bytes(f"{name}/{REPORT_JSON}") is not None else None}


def summarize(box_label: str, name: str, data: dict, instance: Optional[dict], rate: Optional[float]) -> dict:
    status: Optional[StatusFile] = data.get("status")
    cost: Optional[CostFile] = data.get("cost")
    if data["source"] == "box":
        state = training_state(status, data["session_alive"], data.get("exit_code"))
    else:
        state = (status.state if status is not None else "unknown") + " (stored copy)"
    eta = eta_seconds(status) if status is not None else None
    status = status or StatusFile.model_construct(state="unknown")  # every figure None
    return {
        "box": box_label,
        "instance": instance,
        "hourly_rate": rate,
        "run": name,
        "source": data["source"],
        "state": state,
        "phase": status.phase,
        "progress": status.progress,
        "session_alive": data["session_alive"],
        "step": status.step,
        "max_steps": status.max_steps,
        "loss": status.loss,
        "val_loss": status.val_loss,
        "val_bpb": status.val_bpb,
        "val_sources": status.val_sources or {},  # per source: {"loss", "bpb"} (C4 apart from Wikipedia)
        "tokens_seen": status.tokens_seen,
        "tokens_per_sec": status.tokens_per_sec,
        "elapsed_s": status.elapsed_s,
        "eta_s": eta,
        "cost_spent": status.cost_spent,
        "cost_projected": cost.total_cost if cost is not None else None,
        "max_cost": cost.max_cost if cost is not None else None,
        "updated": status.updated,
        "age_s": (time.time() - status.updated) if status.updated else None,
        "exit_code": data.get("exit_code"),
        "stderr_tail": data.get("stderr_tail") or None,
        "report": data.get("report"),
        "store_health": health.to_json() if (health := data.get("store_health")) is not None else None,
    }


def _fmt(value, spec: str = "", none: str = "-") -> str:
    if value is None:
        return none
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def render(summary: dict) -> Table:
    table = Table(title=f"run {summary['run']}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("box", summary["box"] + (f" ({summary['instance'].get('provider')} {summary['instance'].get('id')}, "
                                           f"{summary['instance'].get('state')})" if summary.get("instance") else ""))
    table.add_row("read from", summary["source"])
    style = {"running": "green", FINISHED: "green", STOPPED: "yellow", "preparing": "cyan", "starting": "cyan",
             "not started": "yellow"}.get(summary["state"], "red")
    table.add_row("state", f"[{style}]{summary['state']}[/{style}]")
    if summary.get("phase"):
        table.add_row("phase", summary["phase"] + (f": {summary['progress']}" if summary.get("progress") else ""))
    step = summary["step"]
    table.add_row("step", f"{_fmt(step)} / {_fmt(summary['max_steps'])}")
    table.add_row("loss", _fmt(summary["loss"], ".4f"))
    table.add_row("val loss", _fmt(summary["val_loss"], ".4f") + (f" ({summary['val_bpb']:.4f} bits/byte)" if summary.get("val_bpb") is not None else ""))
    for source, scores in (summary.get("val_sources") or {}).items():
        table.add_row(f"val loss {source}", _fmt(scores.get("loss"), ".4f") + (f" ({scores['bpb']:.4f} bits/byte)" if scores.get("bpb") is not None else ""))
    table.add_row("tokens/s", _fmt(summary["tokens_per_sec"], ",.0f"))
    table.add_row("elapsed", _duration(summary["elapsed_s"]))
    table.add_row("ETA", _duration(summary["eta_s"]))
    table.add_row("$/hour", _fmt(summary["hourly_rate"], ".2f"))
    table.add_row("$ spent", _fmt(summary["cost_spent"], ".4f"))
    table.add_row("$ projected", _fmt(summary["cost_projected"], ".4f") + (f" (max {summary['max_cost']:.2f})" if summary.get("max_cost") else ""))
    if summary.get("boxes"):
        table.add_row("boxes", f"{len(summary['boxes'])} ({summary.get('interruptions') or 0} interruption(s)), "
                               f"${summary['spend_total']:.4f} spent across them")
    if summary.get("age_s") is not None:
        table.add_row("updated", f"{summary['age_s']:.0f} s ago")
    if summary.get("report"):
        table.add_row("report card", summary["report"] + " (launcher fetch-checkpoint brings it)")
    if summary.get("store_health"):
        table.add_row("store", store_health_line(summary["store_health"]))
    if summary.get("stderr_tail"):
        table.add_row("last errors", summary["stderr_tail"])
    return table


def store_health_line(health: dict) -> str:
    """The agent's uploads in one line: when the last one worked, what waits and why (at the end: what is not stored)."""
    last = health.get("last_upload")
    parts = [f"last upload {time.time() - last:.0f} s ago" if last else "nothing uploaded yet"]
    waiting = [*health.get("waiting_checkpoints", []), *health.get("waiting_files", [])]
    if waiting:
        listed = ", ".join(waiting[:6]) + (f" and {len(waiting) - 6} more" if len(waiting) > 6 else "")
        parts.append(f"{'NOT stored' if health.get('ended') else 'waiting'}: {len(waiting)} ({listed})")
    elif health.get("ended"):
        parts.append("everything stored")
    if health.get("last_error"):
        parts.append(f"last error: {health['last_error'][:300]}")
    text = "; ".join(parts)
    return f"[red]{escape(text)}[/red]" if waiting and (health.get("ended") or health.get("last_error")) else escape(text)


def collect(config, state: dict, root: Path, console: Optional[Console] = None) -> dict:
    name = run_name(config, state)
    instance = state.get("instance")
    rate = config.budget.hourly_rate
    if instance and config.box.kind in RENTED_KINDS:
        import launcher.providers as providers

        if providers.is_unconfirmed(instance):  # one look by name: found, it is recorded; else the check command
            instance = providers.reconcile_unconfirmed(instance, config, console, window_s=0,
                                                       on_found=lambda found: update_state(root, instance=found))
            state = {**state, "instance": instance}
        recorded = instance
        try:
            live = providers.describe(config, instance["id"])
            instance = live.to_dict() if live is not None else {**instance, "state": "gone"}
        except Exception as exc:  # the provider's API being down must not hide the run's status
            instance = {**instance, "state": f"unknown ({exc})"}
        if instance.get("hourly_price") is not None:
            rate = instance["hourly_price"]
        if not state.get("box") and not recorded.get("ssh_host"):  # rented, never reachable: no run to read
            price = f", ${instance['hourly_price']}/h" if instance.get("hourly_price") is not None else ""
            raise UserError(f"{providers.recorded_what(recorded)} is {instance.get('state')}{price} and has no SSH address "
                            "recorded yet, so no run is on it; while it exists it bills: `launcher up` uses it once it runs, "
                            f"`launcher down` terminates it (or {providers.manual_terminate_command(recorded)})")
    multiplexer = (state.get("run") or {}).get("multiplexer") or "tmux"
    if config.box.kind in RENTED_KINDS and not instance and not state.get("box"):
        # no box now (a managed run between boxes, or ended): the stored copy and the spend ledger tell the story
        data = read_run_from_store(config, root, name)
        if data.get("status") is None:
            raise UserError(f"no {config.box.kind} box is recorded for this project and the store {config.storage.url} has no "
                            f"status for run {name!r}: run `launcher up` (or `launcher run --managed`) to start one.")
        return {**summarize("no box (none rented now)", name, data, None, rate), **spend_summary(config, root, name, console)}
    box = box_for_command(config, state, root)
    try:
        data = read_run(box, name, multiplexer)
        label = box.label
    except (BoxUnreachable, ConnectionLost) as exc:
        try:
            data = read_run_from_store(config, root, name)
        except Exception as store_exc:  # the box's error is the one to act on first
            raise BoxUnreachable(f"{exc} (the stored copy in {config.storage.url} could not be read either: {store_exc})") from None
        if data.get("status") is None:
            raise BoxUnreachable(f"{exc} (and the store {config.storage.url} has no status for run {name!r})") from None
        if console is not None:
            console.print(f"[yellow]{exc}[/yellow]\n[yellow]showing the STORED copy of the run instead[/yellow]", highlight=False)
        label = f"{box.label} (unreachable)"
    finally:
        box.close()
    return {**summarize(label, name, data, instance, rate), **spend_summary(config, root, name, console)}


def spend_summary(config, root: Path, name: str, console: Optional[Console] = None) -> dict:
    """``boxes``, ``interruptions``, ``spend_total`` from the store's spend ledger (launcher/managed/spend.py)."""
    from launcher.managed.spend import SpendLedger
    from launcher.store.factory import open_store

    try:
        spend = SpendLedger(open_store(config.storage, root), name).read()
    except Exception as exc:  # the store being unreachable must not hide the run's status
        if console is not None:
            console.print(f"[yellow]the spend ledger could not be read: {exc}[/yellow]", highlight=False)
        return {"boxes": [], "interruptions": 0, "spend_total": None}
    now = time.time()
    return {"boxes": [box.to_status(now) for box in spend.boxes], "interruptions": spend.interruptions,
            "spend_total": spend.total(now) if spend.boxes else None}


@click.command("status")
@click.option("--config", "config_path", default=None, help="Launcher config (default: the recorded one).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@click.option("--all", "account_wide", is_flag=True, help="List every instance on every configured provider account, "
              "with its $/h and the run that owns it; orphans are flagged (`launcher down --orphans` ends them).")
def command(config_path: Optional[str], as_json: bool, account_wide: bool) -> None:
    """Box, run, training state, step, loss, tokens/s, ETA and money."""
    root = Path.cwd()
    config, config_path, state = load_command_context(root, config_path)
    console = make_console(stderr=True)
    if account_wide:
        show_account(config, root, state, as_json)
        return
    summary = collect(config, state, root, console)
    if as_json:
        click.echo(json.dumps(typed(summary), sort_keys=True))
    else:
        make_console().print(render(summary))


def show_account(config, root: Path, state: dict, as_json: bool) -> list:
    """``status --all``: every instance on every configured account; returns the rows."""
    from launcher.managed.account import watch

    rows, notes = watch(config, root, state)
    if as_json:
        click.echo(json.dumps({"instances": [r.to_json() for r in rows], "notes": notes}, sort_keys=True))
        return rows
    table = Table(title="instances on the configured provider accounts")
    for column in ("provider", "id", "name", "state", "$/h", "run", ""):
        table.add_column(column)
    for r in rows:
        i = r.instance
        table.add_row(i.provider, i.id, i.name or "-", i.raw_state or i.state, _fmt(i.hourly_price, ".3f"),
                      r.run or "(not the launcher's)", "[red]ORPHAN[/red]" if r.orphan else "")
    console = make_console()
    console.print(table)
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    orphans = [r for r in rows if r.orphan]
    total = sum(r.instance.hourly_price or 0.0 for r in rows)
    console.print(f"{len(rows)} instance(s), ${total:.3f}/h together; {len(orphans)} orphan(s)"
                  + (": no run records them; `launcher down --orphans` ends them" if orphans else ""), highlight=False)
    return rows
