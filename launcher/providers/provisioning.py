"""The money-safe flow around a provider: rent, record, wait, check the price, recover, terminate.

    provision(config, console, assume_yes, on_created)  -> Instance   (``launcher up``)
    rent_offer(config, provider, offer, ...)            -> Instance   (``launcher up`` renting the plan's pick)
    describe(config, instance_id)                       -> Instance | None  (``launcher status``)
    reconcile_unconfirmed(record, config, console)      -> dict  (``up``, ``status``, ``down`` on an unconfirmed record)
    record_mismatch(config, record)                     -> str | None  (every command, via state)
    terminate_recorded(record, config)                                    (``launcher down``, a failed ``up``)
    terminate_by_id(kind, instance_id, api_base)                          (the on-box agent)

Money rules, all enforced here rather than in the thin clients:
- Before renting: the offers (GPU, $/h, location) and the projected cost are shown and
  confirmed, unless ``--yes``; a non-interactive stdin without ``--yes`` is refused.
- ``on_created`` runs right after the provider acknowledged the rental, before any waiting,
  so the caller records the instance in local state: no code path leaves a paid instance
  unknown to the launcher. Every create carries a unique name (``llm-box-<run>-<6 hex>``,
  RunPod's pod name, Vast's label). A create that may have made something without saying
  so (5xx, 408, timeout, dropped connection, Ctrl-C) is recorded at once as UNCONFIRMED
  (provider, API, name, time of the create; no id), then looked up by that name for
  ``box.lost_create_search_s`` with backoff, since instance lists lag the creates: what is
  found is recorded and terminated. Absence is never concluded from a list: neither provider
  can prove that a name was never used (a list that lacks it may only be behind), so when the
  search ends without it the record stays unconfirmed and the error says "could not confirm
  whether an instance was created: check <the provider's command>; `launcher down` looks
  again". ``launcher up``, ``status`` and ``down`` look by the name again before anything
  else (``reconcile_unconfirmed``); ``up`` never rents a second box over such a record, and
  only ``launcher down --forget-unconfirmed`` (the user has checked) drops it unfound.
  A create that failed but named its instance (Vast ``success: false`` with
  ``new_contract``) is recorded and destroyed.
- One teardown rule: an instance is terminated through the provider (kind and API base)
  recorded with it in ``.launcher/state.json``, never through whatever the current config
  names; a config whose box kind or API differs from the record is an error naming both.
- If anything fails (or Ctrl-C) between the rental and a reachable SSH port, the instance is
  terminated and its disappearance confirmed; if that cannot be confirmed the error names
  the instance id and the exact commands that stop the charges.
- Offer prices are the prices the bill shows: RunPod's ``cloud`` is always explicit (with
  ``cloud_type: ALL`` both clouds are priced and the cheaper is rented, and the output says
  which), Vast's search includes the rented disk (``allocated_storage``).
- The returned ``Instance.hourly_price`` is the LIVE price the provider reports for the
  instance after creation (catalog prices lag the market). ``max_price`` is checked on the
  first poll that reports a price, and an instance above it is terminated at once.
- ``terminate`` confirms with the provider that the instance is gone (404 / terminated),
  retrying on HTTP 429 and transient errors, and raises with the manual command otherwise.
"""
from __future__ import annotations

import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from launcher.config import RENTED_KINDS, LauncherConfig, RunpodConfig, VastaiConfig
from launcher.providers.base import (
    STOPPED, TERMINATED, UNCONFIRMED, CreatedButFailed, Instance, Offer, Provider, ProviderError, ProvisionError,
    TransientProviderError,
)
from launcher.providers.offer_view import cloud_choice, money, offers_table, projection_lines
from launcher.providers.registry import (
    KIND_OF_PROVIDER, PROVIDER_NAMES, make_provider, manual_terminate_command, provider_config, recorded_provider_config,
    recorded_what, rented_provider,
)
from launcher.providers.static import static_instance
from runcontract.errors import UserError

# the longest wait between two looks for a lost create (the first is poll_interval_s, then doubling)
SEARCH_MAX_WAIT_S = 60.0


def record_mismatch(config: LauncherConfig, record: Optional[dict], config_label: str = "the config",
                    teardown: bool = False) -> Optional[str]:
    """Why ``config`` must not act on the recorded instance (None when it may).

    The record wins for teardown, so a config that names another box kind or another API
    than the one the instance was rented through is refused rather than obeyed.
    """
    if not record or not record.get("provider"):
        return None
    from launcher.plan.candidates import resolve_for_record

    config = resolve_for_record(config, record)  # a candidates config takes the recorded box's kind
    recorded_kind = KIND_OF_PROVIDER.get(record["provider"], record["provider"])
    what = recorded_what(record)
    remedy = ("Use the config it was rented with (`launcher down` without --config uses the recorded one)"
              + (f", or stop it yourself with {manual_terminate_command(record)}" if recorded_kind in RENTED_KINDS else "")
              if teardown else
              "Use the config it was rented with (run the command without --config to use the recorded one), "
              "or take it down first with `launcher down`")
    if config.box.kind != recorded_kind:
        return (f"{config_label} says box.kind: {config.box.kind}, but this project's recorded box is {what} "
                f"(box.kind: {recorded_kind}). {remedy}.")
    if recorded_kind in RENTED_KINDS and record.get("api_base"):
        configured = provider_config(config).api_base
        if configured.rstrip("/") != str(record["api_base"]).rstrip("/"):
            return (f"{config_label} says box.{recorded_kind}.api_base: {configured}, but {what} was rented through "
                    f"{record['api_base']}. {remedy}.")
    return None


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
                     console: Optional[Console] = None, sleep: Callable[[float], None] = time.sleep,
                     on_poll: Optional[Callable[[Instance], None]] = None) -> Instance:
    """Poll until the instance runs with a public SSH endpoint; raise ProviderError otherwise.

    ``on_poll`` sees every answer first (the live-price check), and may raise to stop waiting.
    """
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
            if on_poll is not None:
                on_poll(current)
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
def unique_name(config: LauncherConfig) -> str:
    """The name/label a create carries, unique per create so a lost answer can be looked up."""
    return f"llm-box-{config.run.name}-{secrets.token_hex(3)}"


def provision(config: LauncherConfig, console: Console, assume_yes: bool,
              on_created: Callable[[Instance], None] | None = None,
              pick_offer: Callable[[list[Offer]], Optional[Offer]] | None = None,
              name: Optional[str] = None) -> Instance:
    """Rent (or, for ``box.kind: ssh``, describe) the box; see the module docstring for the rules.

    ``pick_offer`` chooses among the offers (cheapest first); default the cheapest. A managed
    run passes launcher.managed.choice's, which avoids hosts that failed it. ``name``: the
    create's unique name when the caller chose (and recorded) it first; else a new one."""
    kind = config.box.kind
    record = on_created or (lambda instance: None)
    if kind == "ssh":
        instance = static_instance(config)
        record(instance)
        return instance
    provider = make_provider(config)
    pcfg = provider_config(config)
    public_key = read_public_key(config.box.identity_file)  # fail before anything is rented
    offers = provider.offers(limit=getattr(pcfg, "offers_shown", 5))
    if not offers:
        ceiling = f" at or below ${pcfg.max_price}/h" if pcfg.max_price else ""
        raise UserError(f"no {PROVIDER_NAMES[kind]} offer matches the config{ceiling}: relax box.{kind} (GPU, reliability, disk, "
                        "max_price, cloud_type) or try later")
    offer = pick_offer(offers) if pick_offer is not None else offers[0]
    if offer is None:
        raise UserError(f"no {PROVIDER_NAMES[kind]} offer is left once the hosts that failed this run are avoided: "
                        f"relax box.{kind} (GPU, reliability, max_price) or try later")
    if pcfg.max_price is not None and offer.hourly_price is not None and offer.hourly_price > pcfg.max_price:
        raise UserError(f"the cheapest {PROVIDER_NAMES[kind]} offer costs {money(offer.hourly_price)}/h, above box.{kind}.max_price ${pcfg.max_price}/h")
    console.print(offers_table(offers, f"{PROVIDER_NAMES[kind]} offers (prices as billed, cheapest first)"))
    console.print(f"Renting #{offers.index(offer) + 1}: {offer.gpu_count}x {offer.gpu_name}, {money(offer.hourly_price)}/h, "
                  f"{offer.location or 'location chosen by the provider'}{cloud_choice(offers, offer)}")
    for line in projection_lines(config, offer.hourly_price):
        console.print(line)
    return rent_offer(config, provider, offer, public_key, console, assume_yes, record, name)


def rent_offer(config: LauncherConfig, provider: Provider, offer: Offer, public_key: str, console: Console,
               assume_yes: bool, record: Callable[[Instance], None], name: Optional[str] = None) -> Instance:
    """Confirm, rent ``offer`` (recorded through ``record`` the moment it exists), wait for SSH, check the live
    price; whatever fails after the create terminates the instance (``provision``'s rules). ``config.box.kind``
    names the provider and its settings (``launcher up`` with candidates passes the chosen candidate's).
    ``name``: the create's unique name when the caller chose (and recorded) it first; else a new one."""
    kind = config.box.kind
    pcfg = provider_config(config)
    console.print("Charges run from now until `launcher down` (or the agent's budget/idle shutdown).")
    _confirm(console, f"Rent this {PROVIDER_NAMES[kind]} machine?", assume_yes)

    name = name or unique_name(config)
    created_at = time.time()
    try:
        instance = provider.create(offer, public_key, name)
    except CreatedButFailed as err:  # it exists and bills although the create "failed"
        orphan = Instance(id=err.instance_id, provider=kind, ssh_user=pcfg.ssh_user, name=name, api_base=pcfg.api_base,
                          created_at=created_at)
        record(orphan)
        _abandon(provider, kind, err.instance_id, pcfg, console, str(err), err)
        raise  # unreachable: _abandon always raises
    except ProviderError as err:
        if not err.may_have_created:
            raise
        _recover_unknown_create(provider, kind, name, created_at, config, console, record, str(err), err)
        raise  # unreachable
    except KeyboardInterrupt as err:
        _recover_unknown_create(provider, kind, name, created_at, config, console, record, "interrupted during the create", err)
        raise  # unreachable
    instance.created_at = created_at
    instance.ssh_user = pcfg.ssh_user
    instance.name = instance.name or name
    instance.api_base = pcfg.api_base
    instance.location = instance.location or offer.location
    try:
        record(instance)
        console.print(f"Rented {PROVIDER_NAMES[kind]} instance {instance.id} ({name}); waiting for it to run with SSH reachable "
                      f"(up to {pcfg.ready_timeout_s:.0f}s)")
        provider.after_create(instance.id, public_key)
        seen_price: list[float] = []

        def check_live_price(current: Instance) -> None:
            # the first answer with a price decides: over max_price means terminate now, not after SSH
            if current.hourly_price is None or seen_price:
                return
            seen_price.append(current.hourly_price)
            if pcfg.max_price is not None and current.hourly_price > pcfg.max_price:
                raise ProviderError(f"the live price {money(current.hourly_price)}/h is above box.{kind}.max_price ${pcfg.max_price}/h")
            if offer.hourly_price is not None and abs(current.hourly_price - offer.hourly_price) > 1e-6:
                console.print(f"Live price {money(current.hourly_price)}/h (the offer said {money(offer.hourly_price)}/h)")

        ready = wait_until_ready(provider, instance.id, pcfg.ready_timeout_s, pcfg.poll_interval_s, console,
                                 on_poll=check_live_price)
        if ready.hourly_price is None:
            console.print(f"[yellow]{PROVIDER_NAMES[kind]} reported no live price; using the offer's {money(offer.hourly_price)}/h[/yellow]")
            ready.hourly_price = offer.hourly_price
        ready.gpu_name = ready.gpu_name or offer.gpu_name
        ready.gpu_count = ready.gpu_count or offer.gpu_count
        ready.location = ready.location or offer.location
        ready.ssh_user = pcfg.ssh_user
        ready.name = ready.name or name
        ready.api_base = pcfg.api_base
        for line in projection_lines(config, ready.hourly_price):
            console.print(line)
        return ready
    except BaseException as err:  # noqa: BLE001 - Ctrl-C included: never leave a paid box behind
        reason = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
        _abandon(provider, kind, instance.id, pcfg, console, reason, err)
        raise  # unreachable: _abandon always raises


def is_unconfirmed(record: Optional[dict]) -> bool:
    """Whether a recorded instance is a create whose answer was lost and that no list showed yet."""
    return bool(record) and record.get("state") == UNCONFIRMED and not record.get("id")


def unconfirmed_message(kind: str, name: str, created_at: Optional[float], manual_find: str, why: str) -> str:
    """The one paragraph for a create that may or may not have made an instance."""
    when = (datetime.fromtimestamp(created_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            if created_at else "an unknown time")
    return (f"could not confirm whether an instance was created: check {manual_find}; `launcher down` looks again. "
            f"The {PROVIDER_NAMES[kind]} instance named {name!r} may exist and bill (its create was sent at {when}): {why}. "
            "It stays recorded as unconfirmed in .launcher/state.json, and `launcher up`, `status` and `down` look for it "
            "by that name first; once you have checked that none exists, `launcher down --forget-unconfirmed` drops the record")


def search_by_name(provider: Provider, name: str, window_s: float, first_wait_s: float,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[Optional[list[Instance]], int, str]:
    """Look for instances named ``name`` until one is listed or ``window_s`` has passed.

    Waits ``first_wait_s`` after the first look, doubling up to SEARCH_MAX_WAIT_S, and always
    looks once more at the end of the window. Returns (found, looks, last list error): found is
    [] when the lists that could be read lacked it (which proves nothing: lists lag), None when
    no list could be read at all.
    """
    deadline = time.monotonic() + window_s
    found: Optional[list[Instance]] = None
    looks, problem, wait = 0, "", max(first_wait_s, 0.001)
    while True:
        looks += 1
        try:
            found = provider.find_by_name(name)
        except ProviderError as err:
            problem = str(err)
        if found:
            return found, looks, problem
        left = deadline - time.monotonic()
        if left <= 0:
            return found, looks, problem
        sleep(min(wait, left))
        wait = min(wait * 2, SEARCH_MAX_WAIT_S)


def _search_failed(label: str, found: Optional[list[Instance]], looks: int, window_s: float, problem: str) -> str:
    if found is None:
        return f"{label}'s instance list could not be read in {looks} look(s) over {window_s:.0f}s ({problem})"
    return f"{looks} look(s) at {label}'s instance list over {window_s:.0f}s did not show it, and lists lag"


def unconfirmed_instance(kind: str, name: str, pcfg: RunpodConfig | VastaiConfig, created_at: float) -> Instance:
    """The record of a create whose answer was lost: no id, its name, provider, API and time."""
    return Instance(id=None, provider=kind, ssh_user=pcfg.ssh_user, state=UNCONFIRMED, name=name,  # type: ignore[arg-type]
                    api_base=pcfg.api_base, created_at=created_at)


def _recover_unknown_create(provider: Provider, kind: str, name: str, created_at: float, config: LauncherConfig,
                            console: Console, record: Callable[[Instance], None], reason: str,
                            cause: BaseException) -> None:
    """The create may have made an instance without saying so: record that, find it by name, terminate it."""
    label = PROVIDER_NAMES[kind]
    pcfg = provider_config(config)
    window = config.box.lost_create_search_s
    manual = provider.manual_find_command(name)
    record(unconfirmed_instance(kind, name, pcfg, created_at))  # before any waiting
    console.print(f"[yellow]{reason}[/yellow]: the {label} rental may exist anyway (recorded as unconfirmed); looking for "
                  f"instances named {name} for up to {window:.0f}s, since the instance list may lag")
    try:
        found, looks, problem = search_by_name(provider, name, window, pcfg.poll_interval_s)
    except KeyboardInterrupt:
        raise ProvisionError(f"renting failed ({reason}). " + unconfirmed_message(kind, name, created_at, manual,
                                                                                  "the search was interrupted"),
                             instance_id=name, terminated=False) from cause
    if not found:
        raise ProvisionError(
            f"renting failed ({reason}). "
            + unconfirmed_message(kind, name, created_at, manual, _search_failed(label, found, looks, window, problem)),
            instance_id=name, terminated=False,
        ) from cause
    still_running = []
    for instance in found:
        instance.name, instance.api_base, instance.created_at = name, pcfg.api_base, created_at
        record(instance)
        console.print(f"found {label} instance {instance.id} named {name}: terminating it")
        try:
            terminate_and_confirm(provider, instance.id, pcfg.terminate_timeout_s, pcfg.poll_interval_s)
        except (ProviderError, KeyboardInterrupt) as err:
            still_running.append(f"{instance.id} ({err}; {provider.manual_terminate_command(instance.id)})")
    if still_running:
        raise ProvisionError(
            f"renting failed ({reason}); {label} made instance(s) named {name!r} anyway and terminating failed: "
            + "; ".join(still_running) + ". They may still be running: terminate them with `launcher down` or the "
            "commands above to stop charges",
            instance_id=found[-1].id, terminated=False,
        ) from cause
    raise ProvisionError(
        f"renting failed ({reason}); {label} had made instance(s) {', '.join(i.id for i in found)} named {name!r} anyway: "
        "terminated and confirmed gone, so nothing bills",
        instance_id=found[-1].id, terminated=True,
    ) from cause


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
        instance.ssh_user = provider_config(config).ssh_user
    return instance


def reconcile_unconfirmed(record: dict, config: LauncherConfig, console: Optional[Console] = None,
                          window_s: Optional[float] = None,
                          on_found: Optional[Callable[[dict], None]] = None) -> dict:
    """Look again, by its name and through the recorded provider, for an unconfirmed create.

    Found: the record becomes that instance (``on_found`` stores it before anything else) and
    is returned. Not found within ``window_s`` (0: one look; default: what is left of
    ``box.lost_create_search_s`` since the create was sent, so a record older than that gets
    one look): UserError with the check command, the record left as it is.
    """
    problem = record_mismatch(config, record, teardown=True)
    if problem:
        raise UserError(problem)
    kind, name = record["provider"], str(record["name"])
    label = PROVIDER_NAMES[kind]
    cfg = recorded_provider_config(record, config)
    provider = rented_provider(kind, cfg)
    if window_s is None:
        created_at = record.get("created_at")
        window_s = config.box.lost_create_search_s - (time.time() - created_at if created_at else 0.0)
    window = max(0.0, window_s)
    if console is not None:
        console.print(f"{recorded_what(record)} is unconfirmed (its create's answer was lost): looking for it by name"
                      + (f" for up to {window:.0f}s" if window else ""), highlight=False)
    found, looks, problem = search_by_name(provider, name, window, cfg.poll_interval_s)
    if not found:
        raise UserError(unconfirmed_message(kind, name, record.get("created_at"), provider.manual_find_command(name),
                                            _search_failed(label, found, looks, window, problem)))
    listed = found[0]  # a name is used by one create only
    try:
        current = provider.get(listed.id) or listed  # the full view (SSH endpoint, live price)
    except TransientProviderError:
        current = listed
    updated = {**record, **{k: v for k, v in current.to_dict().items() if v is not None},
               "name": name, "api_base": cfg.api_base}
    if on_found is not None:
        on_found(updated)
    if console is not None:
        console.print(f"found {label} instance {updated['id']} named {name} ({updated.get('state')}): it exists and bills",
                      highlight=False)
    return updated


def terminate_recorded(record: dict, config: Optional[LauncherConfig] = None) -> None:
    """Terminate a recorded instance through the provider recorded with it, and confirm it is gone.

    ``config`` only lends the API key variable and timeouts when it names the same provider;
    a mismatch is refused (``record_mismatch``). Raises UserError with the instance id and the
    provider's manual command when the disappearance is not confirmed.
    """
    if record.get("provider") == "static":
        return  # a static host is not ours to stop
    if is_unconfirmed(record):  # callers reconcile first; no id means nothing to terminate by
        raise UserError(f"{recorded_what(record)} has no id to terminate: run `launcher down`, which looks for it first")
    if config is not None:
        problem = record_mismatch(config, record, teardown=True)
        if problem:
            raise UserError(problem)
    cfg = recorded_provider_config(record, config)
    provider = rented_provider(record["provider"], cfg)
    _terminate_or_explain(provider, record["provider"], str(record["id"]), cfg.terminate_timeout_s, cfg.poll_interval_s)


def terminate_by_id(kind: str, instance_id: str, api_base: str | None = None, *,
                    timeout_s: float | None = None, poll_interval_s: float | None = None) -> None:
    """``terminate_recorded`` for the on-box agent: provider defaults, the API key from the environment."""
    if kind not in RENTED_KINDS:
        raise UserError(f"cannot terminate a {kind!r} box by id: only runpod and vastai rentals are terminated")
    cfg = recorded_provider_config({"provider": kind, "id": instance_id, "api_base": api_base}, None)
    provider = rented_provider(kind, cfg)
    _terminate_or_explain(provider, kind, instance_id, timeout_s or cfg.terminate_timeout_s, poll_interval_s or cfg.poll_interval_s)


def _terminate_or_explain(provider: Provider, kind: str, instance_id: str, timeout_s: float, poll_s: float) -> None:
    try:
        terminate_and_confirm(provider, instance_id, timeout_s, poll_s)
    except ProviderError as err:
        raise UserError(_still_running_message(kind, instance_id, provider.manual_terminate_command(instance_id), str(err))) from None
