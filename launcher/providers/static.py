"""The ``static`` instance: an SSH host the user already has (``box.kind: ssh``), recorded like a rented one.

Nothing is rented, so nothing is priced or terminated by the launcher: ``hourly_price`` is
``budget.hourly_rate`` as the user set it, and ``launcher down`` only forgets the box.
"""
from __future__ import annotations

from launcher.config import BoxConfig, LauncherConfig
from launcher.providers.base import RUNNING, Instance, ProviderError

KIND = "static"


def static_instance(config: LauncherConfig) -> Instance:
    box: BoxConfig = config.box
    if not (box.host and box.user):
        raise ProviderError("a static (ssh) box needs box.host and box.user in the config")
    return Instance(
        id=f"{box.user}@{box.host}:{box.port}", provider=KIND, ssh_host=box.host, ssh_port=box.port,
        ssh_user=box.user, hourly_price=config.budget.hourly_rate or None, state=RUNNING, location=box.host,
    )

