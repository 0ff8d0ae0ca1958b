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
    host = host_key(instance.get("host"), instance.get("location"))
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


def adopt_pending(config, root: Path, console: Console) -> Optional[dict]:
    """The instance of a create that may have been in flight when the controller stopped, recorded
    now (its spend counted from when the create began); None when no create was in flight.

    Either the state's instance is an unconfirmed create (a create whose answer was lost), or the
    controller had written ``managed.pending_name`` before its create and was killed. Both are
    looked for the same way as `launcher up` does (``reconcile_unconfirmed``: by name, over what is
    left of ``box.lost_create_search_s`` since the create, because lists lag). Absence is never
    concluded from a list: not found, the record stays unconfirmed and the controller stops with
    the check command (`launcher down --forget-unconfirmed` once checked), rather than rent twice."""
    import launcher.providers as providers
    from launcher.providers.provisioning import unconfirmed_instance
    from launcher.providers.registry import provider_config

    state = load_state(root)
    managed = dict(state.get("managed") or {})
    record = state.get("instance")
    if not providers.is_unconfirmed(record):
        name = managed.get("pending_name")
        if record is not None or not name:
            return None
        since = float(managed.pop("pending_since", None) or time.time())
        managed.pop("pending_name", None)
        record = unconfirmed_instance(config.box.kind, name, provider_config(config), since).to_dict()
        # the name moves into the one unconfirmed record (before any waiting, as `launcher up` does), so
        # `launcher down --forget-unconfirmed` after a manual check leaves nothing behind
        update_state(root, instance=record, managed=managed)
    since = float(record.get("created_at") or time.time())
    found = providers.reconcile_unconfirmed(record, config, console,
                                            on_found=lambda updated: update_state(root, instance={**updated, "rented_at": since}))
    console.print(f"managed: found instance {found['id']} ({found['name']}) from a create in flight when the controller "
                  "stopped; using it", highlight=False)
    return load_state(root)["instance"]
