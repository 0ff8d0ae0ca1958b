"""Vast.ai instances: search offers, rent one with the user's SSH key, wait for SSH, destroy.

The REST API at https://console.vast.ai/api/v0, documented at docs.vast.ai/api-reference:
  POST   /bundles/              search offers; body is the query JSON, e.g.
                                {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1},
                                 "reliability": {"gte": 0.98}, "verified": {"eq": true},
                                 "rentable": {"eq": true}, "rented": {"eq": false},
                                 "direct_port_count": {"gte": 1}, "disk_space": {"gte": 60},
                                 "dph_total": {"lte": 0.5}, "order": [["dph_total", "asc"]],
                                 "type": "on-demand", "limit": 5}
                                -> {"offers": [{id, gpu_name, num_gpus, dph_total, geolocation,
                                   reliability, disk_space, verification, direct_port_count, ...}]}
                                (docs.vast.ai/api-reference/search/search-offers)
  PUT    /asks/{offer_id}/      create an instance from the offer; body {client_id, image, disk,
                                runtype, onstart, label} -> {"success": true, "new_contract": 1234568}
                                (docs.vast.ai/api-reference/instances/create-instance)
  POST   /instances/{id}/ssh/   attach an SSH public key {"ssh_key": "ssh-ed25519 ..."}
                                (docs.vast.ai/api-reference, "attach ssh-key")
  GET    /instances/{id}/       -> {"instances": {id, actual_status, ssh_host, ssh_port,
                                   public_ipaddr, ports {"22/tcp": [{"HostPort": "41234"}]},
                                   dph_total, gpu_name, num_gpus, geolocation, ...}}
                                ({"instances": null} or 404 once destroyed)
                                (docs.vast.ai/api-reference/instances/show-instance)
  DELETE /instances/{id}/       destroy -> {"success": true}
Auth: ``Authorization: Bearer <key>``. ``dph_total`` is the whole instance's $/h, disk included.

SSH: with ``direct_port`` the launcher uses the machine's own address (``public_ipaddr`` and the
host port mapped to 22/tcp, as ``vastai ssh-url`` does); otherwise Vast's proxy
(``ssh_host``:``ssh_port``). The user is root.

tmux: Vast's SSH images start (or attach) a tmux session on every interactive SSH login. The
file ``~/.no_auto_tmux`` on the instance turns that off, so the onstart script creates it
before the launcher connects; the launcher's own connections also run non-interactive
commands, which never get the auto-tmux. The launcher then runs its own tmux session for
training.
Manual termination: ``vastai destroy instance <id>`` or the Instances page of the Vast.ai console.
"""
from __future__ import annotations

import shlex
from typing import Any, Optional

from launcher.config import VastaiConfig
from launcher.providers.base import (
    RUNNING, STARTING, STOPPED, UNKNOWN, Instance, Offer, ProviderError,
)
from launcher.providers.http_client import JsonHttpClient, error_text

KIND = "vastai"

_STATES = {
    "running": RUNNING, "loading": STARTING, "created": STARTING, "rebooting": STARTING,
    "stopped": STOPPED, "exited": STOPPED, "frozen": STOPPED, "offline": UNKNOWN, "unknown": UNKNOWN,
}


def onstart_script(public_key: str) -> str:
    """Runs on the instance after Vast's entrypoint: no auto-tmux, and our key authorised."""
    key = shlex.quote(public_key.strip())
    return "\n".join([
        "touch ~/.no_auto_tmux",  # Vast images start tmux on SSH login unless this file exists
        "mkdir -p ~/.ssh && chmod 700 ~/.ssh",
        f"grep -qxF {key} ~/.ssh/authorized_keys 2>/dev/null || echo {key} >> ~/.ssh/authorized_keys",
        "chmod 600 ~/.ssh/authorized_keys",
        "",
    ])


def _float(value: Any) -> Optional[float]:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


class VastaiProvider:
    kind = KIND

    def __init__(self, config: VastaiConfig, api_key: str, **http_options: Any):
        self.config = config
        self.http = JsonHttpClient(config.api_base, api_key, "Vast.ai", **http_options)

    def search_query(self, limit: int) -> dict:
        cfg = self.config
        query: dict[str, Any] = {
            "gpu_name": {"eq": cfg.gpu_name},
            "num_gpus": {"eq": cfg.num_gpus},
            "reliability": {"gte": cfg.min_reliability},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "disk_space": {"gte": cfg.disk_gb},
            "order": [["dph_total", "asc"]],
            "type": "on-demand",
            "limit": limit,
        }
        if cfg.verified:
            query["verified"] = {"eq": True}
        if cfg.direct_port:
            query["direct_port_count"] = {"gte": 1}
        if cfg.max_price is not None:
            query["dph_total"] = {"lte": cfg.max_price}
        return query

    def offers(self, limit: int = 5) -> list[Offer]:
        reply = self.http.request("POST", "/bundles/", self.search_query(limit), idempotent=True)
        raw = (reply.data or {}).get("offers") if isinstance(reply.data, dict) else None
        if raw is None:
            raise ProviderError(f"Vast.ai offer search answered without offers: {error_text(reply.data, reply.text)}")
        if isinstance(raw, dict):  # a single offer comes back as an object
            raw = [raw]
        result = []
        for o in raw:
            price = _float(o.get("dph_total"))
            if price is None:
                continue
            if self.config.max_price is not None and price > self.config.max_price:
                continue  # the server filters too; never trust a ceiling to one side
            result.append(Offer(
                provider=KIND, offer_id=str(o.get("id") or o.get("ask_contract_id")), gpu_name=o.get("gpu_name") or self.config.gpu_name,
                gpu_count=int(o.get("num_gpus") or self.config.num_gpus), hourly_price=price,
                location=o.get("geolocation"), reliability=_float(o.get("reliability2", o.get("reliability"))),
                disk_gb=_float(o.get("disk_space")), note=str(o.get("verification") or ""),
            ))
        result.sort(key=lambda o: o.hourly_price)
        return result[:limit]

    def create(self, offer: Offer, public_key: str, name: str) -> Instance:
        cfg = self.config
        if not offer.offer_id:
            raise ProviderError("a Vast.ai rental needs an offer id")
        body = {
            "client_id": "me",
            "image": cfg.image,
            "disk": cfg.disk_gb,
            "runtype": "ssh_direct" if cfg.direct_port else "ssh_proxy",
            "onstart": onstart_script(public_key),
            "label": name,
        }
        reply = self.http.request("PUT", f"/asks/{offer.offer_id}/", body, idempotent=False)
        data = reply.data if isinstance(reply.data, dict) else {}
        new_id = data.get("new_contract")
        if not data.get("success") or not new_id:
            raise ProviderError(f"Vast.ai did not rent offer {offer.offer_id}: {error_text(data, reply.text)}", status=reply.status)
        return Instance(
            id=str(new_id), provider=KIND, ssh_user=cfg.ssh_user, hourly_price=offer.hourly_price,
            gpu_name=offer.gpu_name, gpu_count=offer.gpu_count, state=STARTING, location=offer.location,
        )

    def after_create(self, instance_id: str, public_key: str) -> None:
        """Attach the key to the instance (the onstart script adds it too, for images that wipe it)."""
        reply = self.http.request("POST", f"/instances/{instance_id}/ssh/", {"ssh_key": public_key.strip()}, idempotent=True)
        if isinstance(reply.data, dict) and reply.data.get("success") is False:
            raise ProviderError(f"Vast.ai did not attach the SSH key to instance {instance_id}: {error_text(reply.data, reply.text)}")

    def get(self, instance_id: str) -> Optional[Instance]:
        reply = self.http.request("GET", f"/instances/{instance_id}/", allow_statuses=(404,))
        if reply.status == 404 or not isinstance(reply.data, dict):
            return None
        inst = reply.data.get("instances")
        if isinstance(inst, list):
            inst = inst[0] if inst else None
        if not inst:
            return None
        raw = str(inst.get("actual_status") or "")
        host, port = inst.get("ssh_host"), inst.get("ssh_port")
        ports = inst.get("ports")
        if self.config.direct_port and isinstance(ports, dict) and ports.get("22/tcp") and inst.get("public_ipaddr"):
            host, port = inst["public_ipaddr"], ports["22/tcp"][0].get("HostPort")
        return Instance(
            id=str(inst.get("id", instance_id)), provider=KIND, ssh_host=(host or None),
            ssh_port=int(port) if port else None, ssh_user=self.config.ssh_user,
            hourly_price=_float(inst.get("dph_total")), gpu_name=inst.get("gpu_name"),
            gpu_count=inst.get("num_gpus"), state=_STATES.get(raw, STARTING if not raw else UNKNOWN),
            location=inst.get("geolocation"), raw_state=raw or None,
        )

    def terminate(self, instance_id: str) -> None:
        reply = self.http.request("DELETE", f"/instances/{instance_id}/", allow_statuses=(404,))
        if reply.status != 404 and isinstance(reply.data, dict) and reply.data.get("success") is False:
            raise ProviderError(f"Vast.ai did not destroy instance {instance_id}: {error_text(reply.data, reply.text)}")

    def manual_terminate_command(self, instance_id: str) -> str:
        return f"`vastai destroy instance {instance_id}` (or destroy it on the Instances page of the Vast.ai console)"
