"""RunPod pods on REST API v2: price catalog, create with the user's SSH key, poll, terminate.

Coded from RunPod's published v2 description as of 2026-11-25:
- docs.runpod.io/api-reference-v2/overview and .../migrate-from-v1 (base URL
  ``https://api.runpod.io/v2``, bearer auth; REST v1 retires on 1 December 2026),
- docs.runpod.io/api-reference-v2/pods/create-a-pod, .../pods/list-pods,
  .../catalog/list-gpu-types (OpenAPI 3.1, "Runpod REST API 2.0.0"),
- RunPod's own migration reference, github.com/runpod/runpod-plugins-official
  plugins/runpod/skills/runpod-migrate/reference/{rest-v1-to-v2,graphql-to-v2,breaking-changes}.md
  (checked by RunPod against the live API and its openapi.json),
- cross-checked with a third-party v2 client (crates.io ``overbrainer``, src/runpod/types.rs).

Endpoints and fields used:
  GET    /v2/catalog/gpus?include=AVAILABILITY&product=POD&count=N&cloud=SECURE|COMMUNITY
         -> {"gpus": [{id, name, memory (GB per GPU), price: {secure, community} (per GPU, storage not
         included), maxCount: {secure, community}, availability: HIGH|MEDIUM|LOW|NONE}]}
         (``product`` is required with ``include``; a 400 without it). Field names per RunPod's
         migration reference (graphql-to-v2.md, "Catalog": displayName -> name, memoryInGb -> memory,
         checked 2026-12-03); the whole catalog comes in one answer (no pagination).
  POST   /v2/pods  body {name, image, cloud, gpu: {id, count}, disk, mounts: {persistent: {size, path}},
         ports: ["22/tcp"], env: {PUBLIC_KEY}} -> 201 Pod. Every request body has
         ``additionalProperties: false``: an unknown field is a 422 that names it. ``cloud`` has no
         ALL: the launcher always names one (with ``cloud_type: ALL`` it compares both clouds'
         catalog prices and rents the cheaper). ``ports`` has no default in v2: 22/tcp is explicit.
  GET    /v2/pods/{id} -> Pod {id, name, status: PROVISIONING|STARTING|RUNNING|EXITED|ERROR|TERMINATED,
         cost ($/h actually billed), gpu {id, count}, dataCenterId,
         runtime {ports: [{private, public, type, ip}]} (null unless RUNNING)}; 404 once gone
  GET    /v2/pods -> {"pods": [...]} (no server-side filters: the name is matched here)
  DELETE /v2/pods/{id} -> 204; 404 once gone
  Errors: problem details {title, status, detail, errors: [...]} (see http_client.error_text).
  A 404 counts as "gone" only in that shape: a 404 page from a wrong base URL is an error.

GraphQL (https://api.runpod.io/graphql, deprecated, retirement announced for early 2027) is
kept for one thing REST v2 does not have: spot pods ("podRentInterruptable ... v2 has no
spot/interruptible pods", graphql-to-v2.md). With ``interruptible: true`` the offer price is
``gpuTypes { secureSpotPrice communitySpotPrice }`` and the pod is created by
``podRentInterruptable(input: {..., cloudType, bidPerGpu})``; everything after the create
(status, price, terminate) goes through REST v2 like any other pod.

RunPod's images read ``PUBLIC_KEY`` into root's authorized_keys and start sshd.
Manual termination: ``runpodctl pod delete <id>`` or the Pods page of the RunPod console.
"""
from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote, urlencode

from launcher.config import RunpodConfig
from launcher.providers.base import (
    RUNNING, STARTING, STOPPED, TERMINATED, UNKNOWN, Instance, ManualCommands, Offer, ProviderError,
)
from launcher.providers.http_client import JsonHttpClient, Response, error_text

KIND = "runpod"
CLOUDS = ("SECURE", "COMMUNITY")
# Storage: "Running Pods are charged $0.10 per GB per month for all storage" (container disk and
# volume; $0.20 for a stopped pod's volume), billed per minute: docs.runpod.io/get-started/billing-information,
# read 2026-12-03. The catalog's price is the GPU's alone, so offers add this to price the bill.
STORAGE_PER_GB_MONTH = 0.10
HOURS_PER_MONTH = 730.0  # 365 x 24 / 12

_STATES = {
    "PROVISIONING": STARTING, "STARTING": STARTING, "RUNNING": RUNNING,
    "EXITED": STOPPED, "ERROR": STOPPED, "TERMINATED": TERMINATED,
}

SPOT_PRICES_QUERY = """
query GpuTypes($input: GpuTypeFilter) {
  gpuTypes(input: $input) { id displayName secureSpotPrice communitySpotPrice }
}"""

DEPLOY_SPOT = """
mutation DeploySpot($input: PodRentInterruptableInput!) {
  podRentInterruptable(input: $input) { id desiredStatus costPerHr }
}"""


def _float(value: Any) -> Optional[float]:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def is_problem_details(data: Any, status: int) -> bool:
    """RunPod v2's own error body (not a proxy's or a wrong URL's page)."""
    return isinstance(data, dict) and (data.get("status") == status or "title" in data or "detail" in data)


class RunpodProvider(ManualCommands):
    kind = KIND
    manual_terminate_template = "`runpodctl pod delete {id}` (or terminate it on the Pods page of the RunPod console)"
    manual_find_template = "`runpodctl pod list --all --name {name}` (then `runpodctl pod delete <id>`)"

    def __init__(self, config: RunpodConfig, api_key: str, **http_options: Any):
        self.config = config
        self.rest = JsonHttpClient(config.api_base, api_key, "RunPod", **http_options)
        self.graphql_http = JsonHttpClient(config.graphql_url, api_key, "RunPod GraphQL", **http_options)

    def clouds(self) -> tuple[str, ...]:
        return CLOUDS if self.config.cloud_type == "ALL" else (self.config.cloud_type,)

    # -- offers ----------------------------------------------------------------------------
    def offers(self, limit: int = 5) -> list[Offer]:
        """One offer per cloud asked for, cheapest first; clouds out of stock are left out."""
        cfg = self.config
        result = self._spot_offers() if cfg.interruptible else self._catalog_offers()
        if cfg.max_price is not None:
            result = [o for o in result if o.hourly_price is None or o.hourly_price <= cfg.max_price]
        result.sort(key=lambda o: (o.hourly_price is None, o.hourly_price or 0.0))
        return result[:limit]

    def _catalog_offers(self) -> list[Offer]:
        cfg = self.config
        result = []
        for cloud in self.clouds():
            query = urlencode({"include": "AVAILABILITY", "product": "POD", "count": cfg.gpu_count, "cloud": cloud})
            reply = self.rest.request("GET", f"/catalog/gpus?{query}")
            gpus = reply.data.get("gpus") if isinstance(reply.data, dict) else None
            if not isinstance(gpus, list):
                raise ProviderError(f"RunPod's GPU catalog answered without a gpus list: {reply.text[:200]!r}")
            for gpu in gpus:
                if not isinstance(gpu, dict) or gpu.get("id") != cfg.gpu_name:
                    continue
                per_gpu = _float((gpu.get("price") or {}).get(cloud.lower()))
                stock = str(gpu.get("availability") or "UNKNOWN")
                if per_gpu is None or per_gpu <= 0 or stock == "NONE":
                    continue  # not offered in this cloud, or no stock for this GPU count
                most = (gpu.get("maxCount") or {}).get(cloud.lower()) if isinstance(gpu.get("maxCount"), dict) else None
                if isinstance(most, int) and most < cfg.gpu_count:
                    continue  # this cloud has no machine with that many of this GPU
                result.append(Offer(
                    provider=KIND, offer_id=None, gpu_name=gpu.get("name") or cfg.gpu_name, gpu_count=cfg.gpu_count,
                    hourly_price=per_gpu * cfg.gpu_count, location=f"{cloud.lower()} cloud (RunPod picks the data center)",
                    note=f"on-demand, stock: {stock}", cloud=cloud, gpu_memory_gb=_float(gpu.get("memory")),
                    storage_per_hour=self.storage_per_hour(),
                ))
        return result

    def _spot_offers(self) -> list[Offer]:
        cfg = self.config
        data = self.graphql(SPOT_PRICES_QUERY, {"input": {"id": cfg.gpu_name}})
        result = []
        for gpu in data.get("gpuTypes") or []:
            if gpu.get("id") != cfg.gpu_name:
                continue
            for cloud in self.clouds():
                per_gpu = _float(gpu.get("secureSpotPrice" if cloud == "SECURE" else "communitySpotPrice"))
                if per_gpu is None or per_gpu <= 0:
                    continue
                result.append(Offer(
                    provider=KIND, offer_id=None, gpu_name=gpu.get("displayName") or cfg.gpu_name, gpu_count=cfg.gpu_count,
                    hourly_price=per_gpu * cfg.gpu_count, location=f"{cloud.lower()} cloud (RunPod picks the data center)",
                    note="spot (may be preempted), bid = this price", cloud=cloud,
                    storage_per_hour=self.storage_per_hour(),
                ))
        return result

    def storage_per_hour(self) -> float:
        """$/h of the pod's container disk and volume while it runs (not in the catalog's GPU price)."""
        return (self.config.container_disk_gb + self.config.volume_gb) * STORAGE_PER_GB_MONTH / HOURS_PER_MONTH

    # -- create ----------------------------------------------------------------------------
    def create_body(self, offer: Offer, public_key: str, name: str) -> dict:
        cfg = self.config
        body: dict[str, Any] = {
            "name": name,
            "image": cfg.image,
            "cloud": offer.cloud or self.clouds()[0],
            # the host's driver must run the image's CUDA (CreateGpuConfig.minCudaVersion in the v2 OpenAPI)
            "gpu": {"id": cfg.gpu_name, "count": cfg.gpu_count, "minCudaVersion": cfg.min_cuda_version},
            "disk": cfg.container_disk_gb,
            "ports": ["22/tcp"],
            "env": {"PUBLIC_KEY": public_key},
        }
        if cfg.volume_gb:
            body["mounts"] = {"persistent": {"size": cfg.volume_gb, "path": "/workspace"}}
        return body

    def create(self, offer: Offer, public_key: str, name: str) -> Instance:
        if self.config.interruptible:
            return self._create_spot(offer, public_key, name)
        reply = self.rest.request("POST", "/pods", self.create_body(offer, public_key, name), idempotent=False)
        pod = reply.data if isinstance(reply.data, dict) else {}
        if not pod.get("id"):
            raise ProviderError(f"RunPod answered the create without a pod id: {error_text(reply.data, reply.text)}",
                                status=None)  # a 2xx without an id: the pod may exist, look it up
        return self._from_pod(pod)

    def _create_spot(self, offer: Offer, public_key: str, name: str) -> Instance:
        cfg = self.config
        pod_input: dict[str, Any] = {
            "name": name, "imageName": cfg.image, "gpuTypeId": cfg.gpu_name, "gpuCount": cfg.gpu_count,
            "cloudType": offer.cloud or self.clouds()[0], "containerDiskInGb": cfg.container_disk_gb,
            "volumeInGb": cfg.volume_gb, "volumeMountPath": "/workspace", "ports": "22/tcp",
            "supportPublicIp": True, "startSsh": True, "env": [{"key": "PUBLIC_KEY", "value": public_key}],
            "bidPerGpu": round((offer.hourly_price or 0.0) / max(1, cfg.gpu_count), 4),
        }
        data = self.graphql(DEPLOY_SPOT, {"input": pod_input}, idempotent=False)
        pod = data.get("podRentInterruptable")
        if not isinstance(pod, dict) or not pod.get("id"):
            raise ProviderError("RunPod GraphQL rented no spot pod (no capacity at this bid?)")
        return Instance(id=str(pod["id"]), provider=KIND, ssh_user=cfg.ssh_user, hourly_price=_float(pod.get("costPerHr")),
                        gpu_name=cfg.gpu_name, gpu_count=cfg.gpu_count, state=STARTING, name=name,
                        api_base=cfg.api_base)

    def after_create(self, instance_id: str, public_key: str) -> None:
        """Nothing to do: the key went in with the create call (``PUBLIC_KEY``)."""

    # -- query -----------------------------------------------------------------------------
    def get(self, instance_id: str) -> Optional[Instance]:
        reply = self.rest.request("GET", f"/pods/{quote(instance_id, safe='')}", allow_statuses=(404,))
        if self._gone(reply):
            return None
        if not isinstance(reply.data, dict) or not reply.data.get("id"):
            raise ProviderError(f"RunPod answered GET /pods/{instance_id} without a pod: {reply.text[:200]!r}")
        return self._from_pod(reply.data)

    def find_by_name(self, name: str) -> list[Instance]:
        return [i for i in self.list_instances() if i.name == name]

    def list_instances(self) -> list[Instance]:
        """Every pod on the account (``launcher status --all``)."""
        reply = self.rest.request("GET", "/pods")
        pods = reply.data.get("pods") if isinstance(reply.data, dict) else None
        if not isinstance(pods, list):
            raise ProviderError(f"RunPod's pod list answered without a pods list: {reply.text[:200]!r}")
        return [self._from_pod(p) for p in pods if isinstance(p, dict) and p.get("id")]

    @staticmethod
    def _gone(reply: Response) -> bool:
        if reply.status != 404:
            return False
        if not is_problem_details(reply.data, 404):
            raise ProviderError(f"RunPod answered 404 in a shape that is not RunPod's (wrong box.runpod.api_base?): "
                                f"{reply.text[:200]!r}", status=404)
        return True

    def _from_pod(self, pod: dict) -> Instance:
        raw = str(pod.get("status") or "")
        host = port = None
        runtime = pod.get("runtime") if isinstance(pod.get("runtime"), dict) else {}
        for p in runtime.get("ports") or []:
            if isinstance(p, dict) and p.get("private") == 22 and p.get("type", "tcp") == "tcp" and p.get("ip") and p.get("public"):
                host, port = p["ip"], int(p["public"])
                break
        gpu = pod.get("gpu") if isinstance(pod.get("gpu"), dict) else {}
        return Instance(
            id=str(pod["id"]), provider=KIND, ssh_host=host, ssh_port=port, ssh_user=self.config.ssh_user,
            hourly_price=_float(pod.get("cost")), gpu_name=gpu.get("id") or self.config.gpu_name,
            gpu_count=gpu.get("count") or self.config.gpu_count, state=_STATES.get(raw, UNKNOWN),
            location=pod.get("dataCenterId"), raw_state=raw or None, name=pod.get("name"), api_base=self.config.api_base,
        )

    # -- terminate -------------------------------------------------------------------------
    def terminate(self, instance_id: str) -> None:
        reply = self.rest.request("DELETE", f"/pods/{quote(instance_id, safe='')}", allow_statuses=(404,))
        self._gone(reply)  # a 404 must be RunPod's own "no such pod", not a wrong URL

    # -- GraphQL plumbing (spot pods only) -------------------------------------------------
    def graphql(self, query: str, variables: dict, *, idempotent: bool = True) -> dict:
        """POST one GraphQL document; an ``errors`` field (even with HTTP 200) is a failure."""
        reply = self.graphql_http.request("POST", "", {"query": query, "variables": variables}, idempotent=idempotent)
        data = reply.data if isinstance(reply.data, dict) else {}
        if data.get("errors"):
            raise ProviderError(f"RunPod GraphQL error: {error_text({'errors': data['errors']}, reply.text)}", status=reply.status)
        if not isinstance(data.get("data"), dict):
            raise ProviderError(f"RunPod GraphQL answered without data: {reply.text[:200]!r}", status=reply.status)
        return data["data"]
