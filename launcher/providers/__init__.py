"""Who rents the box: RunPod, Vast.ai, or a static SSH host (``box.kind: ssh``).

    base.py          the shapes every provider shares (Offer, Instance, Provider, the errors)
    runpod.py, vastai.py, static.py   one thin client each
    registry.py      which provider a box kind or a record goes with, built from the config and API key
    provisioning.py  the money-safe flow: rent, record, wait, check the price, recover, terminate
    offer_view.py    what `launcher up` shows before renting: the offers, the pick, what the budget buys

The commands use the names re-exported here.
"""
from launcher.providers.base import Instance, Offer, Provider, ProviderError, ProvisionError, TransientProviderError
from launcher.providers.provisioning import (
    describe, is_unconfirmed, provision, read_public_key, reconcile_unconfirmed, record_mismatch, terminate_by_id,
    terminate_recorded,
)
from launcher.providers.registry import PROVIDER_NAMES, make_provider, manual_terminate_command, recorded_what

__all__ = [
    "Instance", "Offer", "Provider", "ProviderError", "ProvisionError", "TransientProviderError",
    "provision", "describe", "record_mismatch", "terminate_recorded", "terminate_by_id", "make_provider",
    "read_public_key", "PROVIDER_NAMES", "manual_terminate_command", "is_unconfirmed", "reconcile_unconfirmed",
    "recorded_what",
]
