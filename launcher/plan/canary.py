"""After the benchmark stage of ``launcher run``: the throughput ledger's record, and the canary.

``after_benchmark`` reads the run's throughput.json (the trainer's JSON result), appends one
record to the throughput ledger in the store (launcher/plan/ledger.py; a store that refuses is
a warning, never a failed run), and, on a box ``launcher up`` chose by the plan, compares the
measured speed with the plan's figure once:

- below ``SLOW_RATIO`` (0.8) x the planned tokens/s (per GPU, so a one-process benchmark on a
  multi-GPU box compares fairly) the shortfall is printed in ``run``'s output;
- with ``box.release_slow_hosts: true`` the box is then released through its provider (and
  confirmed gone), its host avoided by later plans (.launcher/avoided_hosts.json), and the
  next offer of a fresh plan rented within ``budget.max_cost`` (``launcher up``'s own flow); the
  run stops there, saying so, and `launcher run` again continues on the new box.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from launcher.plan.ledger import append_throughput, measured_processes, throughput_record
from launcher.plan.slow_hosts import avoid
from launcher.run.context import RunContext
from launcher.state import load_state, update_state
from runcontract.errors import UserError
from runcontract.run_files import Throughput
from runcontract.run_folder import THROUGHPUT_FILE

SLOW_RATIO = 0.8


class SlowHostReplaced(UserError):
    """The canary released a slow box and rented the next offer: `launcher run` again continues on the new box
    (the stage runner lets it through as "released as slow")."""


def slow_verdict(promise: dict[str, Any], record: dict[str, Any], box_gpus: int) -> Optional[str]:
    """The canary's report when the box measured under SLOW_RATIO x the plan's speed (None: fast enough)."""
    planned = promise.get("tokens_per_second")
    if not isinstance(planned, (int, float)) or planned <= 0:
        return None
    measured_per_gpu = record["tokens_per_second"] / max(1, record["gpu_count"])
    planned_per_gpu = planned / max(1, box_gpus)
    if measured_per_gpu >= SLOW_RATIO * planned_per_gpu:
        return None
    return (f"canary: the benchmark measured {measured_per_gpu:,.0f} tokens/s per GPU, {measured_per_gpu / planned_per_gpu:.0%} "
            f"of the {planned_per_gpu:,.0f} the plan expected ({promise.get('tokens_per_second_source', '?')}) for offer "
            f"{promise.get('offer_id')}: this host is slow (under {SLOW_RATIO:.0%})")


def after_benchmark(ctx: RunContext) -> Optional[str]:
    """Ledger the benchmark, run the canary; returns a line for the stage's summary (None: nothing to add)."""
    path = f"{ctx.run_dir}/{THROUGHPUT_FILE}"
    try:
        throughput = Throughput.parse(ctx.box.get_file(path) or b"", path)
    except UserError as err:  # the cost stage reports an unreadable result; the ledger just goes without it
        ctx.console.print(f"[yellow]the throughput ledger was not updated ({err})[/yellow]", highlight=False)
        return None
    state = load_state(ctx.project_root)
    instance = state.get("instance") or {}
    promise = state.get("plan") or {}
    rented_at = promise.get("rented_at")
    record = throughput_record(
        throughput, provider=instance.get("provider") or ctx.box.kind,
        host=promise.get("host") or instance.get("ssh_host") or ctx.box.label, instance_id=instance.get("id"),
        run=ctx.run_name, setup_seconds=time.time() - rented_at if isinstance(rented_at, (int, float)) else None)
    note = _append(ctx, record)
    if not promise or promise.get("canary") or promise.get("offer_id") is None:
        return note
    box_gpus = int(instance.get("gpu_count") or ctx.config.run.gpu_count or 1)
    verdict = slow_verdict(promise, record, box_gpus)
    update_state(ctx.project_root, plan={**promise, "canary": verdict or "ok", "measured_tokens_per_second": record["tokens_per_second"],
                                         "measured_gpu_count": measured_processes(throughput)})
    if verdict is None:
        return note
    ctx.console.print(f"[bold yellow]{verdict}[/bold yellow]", highlight=False, soft_wrap=True)
    if ctx.config.box.release_slow_hosts:
        _release_and_rent_next(ctx, state, promise, verdict)
    ctx.console.print("box.release_slow_hosts is off: training goes on here. `launcher down` and `launcher up` rent "
                      "another offer; set it to true to do that automatically.", highlight=False, soft_wrap=True)
    return note


def _append(ctx: RunContext, record: dict[str, Any]) -> Optional[str]:
    from launcher.store.factory import open_store

    try:
        append_throughput(open_store(ctx.config.storage, ctx.project_root), record)
    except UserError as err:
        ctx.console.print(f"[yellow]the throughput ledger was not updated ({err}); the run goes on[/yellow]", highlight=False)
        return None
    return f"{record['tokens_per_second']:,.0f} tokens/s on {record['gpu_count']}x {record['gpu_name']} added to the throughput ledger"


def _release_and_rent_next(ctx: RunContext, state: dict, promise: dict, verdict: str) -> None:
    import launcher.providers as providers
    from launcher.plan.rent import choose_and_rent
    from launcher.config import load_launcher_config

    instance = state.get("instance") or {}
    host = promise.get("host")
    if host:
        avoid(ctx.project_root, str(host), verdict)
    if instance.get("provider") in ("runpod", "vastai"):
        ctx.console.print(f"releasing {providers.PROVIDER_NAMES[instance['provider']]} instance {instance['id']} "
                          "(box.release_slow_hosts) ...", highlight=False)
        providers.terminate_recorded(instance, ctx.config)  # raises with the manual command if not confirmed
        released = f"{providers.PROVIDER_NAMES[instance['provider']]} confirmed instance {instance['id']} is gone: billing stopped"
    else:
        released = f"{instance.get('id') or ctx.box.label} is not a rental: left running, and avoided"
    update_state(ctx.project_root, instance=None, box=None, run=None, plan=None)
    plan_config = load_launcher_config(ctx.config_path)
    new_config, _ = choose_and_rent(plan_config, ctx.config_path, ctx.project_root, ctx.console, True, None)
    new = load_state(ctx.project_root).get("instance") or {}
    raise SlowHostReplaced(
        f"{verdict}. {released}; rented the next offer within budget.max_cost: {new.get('provider')} instance "
        f"{new.get('id')} ({new_config.run.gpu_count}x {new.get('gpu_name')}). Run `launcher run` again to continue there.")
