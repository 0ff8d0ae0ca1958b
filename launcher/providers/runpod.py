"""RunPod pods: price lookup, create with the user's SSH key, wait for a public SSH port, terminate.

Two APIs, one client (``box.runpod.api`` picks which creates/queries/terminates):

REST (default), https://rest.runpod.io/v1, documented at docs.runpod.io/api-reference:
  POST   /pods            body {name, imageName, gpuTypeIds, gpuCount, cloudType, containerDiskInGb,
                          volumeInGb, volumeMountPath, ports ["22/tcp"], env {PUBLIC_KEY}, interruptible,
                          supportPublicIp}  -> 201 + Pod
  GET    /pods/{podId}    -> Pod {id, desiredStatus, costPerHr, adjustedCostPerHr, publicIp,
                          portMappings {"22": 10341}, gpu {displayName, count}, machine {location, ...}}
                          (404 once the pod is gone)
  DELETE /pods/{podId}    -> 204
  Errors: non-2xx with a JSON body such as {"error": "...", "status": 400}.
  cloudType is SECURE or COMMUNITY there; with ``cloud_type: ALL`` the field is left out (RunPod's default).

GraphQL, https://api.runpod.io/graphql, documented at docs.runpod.io/sdks/graphql/manage-pods
(and the runpod/docs repository, graphql-api/create-pod.md):
  mutation podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput!) { id machineId ... }
  mutation podRentInterruptable(input: PodRentInterruptableInput! with bidPerGpu) { id ... }
  query pod(input: {podId}) { id desiredStatus costPerHr machine {location}
                              runtime { ports { ip isIpPublic privatePort publicPort type } } }
  mutation podTerminate(input: {podId})
  query gpuTypes(input: {id}) { id displayName securePrice communityPrice secureSpotPrice
                                communitySpotPrice lowestPrice(input: {gpuCount}) {
                                uninterruptablePrice minimumBidPrice stockStatus } }
  GraphQL answers HTTP 200 with an ``errors`` list on failure: that is a failure here.
  Inputs travel as GraphQL variables, never spliced into the query text.

RunPod's images read the ``PUBLIC_KEY`` environment variable into root's authorized_keys and
start sshd; port 22 is exposed as TCP so the pod gets a public IP and a mapped port. REST has
no price catalog, so the offer shown before renting always comes from GraphQL ``gpuTypes``;
after creation the pod's own ``costPerHr`` is the live price.
Manual termination: ``runpodctl remove pod <id>`` or the Pods page of the RunPod console.
"""
from __future__ import annotations

from typing import Any, Optional

from launcher.config import RunpodConfig
from launcher.providers.base import (
    RUNNING, STARTING, STOPPED, TERMINATED, UNKNOWN, Instance, Offer, ProviderError,
)
from launcher.providers.http_client import JsonHttpClient, error_text

KIND = "runpod"

_STATES = {
    "RUNNING": RUNNING, "CREATED": STARTING, "RESTARTING": STARTING, "PROVISIONING": STARTING,
    "STARTING": STARTING, "EXITED": STOPPED, "PAUSED": STOPPED, "TERMINATED": TERMINATED,
    "DEAD": TERMINATED,
}

GPU_TYPES_QUERY = """
query GpuTypes($input: GpuTypeFilter, $lowest: GpuLowestPriceInput) {
  gpuTypes(input: $input) {
    id displayName memoryInGb securePrice communityPrice secureSpotPrice communitySpotPrice
    lowestPrice(input: $lowest) { uninterruptablePrice minimumBidPrice stockStatus }
  }
}"""

DEPLOY_ON_DEMAND = """
mutation Deploy($input: PodFindAndDeployOnDemandInput!) {
  podFindAndDeployOnDemand(input: $input) { id desiredStatus costPerHr machineId imageName }
}"""

DEPLOY_SPOT = """
mutation DeploySpot($input: PodRentInterruptableInput!) {
  podRentInterruptable(input: $input) { id desiredStatus costPerHr machineId imageName }
}"""

POD_QUERY = """
query Pod($input: PodFilter!) {
  pod(input: $input) {
    id name desiredStatus costPerHr gpuCount
    machine { gpuDisplayName location }
    runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
  }
}"""

TERMINATE = """
mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }"""


def _float(value: Any) -> Optional[float]:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


class RunpodProvider:
    kind = KIND

    def __init__(self, config: RunpodConfig, api_key: str, **http_options: Any):
        self.config = config
        self.rest = JsonHttpClient(config.api_base, api_key, "RunPod", **http_options)
        self.graphql_http = JsonHttpClient(config.graphql_url, api_key, "RunPod GraphQL", **http_options)

    # -- GraphQL plumbing ------------------------------------------------------------------
    def graphql(self, query: str, variables: dict, *, idempotent: bool = True) -> dict:
        """POST one GraphQL document; an ``errors`` field (even with HTTP 200) is a failure."""
        reply = self.graphql_http.request("POST", "", {"query": query, "variables": variables}, idempotent=idempotent)
        data = reply.data if isinstance(reply.data, dict) else {}
        if data.get("errors"):
            raise ProviderError(f"RunPod GraphQL error: {error_text({'errors': data['errors']}, reply.text)}", status=reply.status)
        if not isinstance(data.get("data"), dict):
            raise ProviderError(f"RunPod GraphQL answered without data: {reply.text[:200]!r}", status=reply.status)
        return data["data"]

    # -- offers ----------------------------------------------------------------------------
    def offers(self, limit: int = 5) -> list[Offer]:
        cfg = self.config
        lowest: dict[str, Any] = {"gpuCount": cfg.gpu_count}
        if cfg.cloud_type != "ALL":
            lowest["secureCloud"] = cfg.cloud_type == "SECURE"
        data = self.graphql(GPU_TYPES_QUERY, {"input": {"id": cfg.gpu_type}, "lowest": lowest})
        result = []
        for gpu in data.get("gpuTypes") or []:
            if gpu.get("id") != cfg.gpu_type:
                continue
            low = gpu.get("lowestPrice") or {}
            per_gpu = _float(low.get("minimumBidPrice") if cfg.interruptible else low.get("uninterruptablePrice"))
            if per_gpu is None:  # fall back to the list price of the chosen cloud
                key = ("communitySpotPrice" if cfg.cloud_type == "COMMUNITY" else "secureSpotPrice") if cfg.interruptible \
                    else ("communityPrice" if cfg.cloud_type == "COMMUNITY" else "securePrice")
                per_gpu = _float(gpu.get(key))
            stock = low.get("stockStatus")
            note = ", ".join(x for x in ("spot" if cfg.interruptible else "on-demand", f"stock: {stock}" if stock else "") if x)
            result.append(Offer(
                provider=KIND, offer_id=None, gpu_name=gpu.get("displayName") or cfg.gpu_type, gpu_count=cfg.gpu_count,
                hourly_price=None if per_gpu is None else per_gpu * cfg.gpu_count,
                location=f"{cfg.cloud_type.lower()} cloud (RunPod picks the data center)", note=note,
            ))
        if cfg.max_price is not None:
            result = [o for o in result if o.hourly_price is None or o.hourly_price <= cfg.max_price]
        return result[:limit]

    # -- create ----------------------------------------------------------------------------
    def create(self, offer: Offer, public_key: str, name: str) -> Instance:
        cfg = self.config
        if cfg.api == "graphql":
            return self._create_graphql(offer, public_key, name)
        body: dict[str, Any] = {
            "name": name,
            "imageName": cfg.image,
            "gpuTypeIds": [cfg.gpu_type],
            "gpuCount": cfg.gpu_count,
            "containerDiskInGb": cfg.container_disk_gb,
            "volumeInGb": cfg.volume_gb,
            "volumeMountPath": "/workspace",
            "ports": ["22/tcp"],
            "env": {"PUBLIC_KEY": public_key},
            "interruptible": cfg.interruptible,
            "supportPublicIp": True,
        }
        if cfg.cloud_type != "ALL":
            body["cloudType"] = cfg.cloud_type
        reply = self.rest.request("POST", "/pods", body, idempotent=False)
        pod = reply.data if isinstance(reply.data, dict) else {}
        if not pod.get("id"):
            raise ProviderError(f"RunPod created no pod: {error_text(reply.data, reply.text)}", status=reply.status)
        return self._from_rest(pod)

    def _create_graphql(self, offer: Offer, public_key: str, name: str) -> Instance:
        cfg = self.config
        pod_input: dict[str, Any] = {
            "name": name, "imageName": cfg.image, "gpuTypeId": cfg.gpu_type, "gpuCount": cfg.gpu_count,
            "cloudType": cfg.cloud_type, "containerDiskInGb": cfg.container_disk_gb, "volumeInGb": cfg.volume_gb,
            "volumeMountPath": "/workspace", "ports": "22/tcp", "supportPublicIp": True, "startSsh": True,
            "env": [{"key": "PUBLIC_KEY", "value": public_key}],
        }
        if cfg.interruptible:
            per_gpu = (offer.hourly_price or 0) / max(1, cfg.gpu_count)
            pod_input["bidPerGpu"] = round(per_gpu, 4)
            data = self.graphql(DEPLOY_SPOT, {"input": pod_input}, idempotent=False)
            pod = data.get("podRentInterruptable")
        else:
            data = self.graphql(DEPLOY_ON_DEMAND, {"input": pod_input}, idempotent=False)
            pod = data.get("podFindAndDeployOnDemand")
        if not isinstance(pod, dict) or not pod.get("id"):
            raise ProviderError("RunPod GraphQL created no pod (no capacity for this GPU type?)")
        return Instance(
            id=str(pod["id"]), provider=KIND, ssh_user=cfg.ssh_user, hourly_price=_float(pod.get("costPerHr")),
            gpu_name=cfg.gpu_type, gpu_count=cfg.gpu_count, state=_STATES.get(str(pod.get("desiredStatus")), STARTING),
            raw_state=pod.get("desiredStatus"),
        )

    def after_create(self, instance_id: str, public_key: str) -> None:
        """Nothing to do: the key went in with the create call (``PUBLIC_KEY``)."""

    # -- query -----------------------------------------------------------------------------
    def get(self, instance_id: str) -> Optional[Instance]:
        if self.config.api == "graphql":
            data = self.graphql(POD_QUERY, {"input": {"podId": instance_id}})
            pod = data.get("pod")
            return None if not pod else self._from_graphql(pod)
        reply = self.rest.request("GET", f"/pods/{instance_id}", allow_statuses=(404,))
        if reply.status == 404 or not isinstance(reply.data, dict) or not reply.data.get("id"):
            return None
        return self._from_rest(reply.data)

    def _from_rest(self, pod: dict) -> Instance:
        raw = str(pod.get("desiredStatus") or "")
        mappings = pod.get("portMappings") or {}
        port = mappings.get("22") if isinstance(mappings, dict) else None
        gpu = pod.get("gpu") or {}
        machine = pod.get("machine") or {}
        price = _float(pod.get("adjustedCostPerHr"))
        if price is None:
            price = _float(pod.get("costPerHr"))
        return Instance(
            id=str(pod["id"]), provider=KIND, ssh_host=pod.get("publicIp") or None,
            ssh_port=int(port) if port else None, ssh_user=self.config.ssh_user, hourly_price=price,
            gpu_name=gpu.get("displayName") or pod.get("gpuTypeId") or self.config.gpu_type,
            gpu_count=gpu.get("count") or pod.get("gpuCount") or self.config.gpu_count,
            state=_STATES.get(raw, UNKNOWN), location=machine.get("location") or machine.get("dataCenterId"),
            raw_state=raw or None,
        )

    def _from_graphql(self, pod: dict) -> Instance:
        raw = str(pod.get("desiredStatus") or "")
        host = port = None
        for p in ((pod.get("runtime") or {}).get("ports") or []):
            if p.get("privatePort") == 22 and p.get("isIpPublic") and p.get("type", "tcp") == "tcp":
                host, port = p.get("ip"), p.get("publicPort")
                break
        machine = pod.get("machine") or {}
        state = _STATES.get(raw, UNKNOWN)
        if state == RUNNING and not pod.get("runtime"):
            state = STARTING  # desired RUNNING, container not up yet
        return Instance(
            id=str(pod["id"]), provider=KIND, ssh_host=host, ssh_port=int(port) if port else None,
            ssh_user=self.config.ssh_user, hourly_price=_float(pod.get("costPerHr")),
            gpu_name=machine.get("gpuDisplayName") or self.config.gpu_type,
            gpu_count=pod.get("gpuCount") or self.config.gpu_count, state=state,
            location=machine.get("location"), raw_state=raw or None,
        )

    # -- terminate -------------------------------------------------------------------------
    def terminate(self, instance_id: str) -> None:
        if self.config.api == "graphql":
            self.graphql(TERMINATE, {"input": {"podId": instance_id}})
            return
        self.rest.request("DELETE", f"/pods/{instance_id}", allow_statuses=(404,))

    def manual_terminate_command(self, instance_id: str) -> str:
        return f"`runpodctl remove pod {instance_id}` (or terminate it on the Pods page of the RunPod console)"
