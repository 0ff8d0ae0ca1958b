"""Which provider a box kind or a recorded instance goes with, and building it from the config
and the API key (environment variable, else a mode-600 file: api_keys.py)."""
from __future__ import annotations

from typing import Any, Optional

from launcher.config import RENTED_KINDS, LauncherConfig, RunpodConfig, VastaiConfig
from launcher.providers.api_keys import load_api_key
from launcher.providers.base import Provider
from launcher.providers.runpod import RunpodProvider
from launcher.providers.vastai import VastaiProvider
from runcontract.errors import UserError

PROVIDER_NAMES = {"runpod": "RunPod", "vastai": "Vast.ai", "static": "static"}
PROVIDER_CLASSES = {"runpod": RunpodProvider, "vastai": VastaiProvider}
# the box.kind a recorded provider goes with
KIND_OF_PROVIDER = {"runpod": "runpod", "vastai": "vastai", "static": "ssh"}
# Options for every provider's JsonHttpClient (timeout, max_attempts, backoff, max_backoff);
# tests shorten the backoff here.
HTTP_OPTIONS: dict[str, Any] = {}


def provider_config(config: LauncherConfig) -> RunpodConfig | VastaiConfig:
    return config.box.runpod if config.box.kind == "runpod" else config.box.vastai


def make_provider(config: LauncherConfig, **http_options: Any) -> Provider:
    """The provider for ``config.box.kind``; loads the API key (env var, else mode-600 file)."""
    kind = config.box.kind
    if kind in RENTED_KINDS:
        return rented_provider(kind, provider_config(config), **http_options)
    raise UserError(f"box.kind {kind!r} rents nothing: use runpod or vastai to rent a GPU (ssh and local boxes need no provider)")


def rented_provider(kind: str, cfg: RunpodConfig | VastaiConfig, **http_options: Any) -> Provider:
    """The client for a rented ``kind`` with its API key; ``http_options`` over HTTP_OPTIONS."""
    http_options = {**HTTP_OPTIONS, **http_options}
    return PROVIDER_CLASSES[kind](cfg, load_api_key(kind, cfg.api_key_env), **http_options)  # type: ignore[arg-type]


def recorded_provider_config(record: dict, config: Optional[LauncherConfig]) -> RunpodConfig | VastaiConfig:
    """The provider settings for a recorded instance: its own API base; key env and timeouts
    from the config when the config is for the same provider, else the defaults."""
    kind = record.get("provider")
    if kind not in RENTED_KINDS:
        raise UserError(f"the recorded instance {record.get('id')} has provider {kind!r}: only runpod and vastai "
                        "rentals are terminated by the launcher")
    if config is not None and config.box.kind == kind:
        cfg = provider_config(config)
    else:
        cfg = RunpodConfig() if kind == "runpod" else VastaiConfig()
    if record.get("api_base"):
        cfg = cfg.model_copy(update={"api_base": record["api_base"]})
    return cfg


def manual_terminate_command(record: dict) -> str:
    """The provider's own command that stops a recorded instance (no network, no key needed);
    for an unconfirmed record (no id yet) the command that finds it by its name."""
    cls = PROVIDER_CLASSES.get(record.get("provider") or "")
    if cls is None:
        return "(nothing to stop: it is not a rental)"
    if not record.get("id") and record.get("name"):
        return cls.manual_find_command(str(record["name"]))
    return cls.manual_terminate_command(str(record.get("id")))


def recorded_what(record: dict) -> str:
    """How messages name a recorded instance: "Vast.ai instance 7000001", or for an unconfirmed
    record "the unconfirmed Vast.ai rental named llm-box-...", which has no id yet."""
    provider = PROVIDER_NAMES.get(record.get("provider") or "", record.get("provider"))
    if not record.get("id") and record.get("name"):
        return f"the unconfirmed {provider} rental named {record['name']}"
    return f"{provider} instance {record.get('id')}"
