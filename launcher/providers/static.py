"""The ``static`` provider: an SSH host the user already has (``box.kind: ssh``).

Nothing is rented, so nothing is priced or terminated by the launcher: ``hourly_price`` is
``budget.hourly_rate`` as the user set it, and ``launcher down`` only forgets the box.
"""
from __future__ import annotations

from typing import Optional

from launcher.config import BoxConfig, LauncherConfig
from launcher.providers.base import RUNNING, Instance, Offer, ProviderError

KIND = "static"


def static_instance(config: LauncherConfig) -> Instance:
    box: BoxConfig = config.box
    if not (box.host and box.user):
        raise ProviderError("a static (ssh) box needs box.host and box.user in the config")
    return Instance(
        id=f"{box.user}@{box.host}:{box.port}", provider=KIND, ssh_host=box.host, ssh_port=box.port,
        ssh_user=box.user, hourly_price=config.budget.hourly_rate or None, state=RUNNING, location=box.host,
    )


class StaticProvider:
    """The Provider protocol over a fixed host; create/terminate change nothing on the host."""

    kind = KIND

    def __init__(self, config: LauncherConfig):
        self.config = config
        self.instance = static_instance(config)

    def offers(self, limit: int = 5) -> list[Offer]:
        i = self.instance
        return [Offer(provider=KIND, offer_id=i.id, gpu_name="(your machine)", gpu_count=self.config.run.gpus,
                      hourly_price=i.hourly_price, location=i.ssh_host)]

    def create(self, offer: Offer, public_key: str, name: str) -> Instance:
        return self.instance

    def after_create(self, instance_id: str, public_key: str) -> None:
        return None

    def get(self, instance_id: str) -> Optional[Instance]:
        return self.instance

    def find_by_name(self, name: str) -> list[Instance]:
        return [self.instance]

    def terminate(self, instance_id: str) -> None:
        return None  # not ours to stop

    def manual_terminate_command(self, instance_id: str) -> str:
        return "(a static host is not rented by the launcher: stop it wherever it runs)"

    def manual_find_command(self, name: str) -> str:
        return self.manual_terminate_command(name)
