"""The shapes every provider shares: an ``Offer`` to rent, a rented ``Instance``, the
``Provider`` protocol and the errors a provider raises.

A provider is a thin client over one rental API (RunPod, Vast.ai) or a fixed SSH host
(``static``). It never prints, never prompts and never decides about money: that is
``launcher/providers/provisioning.py``'s job. Money-aware wording follows dstack's provider
errors: whenever an instance might still be billing, the message names its id and the
exact command that stops the charges.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Protocol, runtime_checkable

from runcontract.errors import UserError

# States ``Instance.state`` takes, normalised across providers (the raw value is kept in ``raw_state``).
RUNNING = "running"
STARTING = "starting"
STOPPED = "stopped"
TERMINATED = "terminated"
UNKNOWN = "unknown"
# A create whose answer was lost and whose instance no list has shown yet: the record keeps
# the name (label) it was created with, no id; it may exist and bill (provisioning.py).
UNCONFIRMED = "unconfirmed"


@dataclass
class Offer:
    """Something that can be rented now, at a catalog price (which may lag the market)."""

    provider: str
    offer_id: Optional[str]          # Vast: the ask id to accept; RunPod: None (RunPod picks the machine)
    gpu_name: str
    gpu_count: int
    hourly_price: Optional[float]    # $/h for the whole machine, as listed
    location: Optional[str] = None
    reliability: Optional[float] = None
    disk_gb: Optional[float] = None
    note: str = ""                   # e.g. "spot", "stock: HIGH"
    cloud: Optional[str] = None      # RunPod: SECURE or COMMUNITY, always explicit when renting
    gpu_memory_gb: Optional[float] = None   # per GPU, GiB (Vast: gpu_ram MB / 1024; RunPod: the catalog's memory)
    storage_per_hour: float = 0.0    # $/h of disk and volume billed on top of hourly_price (RunPod); Vast's price has it inside
    host: Optional[str] = None       # the physical machine, where the provider says (Vast: machine_id), for avoiding slow hosts

    @property
    def billed_per_hour(self) -> Optional[float]:
        """$/h as billed: the machine with its disk and storage."""
        return None if self.hourly_price is None else self.hourly_price + self.storage_per_hour


@dataclass
class Instance:
    """A rented (or static) machine, as the provider reported it last."""

    id: str
    provider: str                    # "runpod" | "vastai" | "static"
    ssh_host: Optional[str] = None
    ssh_port: Optional[int] = None
    ssh_user: str = "root"
    hourly_price: Optional[float] = None   # LIVE $/h read back from the provider, whole machine
    gpu_name: Optional[str] = None
    gpu_count: Optional[int] = None
    state: str = UNKNOWN
    location: Optional[str] = None
    raw_state: Optional[str] = field(default=None, compare=False)
    name: Optional[str] = None             # the unique name/label the launcher gave it (recovery looks it up)
    api_base: Optional[str] = None         # the API it was rented through: teardown goes there, whatever the config says
    created_at: Optional[float] = None     # Unix time the create was sent (an unconfirmed record's only clock)

    @property
    def ssh_ready(self) -> bool:
        """Running, with a public SSH endpoint known."""
        return self.state == RUNNING and bool(self.ssh_host) and bool(self.ssh_port)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Instance":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("ssh_port") is not None:
            values["ssh_port"] = int(values["ssh_port"])
        if values.get("hourly_price") is not None:
            values["hourly_price"] = float(values["hourly_price"])
        return cls(**values)


class ProviderError(UserError):
    """A provider API call failed (bad request, auth, not enough capacity, ...).

    Messages carry the provider's own error text, never the API key.
    """

    def __init__(self, message: str, status: Optional[int] = None, data: object = None):
        super().__init__(message)
        self.status = status
        self.data = data  # the parsed error body, for providers whose errors carry facts (Vast's new_contract)

    @property
    def may_have_created(self) -> bool:
        """For a create: no usable answer (dropped, timed out) or a 5xx/408 - the rental may exist."""
        return self.status is None or self.status >= 500 or self.status == 408


class TransientProviderError(ProviderError):
    """Rate limited (HTTP 429), a 5xx, or a connection error that outlived the retries."""


class CreatedButFailed(ProviderError):
    """The provider said the create failed but named the instance it made (Vast: ``success: false``
    with a ``new_contract``): it exists and bills, so it is recorded and destroyed."""

    def __init__(self, message: str, instance_id: str):
        super().__init__(message)
        self.instance_id = instance_id


class ProvisionError(UserError):
    """Renting failed after the instance was created.

    ``terminated`` says whether the launcher confirmed the instance is gone; when it is
    False the message names the id and the command that stops the charges.
    """

    def __init__(self, message: str, instance_id: str, terminated: bool):
        super().__init__(message)
        self.instance_id = instance_id
        self.terminated = terminated


class ManualCommands:
    """The provider's own CLI commands for what the launcher could not do itself, for messages:
    each provider fills in the two templates (``{id}``: an instance id, ``{name}``: a create's name)."""

    manual_terminate_template: str
    manual_find_template: str

    @classmethod
    def manual_terminate_command(cls, instance_id: str) -> str:
        return cls.manual_terminate_template.format(id=instance_id)

    @classmethod
    def manual_find_command(cls, name: str) -> str:
        return cls.manual_find_template.format(name=name)


@runtime_checkable
class Provider(Protocol):
    """One rental API. Every call is a single request (plus the HTTP layer's bounded retries)."""

    kind: str

    def offers(self, limit: int = 5) -> list[Offer]:
        """Offers matching the config, cheapest first."""

    def create(self, offer: Offer, public_key: str, name: str) -> Instance:
        """Rent ``offer``. Returns as soon as the provider acknowledged the rental (not ready yet)."""

    def after_create(self, instance_id: str, public_key: str) -> None:
        """Steps after the rental is recorded locally (e.g. attach the SSH key). May be a no-op."""

    def get(self, instance_id: str) -> Optional[Instance]:
        """The instance as the provider sees it now; None when it no longer exists."""

    def find_by_name(self, name: str) -> list[Instance]:
        """Instances that carry the unique name/label the launcher gave a create (recovery)."""

    def list_instances(self) -> list[Instance]:
        """Every instance on the account, whoever made it (``launcher status --all``)."""

    def terminate(self, instance_id: str) -> None:
        """Ask the provider to destroy the instance (stops all charges). Gone already is fine."""

    def manual_terminate_command(self, instance_id: str) -> str:
        """The provider's own CLI/console way to terminate, for messages."""

    def manual_find_command(self, name: str) -> str:
        """The provider's own CLI way to list instances by the launcher's name, for messages."""
