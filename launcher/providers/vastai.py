"""Vast.ai instances: search offers, rent one with the user's SSH key, wait for SSH, destroy.

The REST API at https://console.vast.ai/api/v0, documented at docs.vast.ai/api-reference and
checked on 2026-11-25 against the official client, github.com/vast-ai/vast-cli (commit
55679830, 2026-08-06: vastai/api/offers.py ``search_offers``, vastai/api/instances.py
``create_instance``/``show_instance``/``show_instances``/``destroy_instance``, vastai/api/client.py):
  POST   /bundles/              search offers; body is the query JSON, e.g.
                                {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1},
                                 "reliability": {"gte": 0.98}, "verified": {"eq": true},
                                 "rentable": {"eq": true}, "rented": {"eq": false},
                                 "direct_port_count": {"gte": 1}, "disk_space": {"gte": 60},
                                 "dph_total": {"lte": 0.5}, "order": [["dph_total", "asc"]],
                                 "type": "on-demand", "limit": 5, "allocated_storage": 60}
                                ``allocated_storage`` (GB) is what the offer's ``dph_total`` prices
                                the disk at: the official client always sends it (5 GB when not
                                told), so it is set to ``disk_gb`` here and the price shown is the
                                price the bill shows.
                                -> {"offers": [{id, gpu_name, num_gpus, dph_total, geolocation,
                                   reliability, disk_space, verification, direct_port_count, ...}]}
                                (docs.vast.ai/api-reference/search/search-offers)
  PUT    /asks/{offer_id}/      create an instance from the offer; body {client_id, image, disk,
                                runtype, onstart, label, cancel_unavail} -> {"success": true,
                                "new_contract": 1234568} (docs.vast.ai/api-reference/instances/create-instance).
                                ``cancel_unavail: true``: if the machine is no longer available the
                                create is cancelled instead of leaving a stopped instance that bills
                                storage. An answer with ``success: false`` *and* a ``new_contract``
                                means the instance exists (dstack's client treats it so): it is
                                reported as ``CreatedButFailed`` and destroyed by the caller.
  GET    /api/v1/instances/?select_filters={"label": {"in": [name]}}
                                -> {"instances": [...], "next_token"}: instances by the launcher's
                                unique label (recovery after a create whose answer was lost)
  POST   /instances/{id}/ssh/   attach an SSH public key {"ssh_key": "ssh-ed25519 ..."}
                                (docs.vast.ai/api-reference, "attach ssh-key")
  GET    /instances/{id}/       -> {"instances": {id, actual_status, ssh_host, ssh_port,
                                   public_ipaddr, ports {"22/tcp": [{"HostPort": "41234"}]},
                                   dph_total, gpu_name, num_gpus, geolocation, ...}}
                                ({"instances": null} or 404 once destroyed)
                                (docs.vast.ai/api-reference/instances/show-instance)
  DELETE /instances/{id}/       destroy -> {"success": true}
  Interruptible (bid) instances, per docs.vast.ai/api-reference/instances/change-bid and the
  create-instance page (checked 2026-12-03): the search uses ``"type": "bid"``, the create body
  carries ``price`` (the bid, $/h for the machine); when outbid the instance goes ``stopped``
  (cur_state, intended_status and next_state "stopped") and its disk still bills;
  PUT /instances/bid_price/{id}/ {"client_id": "me", "price": P} -> {"success": true} raises it.
Auth: ``Authorization: Bearer <key>``. ``dph_total`` is the whole instance's $/h, disk included.
An offer also carries ``gpu_ram`` (MB per GPU) and ``machine_id`` (the physical host, which
``launcher plan`` uses to avoid a host that benchmarked slow). The search has no page token: it
answers at most ``limit`` offers in ``order``, so ``launcher plan`` asks for
``box.plan.offers_per_search`` (default 1000) instead of the few ``launcher up`` shows.
Rate limits: HTTP 429 with a plain-text body and no Retry-After (the official client backs off
itself): JsonHttpClient's exponential backoff applies.

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
import json
from urllib.parse import quote_plus

from launcher.providers.base import (
    RUNNING, STARTING, STOPPED, UNKNOWN, CreatedButFailed, Instance, ManualCommands, Offer, ProviderError,
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


class VastaiProvider(ManualCommands):
    kind = KIND
    manual_terminate_template = "`vastai destroy instance {id}` (or destroy it on the Instances page of the Vast.ai console)"
    manual_find_template = "`vastai show instances --label {name}` (then `vastai destroy instance <id>`)"

    def __init__(self, config: VastaiConfig, api_key: str, **http_options: Any):
        self.config = config
        self.http = JsonHttpClient(config.api_base, api_key, "Vast.ai", **http_options)

    def search_query(self, limit: int) -> dict:
        cfg = self.config
        query: dict[str, Any] = {
            "gpu_name": {"eq": cfg.gpu_name},
            "num_gpus": {"eq": cfg.gpu_count},
            "reliability": {"gte": cfg.min_reliability},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "disk_space": {"gte": cfg.disk_gb},
            "cuda_max_good": {"gte": cfg.min_cuda},  # the highest CUDA the host's driver runs (the vastai client's cuda_vers)
            "order": [["dph_total", "asc"]],
            "type": "bid" if cfg.interruptible else "on-demand",
            "limit": limit,
            "allocated_storage": cfg.disk_gb,  # so dph_total includes the disk that is rented
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
                gpu_count=int(o.get("num_gpus") or self.config.gpu_count), hourly_price=price,
                location=o.get("geolocation"), reliability=_float(o.get("reliability2", o.get("reliability"))),
                disk_gb=_float(o.get("disk_space")), note=str(o.get("verification") or ""),
                gpu_memory_gb=None if _float(o.get("gpu_ram")) is None else _float(o.get("gpu_ram")) / 1024,
                host=None if o.get("machine_id") is None else str(o["machine_id"]),
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
            "cancel_unavail": True,
        }
        if cfg.interruptible:
            body["price"] = cfg.bid_price or offer.hourly_price  # the bid; under the host's minimum it is created stopped
        try:
            reply = self.http.request("PUT", f"/asks/{offer.offer_id}/", body, idempotent=False)
        except ProviderError as err:  # an error status may still name the instance it made
            if isinstance(err.data, dict) and err.data.get("new_contract"):
                raise CreatedButFailed(f"Vast.ai answered the create with an error ({err}) but made instance "
                                       f"{err.data['new_contract']}", str(err.data["new_contract"])) from None
            raise
        data = reply.data if isinstance(reply.data, dict) else {}
        new_id = data.get("new_contract")
        if new_id and data.get("success") is not True:
            raise CreatedButFailed(f"Vast.ai answered the create with success: false ({error_text(data, reply.text)}) "
                                   f"but made instance {new_id}", str(new_id))
        if not new_id:
            raise ProviderError(f"Vast.ai did not rent offer {offer.offer_id}: {error_text(data, reply.text)}", status=reply.status)
        return Instance(
            id=str(new_id), provider=KIND, ssh_user=cfg.ssh_user, hourly_price=offer.hourly_price,
            gpu_name=offer.gpu_name, gpu_count=offer.gpu_count, state=STARTING, location=offer.location,
            name=name, api_base=cfg.api_base,
        )

    def after_create(self, instance_id: str, public_key: str) -> None:
        """Attach the key to the instance (the onstart script adds it too, for images that wipe it)."""
        reply = self.http.request("POST", f"/instances/{instance_id}/ssh/", {"ssh_key": public_key.strip()}, idempotent=True)
        if isinstance(reply.data, dict) and reply.data.get("success") is False:
            raise ProviderError(f"Vast.ai did not attach the SSH key to instance {instance_id}: {error_text(reply.data, reply.text)}")

    def get(self, instance_id: str) -> Optional[Instance]:
        reply = self.http.request("GET", f"/instances/{instance_id}/?owner=me", allow_statuses=(404,))
        if not isinstance(reply.data, dict):  # a 404 page from a wrong URL is not "destroyed"
            raise ProviderError(f"Vast.ai answered GET /instances/{instance_id}/ with HTTP {reply.status} and no JSON: "
                                f"{reply.text[:200]!r} (is box.vastai.api_base right?)", status=reply.status)
        if reply.status == 404:
            return None
        inst = reply.data.get("instances")
        if isinstance(inst, list):
            inst = inst[0] if inst else None
        if not inst:
            return None
        raw = str(inst.get("actual_status") or "")
        if "stopped" in (inst.get("cur_state"), inst.get("intended_status")):
            raw = "stopped"  # an outbid interruptible instance: cur_state/intended_status/next_state "stopped" (disk still bills)
        host, port = inst.get("ssh_host"), inst.get("ssh_port")
        ports = inst.get("ports")
        if self.config.direct_port and isinstance(ports, dict) and ports.get("22/tcp") and inst.get("public_ipaddr"):
            host, port = inst["public_ipaddr"], ports["22/tcp"][0].get("HostPort")
        return self._instance(inst, instance_id, host, port, raw)

    def _instance(self, inst: dict, instance_id: str, host, port, raw: str) -> Instance:
        return Instance(
            id=str(inst.get("id", instance_id)), provider=KIND, ssh_host=(host or None),
            ssh_port=int(port) if port else None, ssh_user=self.config.ssh_user,
            hourly_price=_float(inst.get("dph_total")), gpu_name=inst.get("gpu_name"),
            gpu_count=inst.get("num_gpus"), state=_STATES.get(raw, STARTING if not raw else UNKNOWN),
            location=inst.get("geolocation"), raw_state=raw or None, name=inst.get("label"),
            api_base=self.config.api_base,
        )

    def find_by_name(self, name: str) -> list[Instance]:
        """Instances labelled ``name``, through the paginated v1 list the official client uses."""
        return [i for i in self._list({"label": {"in": [name]}}) if i.name == name]

    def list_instances(self) -> list[Instance]:
        """Every instance on the account (``launcher status --all``), through the same paginated list."""
        return self._list({})

    def _list(self, select_filters: dict) -> list[Instance]:
        root = self.config.api_base.rstrip("/").rsplit("/api/v0", 1)[0]
        params: dict = {"order_by": [{"col": "id", "dir": "asc"}], "limit": 25}
        if select_filters:
            params["select_filters"] = select_filters
        found: list[Instance] = []
        for _ in range(100):  # pages
            query = "&".join(f"{k}={quote_plus(json.dumps(v))}" for k, v in params.items())
            reply = self.http.request("GET", f"{root}/api/v1/instances/?{query}")
            data = reply.data if isinstance(reply.data, dict) else {}
            rows = data.get("instances")
            if not isinstance(rows, list):
                raise ProviderError(f"Vast.ai's instance list answered without instances: {reply.text[:200]!r}")
            for inst in rows:
                if isinstance(inst, dict) and inst.get("id") is not None:
                    found.append(self._instance(inst, str(inst["id"]), inst.get("ssh_host"), inst.get("ssh_port"),
                                                str(inst.get("actual_status") or "")))
            if not data.get("next_token"):
                return found
            params["after_token"] = data["next_token"]
        raise ProviderError("Vast.ai's instance list did not end after 100 pages")

    def raise_bid(self, instance_id: str, price: float) -> None:
        """Change an interruptible instance's bid to ``price`` $/h (an outbid one may then run again)."""
        reply = self.http.request("PUT", f"/instances/bid_price/{instance_id}/", {"client_id": "me", "price": round(float(price), 4)},
                                  idempotent=True)
        if not (isinstance(reply.data, dict) and reply.data.get("success") is True):
            raise ProviderError(f"Vast.ai did not change the bid of instance {instance_id}: {error_text(reply.data, reply.text)}")

    def terminate(self, instance_id: str) -> None:
        reply = self.http.request("DELETE", f"/instances/{instance_id}/", allow_statuses=(404,))
        if reply.status == 404 and not isinstance(reply.data, dict):
            raise ProviderError(f"Vast.ai answered 404 with no JSON (is box.vastai.api_base right?): {reply.text[:200]!r}", status=404)
        if reply.status != 404 and isinstance(reply.data, dict) and reply.data.get("success") is False:
            raise ProviderError(f"Vast.ai did not destroy instance {instance_id}: {error_text(reply.data, reply.text)}")
