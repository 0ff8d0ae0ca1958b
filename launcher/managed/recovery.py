"""Recovery: end the old box through the provider recorded with it, then rent the next one.

Ending is the same teardown ``launcher down`` does (``terminate_recorded``: through the recorded
provider and API, confirmed gone, the manual command when it cannot be confirmed). An outbid
Vast interruptible instance is ``stopped``, not gone, and its disk still bills: it is
destroyed like any other. Only once the provider confirmed it gone is its spend closed in the
ledger and the instance dropped from the local state; the host is remembered so the next
offer avoids it. Renting the next box is ``launcher up``'s own path (``bring_up``) with the
managed choice of offer (choice.py), recorded the moment the provider acknowledges it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from launcher.managed.choice import host_key
from launcher.managed.spend import SpendLedger
from launcher.state import load_state, update_state


def end_box(root: Path, config, instance: dict, ledger: SpendLedger, reason: str, console: Console,
            avoid_host: bool) -> None:
    """Terminate ``instance`` through its recorded provider, close its ledger entry, forget it locally."""
    import launcher.providers as providers

    name = providers.PROVIDER_NAMES.get(instance.get("provider"), instance.get("provider"))
    console.print(f"managed: ending {name} instance {instance['id']} ({reason})", highlight=False)
    providers.terminate_recorded(instance, config)  # raises, with the manual command, unless confirmed gone
    end = time.time()
    ledger.ended(instance["provider"], instance["id"], float(instance.get("hourly_price") or 0.0),
                 float(instance.get("rented_at") or end), end, reason)
    console.print(f"managed: {name} confirmed instance {instance['id']} is gone: billing stopped", highlight=False)
    managed = dict(load_state(root).get("managed") or {})
    host = host_key(instance.get("location"))
    if avoid_host and host and host not in managed.get("avoid_hosts", []):
        managed["avoid_hosts"] = [*managed.get("avoid_hosts", []), host]
    managed.update(started_on=None, ssh_down_since=None)
    update_state(root, instance=None, box=None, run=None, managed=managed)


def rent_next(config, config_path: Optional[str], root: Path, console: Console, pick_offer: Callable) -> dict:
    """Rent, record, wait for SSH and bootstrap the next box (``launcher up``'s path); the recorded instance.

    The create's unique name is chosen and written to the state first (``managed.pending_name``):
    a controller killed while the create was in flight finds that instance by its name when it
    starts again (``adopt_pending``) instead of renting a second one."""
    from launcher.commands.up import bring_up
    from launcher.providers.provisioning import unique_name

    managed = dict(load_state(root).get("managed") or {})
    name = managed.get("pending_name") or unique_name(config)  # set only while a create may be in flight
    update_state(root, managed={**managed, "pending_name": name, "pending_since": managed.get("pending_since") or time.time()})
    box = bring_up(config, config_path, root, console, assume_yes=True, pick_offer=pick_offer, create_name=name,
                   bootstrap_box=False)  # start_on bootstraps it, also after a restart
    box.close()
    managed = dict(load_state(root).get("managed") or {})
    managed.pop("pending_name", None)
    managed.pop("pending_since", None)
    update_state(root, managed=managed)
    return load_state(root)["instance"]


def adopt_pending(config, root: Path, console: Console, attempts: int = 3) -> Optional[dict]:
    """A create that a killed controller had in flight: the instance carrying its recorded name,
    recorded now (its spend counted from when the create began); None when the provider has none."""
    import launcher.providers as providers
    from launcher.providers.registry import provider_config

    managed = dict(load_state(root).get("managed") or {})
    name = managed.get("pending_name")
    if not name:
        return None
    provider = providers.make_provider(config)
    pcfg = provider_config(config)
    found: list = []
    for attempt in range(attempts):  # lists may lag a create: look again before concluding
        found = provider.find_by_name(name)
        if found or attempt + 1 == attempts:
            break
        time.sleep(pcfg.poll_interval_s)
    if not found:
        return None
    instance = found[0]
    instance.name, instance.api_base, instance.ssh_user = name, pcfg.api_base, pcfg.ssh_user
    console.print(f"managed: found instance {instance.id} ({name}) from a create in flight when the controller stopped; "
                  "using it", highlight=False)
    record = {**instance.to_dict(), "rented_at": float(managed.get("pending_since") or time.time())}
    update_state(root, instance=record)
    for extra in found[1:]:  # never expected; if the provider made two, the second is ended at once
        providers.terminate_recorded({**extra.to_dict(), "api_base": pcfg.api_base}, config)
    return record
