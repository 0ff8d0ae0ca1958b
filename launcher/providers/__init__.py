"""Who rents the box: RunPod, Vast.ai, or a static SSH host - and the money-safe flow around them.

    provision(config, console, assume_yes, on_created)  -> Instance   (``launcher up``)
    describe(config, instance_id)                       -> Instance | None  (``launcher status``)
    terminate(config, instance_id)                                        (``launcher down``)
    terminate_by_id(kind, instance_id, api_base)                          (the on-box agent)

Money rules, all enforced here rather than in the thin clients:
- Before renting: the offers (GPU, $/h, location) and the projected cost are shown and
  confirmed, unless ``--yes``; a non-interactive stdin without ``--yes`` is refused.
- ``on_created`` runs right after the provider acknowledged the rental, before any waiting,
  so the caller records the instance in local state: no code path leaves a paid instance
  unknown to the launcher.
- If anything fails (or Ctrl-C) between the rental and a reachable SSH port, the instance is
  terminated and its disappearance confirmed; if that cannot be confirmed the error names
  the instance id and the exact commands that stop the charges.
- The returned ``Instance.hourly_price`` is the LIVE price the provider reports for the
  instance after creation (catalog prices lag the market); ``max_price`` is checked on it too.
- ``terminate`` confirms with the provider that the instance is gone (404 / terminated),
  retrying on HTTP 429 and transient errors, and raises with the manual command otherwise.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from rich.console import Console
from rich.table import Table

from launcher.config import LauncherConfig, RunpodConfig, VastaiConfig
from launcher.providers.api_keys import load_api_key
from launcher.providers.base import (
    STOPPED, TERMINATED, Instance, Offer, Provider, ProviderError, ProvisionError,
    TransientProviderError,
)
from launcher.providers.runpod import RunpodProvider
from launcher.providers.static import StaticProvider, static_instance
from launcher.providers.vastai import VastaiProvider
from trainer.errors import UserError

__all__ = [
    "Instance", "Offer", "Provider", "ProviderError", "ProvisionError", "TransientProviderError",
    "provision", "describe", "terminate", "terminate_by_id", "make_provider", "read_public_key",
]

RENTED_KINDS = ("runpod", "vastai")
PROVIDER_NAMES = {"runpod": "RunPod", "vastai": "Vast.ai", "static": "static"}
# Options for every provider's JsonHttpClient (timeout, max_attempts, backoff, max_backoff);
# tests shorten the backoff here.
HTTP_OPTIONS: dict[str, Any] = {}


# -- building a provider ------------------------------------------------------------------
def _provider_config(config: LauncherConfig) -> RunpodConfig | VastaiConfig:
    return config.box.runpod if config.box.kind == "runpod" else config.box.vastai


def make_provider(config: LauncherConfig, **http_options: Any) -> Provider:
    """The provider for ``config.box.kind``; loads the API key (env var, else mode-600 file)."""
    http_options = {**HTTP_OPTIONS, **http_options}
    kind = config.box.kind
    if kind == "ssh":
        return StaticProvider(config)
    if kind == "runpod":
        cfg = config.box.runpod
        return RunpodProvider(cfg, load_api_key("runpod", cfg.api_key_env), **http_options)
    if kind == "vastai":
        cfg = config.box.vastai
        return VastaiProvider(cfg, load_api_key("vastai", cfg.api_key_env), **http_options)
    raise UserError(f"box.kind {kind!r} rents nothing: use runpod or vastai to rent a GPU, or ssh for a host you have")


def read_public_key(identity_file: Optional[str]) -> str:
    """``<identity_file>.pub``, else ~/.ssh/id_ed25519.pub: the key rented boxes are given."""
    private = Path(identity_file).expanduser() if identity_file else Path.home() / ".ssh" / "id_ed25519"
    public = private.with_name(private.name + ".pub")
    try:
        key = public.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UserError(
            f"no SSH public key at {public}: rented boxes are given it for login. Set box.identity_file "
            f"to a private key whose .pub sits next to it, or create one with `ssh-keygen -t ed25519 -f {private}`"
        ) from None
    if not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise UserError(f"{public} does not look like an OpenSSH public key")
    return key


def _still_running_message(kind: str, instance_id: str, manual: str, reason: str) -> str:
    return (
        f"{PROVIDER_NAMES.get(kind, kind)} instance {instance_id} may still be running: terminate it with "
        f"`launcher down` or {manual} to stop charges ({reason})"
    )


# -- showing offers and the projected cost --------------------------------------------------
def _money(value: Optional[float]) -> str:
    return "?" if value is None else f"${value:,.3f}"


def offers_table(offers: list[Offer], title: str) -> Table:
    table = Table(title=title)
    for column in ("#", "GPU", "$/h", "location", "reliability", "disk GB", "note"):
        table.add_column(column, justify="right" if column in ("#", "$/h", "reliability", "disk GB") else "left")
    for i, o in enumerate(offers, 1):
        table.add_row(
            str(i), f"{o.gpu_count}x {o.gpu_name}", _money(o.hourly_price), o.location or "-",
            "-" if o.reliability is None else f"{o.reliability:.3f}", "-" if o.disk_gb is None else f"{o.disk_gb:.0f}",
            o.note or "",
        )
    return table


def _known_run_hours(config: LauncherConfig) -> Optional[float]:
    """Hours the run needs, when a local ``runs/<name>/cost.json`` (from trainer.cost) says so."""
    path = Path("runs") / config.run.name / "cost.json"
    try:
        hours = json.loads(path.read_text()).get("hours")
    except (OSError, ValueError, AttributeError):
        return None
    return float(hours) if isinstance(hours, (int, float)) and hours > 0 else None


def projection_lines(config: LauncherConfig, price: Optional[float]) -> list[str]:
    max_cost = config.budget.max_cost
    if price is None or price <= 0:
        return [f"Budget: ${max_cost:,.2f} (hourly price unknown: the cost gate uses the live price after renting)"]
    lines = [f"Budget: ${max_cost:,.2f} -> at most {max_cost / price:,.1f} h at {_money(price)}/h"]
    hours = _known_run_hours(config)
    if hours is not None:
        cost = hours * price
        verdict = "within budget" if cost <= max_cost else "[bold red]OVER BUDGET[/bold red]"
        lines.append(f"Projected run ({config.run.name}): {hours:,.2f} h -> ${cost:,.2f} ({verdict})")
    else:
        lines.append("Projected run: unknown until the benchmark runs (launcher run measures tokens/s, then gates on cost)")
    return lines


def _confirm(console: Console, question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise UserError("renting costs money and stdin is not a terminal to confirm it: pass --yes to rent without asking")
    from rich.prompt import Confirm

    if not Confirm.ask(question, console=console, default=False):
        raise UserError("not renting: cancelled at the confirmation")


# -- waiting, terminating -------------------------------------------------------------------
def wait_until_ready(provider: Provider, instance_id: str, timeout_s: float, poll_s: float,
                     console: Optional[Console] = None, sleep: Callable[[float], None] = time.sleep) -> Instance:
    """Poll until the instance runs with a public SSH endpoint; raise ProviderError otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Optional[Instance] = None
    last_problem = ""
    shown = None
    while True:
        try:
            current = provider.get(instance_id)
        except TransientProviderError as err:
            current, last_problem = last, str(err)
        else:
            if current is None:
                raise ProviderError(f"instance {instance_id} disappeared while starting (no capacity, preempted or failed)")
            last = current
            if current.ssh_ready:
                return current
            if current.state in (STOPPED, TERMINATED):
                raise ProviderError(f"instance {instance_id} stopped while starting (state {current.raw_state or current.state})")
            status = (current.raw_state or current.state, bool(current.ssh_port))
            if console is not None and status != shown:
                shown = status
                console.print(f"  {instance_id}: {status[0]}" + ("" if status[1] else ", waiting for a public SSH port"))
        if time.monotonic() >= deadline:
            state = "unknown" if last is None else (last.raw_state or last.state)
            port = "no public port for 22 yet" if last is None or not last.ssh_port else "SSH port known"
            extra = f"; last error: {last_problem}" if last_problem else ""
            raise ProviderError(f"instance {instance_id} not ready after {timeout_s:.0f}s (state {state}, {port}){extra}")
        sleep(poll_s)


def terminate_and_confirm(provider: Provider, instance_id: str, timeout_s: float, poll_s: float,
                          sleep: Callable[[float], None] = time.sleep) -> None:
    """Ask the provider to terminate, then poll until it reports the instance gone.

    Transient failures (429, 5xx, connection errors after the HTTP layer's own retries) are
    retried until ``timeout_s``; the terminate request is repeated while the instance lingers.
    Raises ProviderError when the disappearance cannot be confirmed in time.
    """
    deadline = time.monotonic() + timeout_s
    requested = False
    polls = 0
    last_problem = ""
    while True:
        try:
            if not requested or polls % 5 == 4:
                try:
                    provider.terminate(instance_id)
                except ProviderError as err:
                    if isinstance(err, TransientProviderError):
                        raise
                    if provider.get(instance_id) is None:  # e.g. GraphQL "pod not found": already gone
                        return
                    raise
                requested = True
            current = provider.get(instance_id)
            if current is None or current.state == TERMINATED:
                return
            last_problem = f"still reported as {current.raw_state or current.state}"
        except TransientProviderError as err:
            last_problem = str(err)
        polls += 1
        if time.monotonic() >= deadline:
            raise ProviderError(f"could not confirm that instance {instance_id} is gone within {timeout_s:.0f}s: {last_problem}")
        sleep(poll_s)


# -- the public entry points -----------------------------------------------------------------
def provision(config: LauncherConfig, console: Console, assume_yes: bool,
              on_created: Callable[[Instance], None] | None = None) -> Instance:
    """Rent (or, for ``box.kind: ssh``, describe) the box; see the module docstring for the rules."""
    kind = config.box.kind
    if kind == "ssh":
        instance = static_instance(config)
        if on_created is not None:
            on_created(instance)
        return instance
    provider = make_provider(config)
    pcfg = _provider_config(config)
    public_key = read_public_key(config.box.identity_file)  # fail before anything is rented
    shown = getattr(pcfg, "offers_shown", 5)
    offers = provider.offers(limit=shown)
    if not offers:
        ceiling = f" at or below ${pcfg.max_price}/h" if pcfg.max_price else ""
        raise UserError(f"no {PROVIDER_NAMES[kind]} offer matches the config{ceiling}: relax box.{kind} (GPU, reliability, disk, max_price) or try later")
    offer = offers[0]
    if pcfg.max_price is not None and offer.hourly_price is not None and offer.hourly_price > pcfg.max_price:
        raise UserError(f"the cheapest {PROVIDER_NAMES[kind]} offer costs {_money(offer.hourly_price)}/h, above box.{kind}.max_price ${pcfg.max_price}/h")
    console.print(offers_table(offers, f"{PROVIDER_NAMES[kind]} offers (catalog prices, cheapest first)"))
    console.print(f"Renting #1: {offer.gpu_count}x {offer.gpu_name}, {_money(offer.hourly_price)}/h, {offer.location or 'location chosen by the provider'}")
    for line in projection_lines(config, offer.hourly_price):
        console.print(line)
    console.print("Charges run from now until `launcher down` (or the agent's budget/idle shutdown).")
    _confirm(console, f"Rent this {PROVIDER_NAMES[kind]} machine?", assume_yes)

    name = f"llm-box-{config.run.name}"
    try:
        instance = provider.create(offer, public_key, name)
    except TransientProviderError as err:
        raise UserError(
            f"{err}. The rental may or may not exist: look for a machine labelled {name!r} in the "
            f"{PROVIDER_NAMES[kind]} console and terminate it there if so"
        ) from None
    except KeyboardInterrupt:
        raise UserError(
            f"interrupted while {PROVIDER_NAMES[kind]} was creating the rental: look for a machine labelled {name!r} "
            f"in the {PROVIDER_NAMES[kind]} console and terminate it there if it exists"
        ) from None
    instance.ssh_user = pcfg.ssh_user
    try:
        if on_created is not None:
            on_created(instance)
        console.print(f"Rented {PROVIDER_NAMES[kind]} instance {instance.id}; waiting for it to run with SSH reachable "
                      f"(up to {pcfg.ready_timeout_s:.0f}s)")
        provider.after_create(instance.id, public_key)
        ready = wait_until_ready(provider, instance.id, pcfg.ready_timeout_s, pcfg.poll_interval_s, console)
        if ready.hourly_price is None:
            console.print(f"[yellow]{PROVIDER_NAMES[kind]} reported no live price; using the catalog price {_money(offer.hourly_price)}/h[/yellow]")
            ready.hourly_price = offer.hourly_price
        elif offer.hourly_price is not None and abs(ready.hourly_price - offer.hourly_price) > 1e-6:
            console.print(f"Live price {_money(ready.hourly_price)}/h (catalog said {_money(offer.hourly_price)}/h)")
        if pcfg.max_price is not None and ready.hourly_price is not None and ready.hourly_price > pcfg.max_price:
            raise ProviderError(f"the live price {_money(ready.hourly_price)}/h is above box.{kind}.max_price ${pcfg.max_price}/h")
        ready.gpu_name = ready.gpu_name or offer.gpu_name
        ready.gpu_count = ready.gpu_count or offer.gpu_count
        ready.location = ready.location or offer.location
        ready.ssh_user = pcfg.ssh_user
        for line in projection_lines(config, ready.hourly_price):
            console.print(line)
        return ready
    except BaseException as err:  # noqa: BLE001 - Ctrl-C included: never leave a paid box behind
        reason = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
        _abandon(provider, kind, instance.id, pcfg, console, reason, err)
        raise  # unreachable: _abandon always raises


def _abandon(provider: Provider, kind: str, instance_id: str, pcfg: RunpodConfig | VastaiConfig,
             console: Console, reason: str, cause: BaseException) -> None:
    console.print(f"[red]{reason}[/red]: terminating {PROVIDER_NAMES[kind]} instance {instance_id} so it stops billing")
    try:
        terminate_and_confirm(provider, instance_id, pcfg.terminate_timeout_s, pcfg.poll_interval_s)
    except (ProviderError, KeyboardInterrupt) as err:
        problem = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
        raise ProvisionError(
            f"renting failed ({reason}) and terminating failed too ({problem}). "
            + _still_running_message(kind, instance_id, provider.manual_terminate_command(instance_id), "not confirmed gone"),
            instance_id=instance_id, terminated=False,
        ) from cause
    raise ProvisionError(
        f"renting failed ({reason}); {PROVIDER_NAMES[kind]} instance {instance_id} was terminated and is confirmed gone, "
        f"so it no longer bills",
        instance_id=instance_id, terminated=True,
    ) from cause


def describe(config: LauncherConfig, instance_id: str) -> Optional[Instance]:
    """The instance as the provider sees it now (state, live $/h); None once it is gone."""
    if config.box.kind == "ssh":
        return static_instance(config)
    provider = make_provider(config)
    instance = provider.get(instance_id)
    if instance is not None:
        instance.ssh_user = _provider_config(config).ssh_user
    return instance


def terminate(config: LauncherConfig, instance_id: str) -> None:
    """Terminate and confirm it is gone; UserError with the id and manual command if not confirmed."""
    if config.box.kind == "ssh":
        return  # a static host is not ours to stop
    provider = make_provider(config)
    pcfg = _provider_config(config)
    _terminate_or_explain(provider, config.box.kind, instance_id, pcfg.terminate_timeout_s, pcfg.poll_interval_s)


def terminate_by_id(kind: str, instance_id: str, api_base: str | None = None, *,
                    timeout_s: float | None = None, poll_interval_s: float | None = None) -> None:
    """``terminate`` for the on-box agent: provider defaults, the API key from the environment."""
    if kind == "runpod":
        cfg: RunpodConfig | VastaiConfig = RunpodConfig(**({"api_base": api_base} if api_base else {}))
        provider: Provider = RunpodProvider(cfg, load_api_key("runpod", cfg.api_key_env), **HTTP_OPTIONS)
    elif kind == "vastai":
        cfg = VastaiConfig(**({"api_base": api_base} if api_base else {}))
        provider = VastaiProvider(cfg, load_api_key("vastai", cfg.api_key_env), **HTTP_OPTIONS)
    else:
        raise UserError(f"cannot terminate a {kind!r} box by id: only runpod and vastai rentals are terminated")
    _terminate_or_explain(provider, kind, instance_id, timeout_s or cfg.terminate_timeout_s, poll_interval_s or cfg.poll_interval_s)


def _terminate_or_explain(provider: Provider, kind: str, instance_id: str, timeout_s: float, poll_s: float) -> None:
    try:
        terminate_and_confirm(provider, instance_id, timeout_s, poll_s)
    except ProviderError as err:
        raise UserError(_still_running_message(kind, instance_id, provider.manual_terminate_command(instance_id), str(err))) from None
