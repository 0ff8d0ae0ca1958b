"""Local HTTP servers that answer like RunPod's REST v2 and Vast.ai's APIs, for the provider tests.

Real HTTP on 127.0.0.1 (``http.server`` in a thread); each server records every request
(method, path, headers, JSON body) so tests can assert what the client sent. The shapes and
the strictness come from the published descriptions cited in launcher/providers/runpod.py and
vastai.py (as of 2026-11-25), not from memory:

RunPod REST v2 (base ``<url>/v2``), per docs.runpod.io/api-reference-v2 and RunPod's migration
reference (runpod/runpod-plugins-official, runpod-migrate/reference/*.md):
  GET  /v2/catalog/gpus?include=AVAILABILITY&product=POD&count=N&cloud=C -> {"gpus": [...]};
       ``include`` without ``product`` is a 400.
  POST /v2/pods -> 201 Pod (status PROVISIONING). The body is validated like the v2 schema
       (``additionalProperties: false`` at every level): an unknown field is a 422 that names it
       ("$: additional properties 'cloudType' not allowed"), a missing ``name`` is "$: missing
       property 'name'", ``cloud`` must be SECURE or COMMUNITY (no ALL), exactly one of gpu/cpu,
       ``mounts.persistent.size`` >= 10.
  GET  /v2/pods/{id} -> Pod; status PROVISIONING -> STARTING -> RUNNING; ``runtime.ports`` (the
       public SSH endpoint) only once RUNNING; ``cost`` is the billed $/h of the pod's cloud.
  GET  /v2/pods -> {"pods": [...]} (query parameters ignored, as documented).
  DELETE /v2/pods/{id} -> 204. Errors are problem details {title, status, detail, errors}.
RunPod GraphQL (``<url>/graphql``), kept only for spot pods: gpuTypes {secureSpotPrice
  communitySpotPrice}, podRentInterruptable (needs bidPerGpu); failures are HTTP 200 with
  {"errors": [{"message"}], "data": null}.
Vast.ai (base ``<url>/api/v0``), per docs.vast.ai and the official vast-cli client:
  POST /bundles/ -> {"offers": [...]}: ``dph_total`` prices the disk at ``allocated_storage``
       GB (5 GB, the official client's default, when the search does not say), so an offer
       searched without it looks cheaper than the instance then bills.
  PUT  /asks/{id}/ -> {"success": true, "new_contract": N}; POST /instances/{id}/ssh/;
  GET  /instances/{id}/ -> {"instances": {...}} | {"instances": null} once destroyed;
  GET  /api/v1/instances/?select_filters={"label": {"in": [...]}} -> {"instances": [...], "next_token"};
  DELETE /instances/{id}/ -> {"success": true}. 429s are plain text with no Retry-After.

Knobs (attributes, change them between calls): ``rate_limit_burst`` (next N requests get 429),
``server_errors`` (next N get 503), ``never_public_port``, ``fail_after_create`` (every status
query of a created machine answers 500), ``delete_fails``, ``ready_after`` (status polls before
the machine runs), ``linger_after_delete``, ``live_price`` (the instance's real $/h per GPU,
unlike the catalog's), ``create_then_fail`` ("500": the machine is made, the answer is a 500;
"drop": made, then the connection closes without an answer; "hang": made, and no answer ever
comes, so the client times out), ``list_lag`` (eventual consistency: an instance created while
it is N is absent from the next N answers of the instance list, RunPod's GET /v2/pods and
Vast's /api/v1/instances/, while GET by id already knows it), Vast's ``create_half_fails``
(``success: false`` with a ``new_contract``), RunPod's ``stock`` per cloud, ``graphql_errors``.

Preemption and billing (Vast, for managed runs): ``outbid(id)`` does what Vast does to an
interruptible instance outbid by another renter: it goes ``stopped`` (cur_state,
intended_status and next_state all "stopped"; actual_status is not changed, so a client must
read those) and stays listed, its
disk still billing, until destroyed; ``vanish(id)``: its host died and the instance is gone
(GET answers null, the list omits it); ``refuse_ssh(id)``: the instance still runs but its
public SSH port refuses connections (a port nothing listens on) until ``allow_ssh(id)``.
``billed(id)`` / ``billed_total()`` is the fake's meter: the instance's ``dph_total`` x the time
from its create to its destroy (or its vanishing, or now). A stopped instance bills its disk
only on the real bill; the meter bills the whole ``dph_total`` until destroyed, a ceiling the
launcher's spend ledger (which counts a box until its destroy is confirmed) matches.

``LateSshd``: a TCP port that, like a freshly published port of a rented box, accepts and
immediately resets its first connections (sshd not up yet), then forwards to a real sshd.
"""
from __future__ import annotations

import itertools
import contextlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

API_KEY = "test-key-0123456789abcdef"


def placeholder_ssh_key(folder) -> "Path":
    """A private key path whose .pub is a well-formed public key: enough to rent from a fake (no login)."""
    from pathlib import Path

    key = Path(folder) / "id_ed25519"
    key.write_text("unused\n")
    key.with_name("id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITest test@laptop\n")
    return key


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: Any


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict = field(default_factory=dict)
    text: Optional[str] = None     # a plain-text body instead of JSON
    drop: bool = False             # close the connection without any answer
    hang: bool = False             # never answer (until the server stops): the client times out


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-provider/1"

    def log_message(self, *args):
        """Silence http.server's per-request stderr lines; the fake records requests itself."""

    def _handle(self):
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        reply = fake.dispatch(rec)
        if reply.hang:
            fake.stopping.wait()
            reply.drop = True
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.text is not None:
            payload, ctype = reply.text.encode(), "text/plain; charset=utf-8"
        else:
            payload, ctype = (b"" if reply.body is None else json.dumps(reply.body).encode()), "application/json"
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if payload:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class FakeServer:
    """Base: a threaded HTTP server, request log, auth check and the shared failure knobs."""

    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.rate_limit_burst = 0
        self.server_errors = 0
        # what an instance does once created (each fake reads them its own way)
        self.live_price: Optional[float] = None  # the price the instance reports; None: the catalog's (RunPod per GPU; Vast dph_base + disk)
        self.ready_after = 1  # polls before it runs
        self.never_public_port = False
        self.fail_after_create = False
        self.delete_fails = False
        self.linger_after_delete = 0  # GETs that still show it after a delete
        self.create_then_fail: Optional[str] = None
        self.list_lag = 0  # list answers a new instance is missing from (the list lags the creates)
        self.unlisted: dict[Any, int] = {}  # instance id -> list answers it is still missing from
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "FakeServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        for forwarder in getattr(self, "forwarders", {}).values():
            forwarder.close()
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def calls(self, method: Optional[str] = None, path_re: Optional[str] = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and (path_re is None or re.search(path_re, r.path))]

    def dispatch(self, rec: Recorded) -> Reply:
        with self.lock:
            self.requests.append(rec)
            if rec.headers.get("authorization") != f"Bearer {self.api_key}":
                return self.unauthorized()
            if self.rate_limit_burst > 0:
                self.rate_limit_burst -= 1
                return self.rate_limited()
            if self.server_errors > 0:
                self.server_errors -= 1
                return Reply(503, {"error": "service unavailable"})
            return self.route(rec)

    def unauthorized(self) -> Reply:
        return Reply(401, {"error": "invalid api key"})

    def rate_limited(self) -> Reply:
        return Reply(429, {"error": "Too many requests"}, {"Retry-After": "0"})

    def lagging(self, instance_id: Any) -> None:
        """A new instance: the list leaves it out of its next ``list_lag`` answers."""
        if self.list_lag > 0:
            self.unlisted[instance_id] = self.list_lag

    def listed(self, ids: list) -> list:
        """The ids one list answer shows (those the list has caught up with); counts the answer."""
        shown = [i for i in ids if not self.unlisted.get(i)]
        for i in ids:
            if self.unlisted.get(i):
                self.unlisted[i] -= 1
        return shown

    def route(self, rec: Recorded) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError


# ---------------------------------------------------------------------------- RunPod REST v2
def problem(status: int, title: str, detail: str, errors: Optional[list] = None) -> Reply:
    body: dict = {"detail": detail, "status": status, "title": title}
    if errors:
        body["errors"] = errors
    return Reply(status, body)


# The v2 create schema as far as the published pages describe it; every object is closed
# (additionalProperties: false), so anything else is a 422 naming the field.
POD_CREATE_FIELDS = {"name", "image", "args", "disk", "ports", "env", "registry", "mounts", "gpu", "cpu", "cloud",
                     "dataCenterIds", "templateId"}
GPU_FIELDS = {"id", "count", "minCudaVersion", "allowedCudaVersions"}
MOUNT_FIELDS = {"persistent", "network"}
PERSISTENT_FIELDS = {"size", "path"}


def validate_pod_create(body: Any) -> list[str]:
    """The v2 validator's messages for a create body ([] when valid)."""
    if not isinstance(body, dict):
        return ["$: expected object"]
    errors = [f"$: additional properties '{k}' not allowed" for k in sorted(set(body) - POD_CREATE_FIELDS)]
    if not body.get("name"):
        errors.append("$: missing property 'name'")
    if not body.get("image") and not body.get("templateId"):
        errors.append("$: missing property 'image'")
    if ("gpu" in body) == ("cpu" in body):
        errors.append("$: exactly one of 'gpu' or 'cpu' is required")
    gpu = body.get("gpu")
    if isinstance(gpu, dict):
        errors += [f"$.gpu: additional properties '{k}' not allowed" for k in sorted(set(gpu) - GPU_FIELDS)]
        if not isinstance(gpu.get("id"), str):
            errors.append("$.gpu: missing property 'id'")
        if not isinstance(gpu.get("count", 1), int) or gpu.get("count", 1) < 1:
            errors.append("$.gpu.count: must be >= 1")
        for key in ("minCudaVersion",):  # CreateGpuConfig: "^\d+\.\d+$"
            if key in gpu and not (isinstance(gpu[key], str) and re.fullmatch(r"\d+\.\d+", gpu[key])):
                errors.append(f"$.gpu.{key}: must match '^\\d+\\.\\d+$'")
        if gpu.get("allowedCudaVersions") and "minCudaVersion" in gpu:
            errors.append("$.gpu: allowedCudaVersions and minCudaVersion are mutually exclusive")
    if "cloud" in body and body["cloud"] not in ("SECURE", "COMMUNITY"):
        errors.append("$.cloud: value must be one of 'SECURE', 'COMMUNITY'")
    if "disk" in body and (not isinstance(body["disk"], int) or body["disk"] < 1):
        errors.append("$.disk: must be >= 1")
    ports = body.get("ports", [])
    if not isinstance(ports, list) or not all(isinstance(p, str) and re.fullmatch(r"\d+/(tcp|http)", p) for p in ports):
        errors.append("$.ports: items must match port/protocol, e.g. '22/tcp'")
    env = body.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        errors.append("$.env: must be an object of strings")
    mounts = body.get("mounts")
    if mounts is not None:
        if not isinstance(mounts, dict):
            errors.append("$.mounts: expected object")
        else:
            errors += [f"$.mounts: additional properties '{k}' not allowed" for k in sorted(set(mounts) - MOUNT_FIELDS)]
            persistent = mounts.get("persistent")
            if isinstance(persistent, dict):
                errors += [f"$.mounts.persistent: additional properties '{k}' not allowed"
                           for k in sorted(set(persistent) - PERSISTENT_FIELDS)]
                if not isinstance(persistent.get("size"), int) or persistent["size"] < 10:
                    errors.append("$.mounts.persistent.size: must be >= 10")
    return errors


class FakeRunPod(FakeServer):
    """RunPod's REST API v2 under /v2 and GraphQL (spot pods only) under /graphql, on one port."""

    GPU = "NVIDIA GeForce RTX 4090"

    def __init__(self, ssh_host: str = "203.0.113.10", ssh_port: int = 10341, api_key: str = API_KEY):
        super().__init__(api_key)
        self.ssh_host, self.ssh_port = ssh_host, ssh_port
        self.pods: dict[str, dict] = {}
        self.deleted: dict[str, int] = {}   # pod id -> GETs answered since deletion
        self.polls: dict[str, int] = {}
        self.ids = (f"pod{n:04d}xyz" for n in itertools.count(1))
        self.prices = {"SECURE": 0.69, "COMMUNITY": 0.34}          # per GPU, on-demand
        self.spot_prices = {"SECURE": 0.35, "COMMUNITY": 0.20}     # per GPU, GraphQL spot list prices
        self.stock = {"SECURE": "HIGH", "COMMUNITY": "HIGH"}
        self.graphql_errors: Optional[list] = None

    @property
    def rest_base(self) -> str:
        return f"{self.url}/v2"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def rate_limited(self) -> Reply:
        reply = problem(429, "Too Many Requests", "rate limit exceeded")
        reply.headers["Retry-After"] = "0"
        return reply

    def unauthorized(self) -> Reply:
        return problem(401, "Unauthorized", "invalid or missing API key")

    def route(self, rec: Recorded) -> Reply:
        parts = urlsplit(rec.path)
        path, query = parts.path, parse_qs(parts.query)
        if path.rstrip("/") == "/graphql" and rec.method == "POST":
            return self.graphql(rec.body or {})
        if path == "/v2/catalog/gpus" and rec.method == "GET":
            return self.catalog(query)
        m = re.fullmatch(r"/v2/pods(?:/([^/]+))?", path)
        if not m:
            return problem(404, "Not Found", f"no route {rec.method} {path}")
        pod_id = m.group(1)
        if pod_id is None and rec.method == "POST":
            return self.create(rec.body)
        if pod_id is None and rec.method == "GET":
            shown = self.listed([i for i in self.pods if i not in self.deleted])
            return Reply(200, {"pods": [self._view(self.pods[i]) for i in shown]})
        if pod_id and rec.method == "GET":
            return self.get(pod_id)
        if pod_id and rec.method == "DELETE":
            return self.delete(pod_id)
        return problem(405, "Method Not Allowed", f"{rec.method} {path}")

    def catalog(self, query: dict) -> Reply:
        if "include" in query and "product" not in query:
            return problem(400, "Bad Request", "product is required when include is set")
        cloud = (query.get("cloud") or [None])[0]
        gpus = [{
            "id": self.GPU, "name": "RTX 4090", "memory": 24, "manufacturer": "NVIDIA", "pool": "ADA_24",
            "secure": True, "community": True,
            "price": {"secure": self.prices["SECURE"], "community": self.prices["COMMUNITY"]},
            "maxCount": {"secure": 8, "community": 8},
            "availability": self.stock.get(cloud, "HIGH") if cloud else max(self.stock.values()),
        }, {
            "id": "NVIDIA A40", "name": "A40", "memory": 48, "manufacturer": "NVIDIA", "pool": "AMPERE_48",
            "secure": True, "community": False, "price": {"secure": 0.40, "community": None},
            "maxCount": {"secure": 8, "community": 0}, "availability": "LOW",
        }]
        return Reply(200, {"gpus": gpus})

    def _cost(self, pod: dict) -> float:
        per_gpu = self.live_price if self.live_price is not None else (
            self.spot_prices if pod.get("interruptible") else self.prices)[pod["cloud"]]
        return round(per_gpu * pod["gpu"]["count"], 4)

    def _view(self, pod: dict) -> dict:
        view = {k: v for k, v in pod.items() if k != "interruptible"}
        view["cost"] = self._cost(pod)
        return view

    def create(self, body: Any) -> Reply:
        errors = validate_pod_create(body)
        if errors:
            return problem(422, "Unprocessable Entity", "Request validation failed.", errors)
        pod_id = next(self.ids)
        self.pods[pod_id] = {
            "id": pod_id, "name": body["name"], "image": body["image"], "status": "PROVISIONING",
            "cloud": body.get("cloud", "SECURE"), "gpu": {"id": body["gpu"]["id"], "count": body["gpu"].get("count", 1)},
            "disk": body.get("disk"), "ports": body.get("ports", []), "env": body.get("env", {}),
            "mounts": body.get("mounts", {}), "dataCenterId": "CA-MTL-1", "runtime": None,
            "actions": ["stop", "restart", "terminate"], "interruptible": False,
        }
        self.polls[pod_id] = 0
        self.lagging(pod_id)
        if self.create_then_fail == "500":
            return problem(500, "Internal Server Error", "upstream timeout")
        if self.create_then_fail in ("drop", "hang"):
            return Reply(0, drop=self.create_then_fail == "drop", hang=self.create_then_fail == "hang")
        return Reply(201, self._view(self.pods[pod_id]))

    def _advance(self, pod_id: str) -> Optional[dict]:
        """One status poll: PROVISIONING, STARTING, then RUNNING with its public port."""
        if pod_id in self.deleted:
            self.deleted[pod_id] += 1
            if self.deleted[pod_id] <= self.linger_after_delete:
                return {**self._view(self.pods[pod_id]), "status": "EXITED", "runtime": None}
            return None
        pod = self.pods.get(pod_id)
        if pod is None:
            return None
        self.polls[pod_id] += 1
        if self.polls[pod_id] >= self.ready_after:
            pod["status"] = "RUNNING"
            ports = [] if self.never_public_port else [{"private": 22, "public": self.ssh_port, "type": "tcp", "ip": self.ssh_host}]
            pod["runtime"] = {"uptime": 5, "ports": ports}
        else:
            pod["status"] = "STARTING"
        return self._view(pod)

    def get(self, pod_id: str) -> Reply:
        if self.fail_after_create and pod_id in self.pods:
            return problem(500, "Internal Server Error", "internal error")
        pod = self._advance(pod_id)
        if pod is None:
            return problem(404, "Not Found", f"pod {pod_id} not found")
        return Reply(200, pod)

    def delete(self, pod_id: str) -> Reply:
        if self.delete_fails:
            return problem(500, "Internal Server Error", "internal error")
        if pod_id not in self.pods or pod_id in self.deleted:
            return problem(404, "Not Found", f"pod {pod_id} not found")
        self.deleted[pod_id] = 0
        return Reply(204)

    def alive(self) -> list[str]:
        """Pods that exist and bill."""
        return [i for i in self.pods if i not in self.deleted]

    # -- GraphQL (spot pods only) ---------------------------------------------------------
    def graphql(self, body: dict) -> Reply:
        query, variables = body.get("query", ""), body.get("variables") or {}
        if self.graphql_errors is not None:
            return Reply(200, {"errors": self.graphql_errors, "data": None})
        if "gpuTypes" in query:
            gpu_id = (variables.get("input") or {}).get("id")
            types = [{"id": self.GPU, "displayName": "RTX 4090", "secureSpotPrice": self.spot_prices["SECURE"],
                      "communitySpotPrice": self.spot_prices["COMMUNITY"]}]
            return Reply(200, {"data": {"gpuTypes": [t for t in types if gpu_id in (None, t["id"])]}})
        if "podRentInterruptable" in query:
            inp = variables.get("input") or {}
            if "bidPerGpu" not in inp:
                return Reply(200, {"errors": [{"message": "bidPerGpu is required"}], "data": None})
            if inp.get("cloudType") not in ("SECURE", "COMMUNITY"):
                return Reply(200, {"errors": [{"message": "cloudType must be SECURE or COMMUNITY for a spot pod"}], "data": None})
            created = self.create({"name": inp.get("name"), "image": inp.get("imageName"), "cloud": inp["cloudType"],
                                   "gpu": {"id": inp.get("gpuTypeId"), "count": inp.get("gpuCount") or 1},
                                   "env": {e["key"]: e["value"] for e in inp.get("env", [])}})
            if created.status != 201:
                return Reply(200, {"errors": [{"message": json.dumps(created.body)}], "data": None})
            pod = self.pods[created.body["id"]]
            pod["interruptible"] = True
            return Reply(200, {"data": {"podRentInterruptable": {"id": pod["id"], "desiredStatus": "RUNNING",
                                                                  "costPerHr": self._cost(pod)}}})
        return Reply(200, {"errors": [{"message": "Cannot query field on type Query"}], "data": None})


# ---------------------------------------------------------------------------- Vast.ai
VAST_DEFAULT_STORAGE_GB = 5.0  # what the official client sends when not told (vastai/api/offers.py)


def vast_storage_per_hour(offer: dict, gb: float) -> float:
    """``storage_cost`` is $/GB/month; Vast bills it by the hour."""
    return offer["storage_cost"] * gb / (30 * 24)


class FakeVast(FakeServer):
    """Vast.ai's REST API under /api/v0 (and the paginated instance list under /api/v1)."""

    def __init__(self, ssh_host: str = "203.0.113.20", ssh_port: int = 41234, api_key: str = API_KEY,
                 offers: Optional[list[dict]] = None):
        super().__init__(api_key)
        self.ssh_host, self.ssh_port = ssh_host, ssh_port
        self.offers = offers if offers is not None else default_vast_offers()
        self.instances: dict[int, dict] = {}
        self.deleted: dict[int, int] = {}
        self.polls: dict[int, int] = {}
        self.keys: dict[int, list[str]] = {}
        self.ids = itertools.count(7000001)
        self.create_half_fails = False
        self.direct = True  # report ports {"22/tcp": ...} and public_ipaddr (direct SSH)
        # preemption and the billing meter (see the module docstring)
        self.ssh_ports: dict[int, int] = {}    # per-instance public SSH port (refuse_ssh points it at a closed port)
        self.created_at: dict[int, float] = {}
        self.ended_at: dict[int, float] = {}    # destroyed or vanished
        self.vanished: set[int] = set()
        self.forward_ssh = False  # each instance gets its own published port (a forwarder to ssh_port) that refuse_ssh closes
        self.forwarders: dict[int, "LateSshd"] = {}

    # -- preemption knobs and the billing meter ------------------------------------------------
    def change_bid(self, iid: int, body: Any) -> Reply:
        """PUT /instances/bid_price/{id}/ {client_id, price (0.001..32)}: a bid at or over the winning one runs again."""
        if not isinstance(body, dict) or body.get("client_id") != "me" or not isinstance(body.get("price"), (int, float)):
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "client_id and price are required"})
        if not 0.001 <= body["price"] <= 32:
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "price must be between 0.001 and 32"})
        inst = self.instances.get(iid)
        if inst is None or iid in self.deleted or iid in self.vanished:
            return Reply(404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"})
        inst["bid"] = body["price"]
        if inst.get("_preempted") and body["price"] >= inst.get("_winning_bid", float("inf")):
            inst.pop("_preempted")
            inst.update(cur_state="running", intended_status="running", next_state="running")
            self.polls[iid] = 0  # it starts again
        return Reply(200, {"success": True})

    def outbid(self, iid: int, winning_bid: Optional[float] = None) -> None:
        """Another renter outbid the instance; a later bid of at least ``winning_bid`` wins it back."""
        with self.lock:
            inst = self.instances[int(iid)]
            if winning_bid is not None:
                inst["_winning_bid"] = winning_bid
            # actual_status is left as it was: the fields that say "outbid" are the three below
            inst.update(cur_state="stopped", intended_status="stopped", next_state="stopped",
                        status_msg="outbid: stopped (interruptible instance)")
            inst["_preempted"] = True

    def vanish(self, iid: int) -> None:
        with self.lock:
            self.vanished.add(int(iid))
            self.ended_at.setdefault(int(iid), time.time())

    def refuse_ssh(self, iid: int) -> None:
        iid = int(iid)
        forwarder = self.forwarders.pop(iid, None)
        if forwarder is not None:  # its own published port: closed, with the connections through it
            forwarder.close()
            return
        with socket.socket() as closed:  # bound then closed: nothing listens there
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        self.ssh_ports[iid] = port

    def allow_ssh(self, iid: int) -> None:
        self.ssh_ports.pop(int(iid), None)

    def billed(self, iid: int) -> float:
        iid = int(iid)
        end = self.ended_at.get(iid, time.time())
        return self.instances[iid]["dph_total"] * max(0.0, end - self.created_at[iid]) / 3600.0

    def billed_total(self) -> float:
        return sum(self.billed(i) for i in self.instances)

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v0"

    def unauthorized(self) -> Reply:
        return Reply(401, {"success": False, "error": "invalid_user_key", "msg": "Invalid user key"})

    def rate_limited(self) -> Reply:
        return Reply(429, text="API requests too frequent endpoint threshold=2.0")  # plain text, no Retry-After

    def route(self, rec: Recorded) -> Reply:
        parts = urlsplit(rec.path)
        path = parts.path
        if path == "/api/v0/bundles/" and rec.method == "POST":
            return self.search(rec.body or {})
        if path == "/api/v1/instances/" and rec.method == "GET":
            return self.list_instances(parse_qs(parts.query))
        m = re.fullmatch(r"/api/v0/asks/(\d+)/", path)
        if m and rec.method == "PUT":
            return self.create(int(m.group(1)), rec.body or {})
        m = re.fullmatch(r"/api/v0/instances/bid_price/(\d+)/", path)
        if m and rec.method == "PUT":
            return self.change_bid(int(m.group(1)), rec.body)
        m = re.fullmatch(r"/api/v0/instances/(\d+)/ssh/", path)
        if m and rec.method == "POST":
            iid = int(m.group(1))
            if iid not in self.instances:
                return Reply(404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"})
            self.keys.setdefault(iid, []).append((rec.body or {}).get("ssh_key", ""))
            return Reply(200, {"success": True, "msg": "SSH key attached successfully"})
        m = re.fullmatch(r"/api/v0/instances/(\d+)/", path)
        if m and rec.method == "GET":
            return self.get(int(m.group(1)))
        if m and rec.method == "DELETE":
            return self.destroy(int(m.group(1)))
        return Reply(404, {"success": False, "error": "not_found", "msg": f"no route {rec.method} {path}"})

    @staticmethod
    def _matches(value: Any, cond: dict) -> bool:
        for op, target in cond.items():
            if op == "eq" and value != target:
                return False
            if op == "gte" and (value is None or value < target):
                return False
            if op == "lte" and (value is None or value > target):
                return False
            if op == "in" and value not in target:
                return False
        return True

    def priced(self, offer: dict, storage_gb: float) -> dict:
        """The offer as a search with ``allocated_storage`` = storage_gb shows it."""
        storage = vast_storage_per_hour(offer, storage_gb)
        return {**offer, "storage_total_cost": round(storage, 6), "dph_total": round(offer["dph_base"] + storage, 6)}

    def search(self, query: dict) -> Reply:
        if query.get("type") not in ("on-demand", "bid", "reserved"):
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "type must be on-demand, bid or reserved"})
        storage = float(query.get("allocated_storage") or VAST_DEFAULT_STORAGE_GB)
        priced = [self.priced(o, storage) for o in self.offers]
        found = [o for o in priced if all(self._matches(o.get(k), v) for k, v in query.items() if isinstance(v, dict))]
        for key, direction in reversed(query.get("order") or []):
            found.sort(key=lambda o: o.get(key, 0), reverse=direction == "desc")
        return Reply(200, {"offers": found[: int(query.get("limit") or 64)]})

    def create(self, ask_id: int, body: dict) -> Reply:
        offer = next((o for o in self.offers if o["id"] == ask_id), None)
        if offer is None or offer.get("rented"):
            return Reply(400, {"success": False, "error": "no_such_ask", "msg": f"Instance type {ask_id} is no longer available."})
        if not body.get("image"):
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "image is required"})
        iid = next(self.ids)
        offer["rented"] = True
        disk = float(body.get("disk") or 10)
        price = self.live_price if self.live_price is not None else offer["dph_base"] + vast_storage_per_hour(offer, disk)
        if "price" in body and not (isinstance(body["price"], (int, float)) and 0.001 <= body["price"] <= 32):
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "price (the bid) must be between 0.001 and 32"})
        self.instances[iid] = {
            "id": iid, "actual_status": None, "bid": body.get("price"), "is_bid": "price" in body, "intended_status": "running", "cur_state": "running",
            "label": body.get("label"), "image_uuid": body["image"], "image_runtype": body.get("runtype"),
            "onstart": body.get("onstart"), "ssh_host": None, "ssh_port": None, "public_ipaddr": None, "ports": {},
            "gpu_name": offer["gpu_name"], "num_gpus": offer["num_gpus"], "geolocation": offer.get("geolocation"),
            "dph_base": offer["dph_base"], "dph_total": round(price, 6), "disk_space": disk,
        }
        self.polls[iid] = 0
        self.lagging(iid)
        self.created_at[iid] = time.time()
        if self.forward_ssh:
            forwarder = LateSshd(self.ssh_port, resets=0, host=self.ssh_host).__enter__()
            self.forwarders[iid], self.ssh_ports[iid] = forwarder, forwarder.port
        if self.create_half_fails:
            return Reply(200, {"success": False, "new_contract": iid, "error": "machine_error",
                               "msg": "Error starting container, please try another machine"})
        if self.create_then_fail == "500":
            return Reply(500, {"success": False, "error": "server_error", "msg": "internal error"})
        if self.create_then_fail in ("drop", "hang"):
            return Reply(0, drop=self.create_then_fail == "drop", hang=self.create_then_fail == "hang")
        return Reply(200, {"success": True, "new_contract": iid})

    def _advance(self, iid: int) -> Optional[dict]:
        if iid in self.deleted:
            self.deleted[iid] += 1
            if self.deleted[iid] <= self.linger_after_delete:
                inst = dict(self.instances[iid])
                inst["actual_status"], inst["intended_status"] = "exited", "stopped"
                return inst
            return None
        inst = self.instances.get(iid)
        if inst is None or iid in self.vanished:
            return None
        self.polls[iid] += 1
        if inst.get("_preempted"):
            return {k: v for k, v in inst.items() if not k.startswith("_")}
        inst["actual_status"] = "loading" if self.polls[iid] < self.ready_after else "running"
        if inst["actual_status"] == "running" and not self.never_public_port:
            port = self.ssh_ports.get(iid, self.ssh_port)
            inst["ssh_host"], inst["ssh_port"] = self.ssh_host, port
            if self.direct:
                inst["public_ipaddr"] = self.ssh_host
                inst["ports"] = {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
        return {k: v for k, v in inst.items() if not k.startswith("_")}

    def get(self, iid: int) -> Reply:
        if self.fail_after_create and iid in self.instances:
            return Reply(500, {"success": False, "error": "server_error", "msg": "internal error"})
        return Reply(200, {"instances": self._advance(iid)})

    def list_instances(self, query: dict) -> Reply:
        filters = json.loads((query.get("select_filters") or ["{}"])[0])
        shown = self.listed([iid for iid in sorted(self.instances) if iid not in self.deleted and iid not in self.vanished])
        rows = [{k: v for k, v in self.instances[iid].items() if not k.startswith("_")} for iid in shown]
        rows = [r for r in rows if all(self._matches(r.get(k), v) for k, v in filters.items())]
        return Reply(200, {"instances": rows, "next_token": None, "total_instances": len(rows)})

    def destroy(self, iid: int) -> Reply:
        if self.delete_fails:
            return Reply(500, {"success": False, "error": "server_error", "msg": "internal error"})
        if iid not in self.instances or iid in self.deleted or iid in self.vanished:
            return Reply(404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"})
        self.deleted[iid] = 0
        self.ended_at.setdefault(iid, time.time())
        return Reply(200, {"success": True})

    def alive(self) -> list[int]:
        """Instances that exist and bill."""
        return [i for i in self.instances if i not in self.deleted and i not in self.vanished]


def default_vast_offers() -> list[dict]:
    """Offers in the search response's documented shape (a subset of its fields).

    ``dph_base`` is the machine; ``storage_cost`` ($/GB/month) is what the disk adds to ``dph_total``;
    ``gpu_ram`` is MB per GPU; ``machine_id`` names the physical host (several asks may share one).
    """
    base = {"num_gpus": 1, "gpu_name": "RTX 4090", "rentable": True, "rented": False, "verified": True,
            "verification": "verified", "disk_space": 500.0, "gpu_ram": 24564, "direct_port_count": 20,
            "cuda_max_good": 12.9, "driver_version": "575.57.08"}
    rows = [  # id, dph_base, storage $/GB/month, reliability, where
        (3001, 0.40, 0.15, 0.995, "Norway, NO"), (3002, 0.28, 0.30, 0.990, "Quebec, CA"),
        (3003, 0.34, 0.10, 0.999, "Texas, US"), (3004, 0.21, 0.10, 0.900, "Unreliable, XX"),
        (3005, 0.94, 0.10, 0.999, "Expensive, DE"),
    ]
    offers = [dict(base, id=oid, ask_contract_id=oid, machine_id=oid + 50000, dph_base=dph, storage_cost=sc, reliability=rel,
                   reliability2=rel, geolocation=loc) for oid, dph, sc, rel, loc in rows]
    offers.append(dict(base, id=3006, ask_contract_id=3006, machine_id=53006, dph_base=0.2, storage_cost=0.1, reliability=0.999,
                       reliability2=0.999, geolocation="Nodirect, US", direct_port_count=0))
    offers.append(dict(base, id=3007, ask_contract_id=3007, machine_id=53007, dph_base=0.15, storage_cost=0.1, reliability=0.999,
                       reliability2=0.999, geolocation="Twogpu, US", num_gpus=2))
    # the cheapest good host, but its driver runs CUDA 12.4 at most: an image built for 12.8 does not start there
    offers.append(dict(base, id=3008, ask_contract_id=3008, dph_base=0.12, storage_cost=0.1, reliability=0.999,
                       reliability2=0.999, geolocation="Olddriver, US", cuda_max_good=12.4, driver_version="550.54.14"))
    return offers


# ---------------------------------------------------------------------------- a late sshd
class LateSshd:
    """A published port whose sshd is not up yet: the first ``resets`` connections are accepted
    and reset at once (what a container's port proxy does before sshd listens), later ones are
    forwarded to the real sshd at ``target_port``."""

    def __init__(self, target_port: int, resets: int = 3, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.resets = resets
        self.accepted = 0
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.closed = False
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def __enter__(self) -> "LateSshd":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening (new connections are refused) and cut the connections forwarded so far."""
        self.closed = True
        with contextlib.suppress(OSError):  # wakes the accept() blocked in _serve: close() alone leaves it accepting once more
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.sockets_lock:
            cut = list(self.open_sockets)
        for conn in cut:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.closed:  # accepted as the port closed: refused like the rest
                conn.close()
                return
            self.accepted += 1
            if self.accepted <= self.resets:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
                conn.close()
                continue
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            conn.close()
            return
        with self.sockets_lock:
            if self.closed:  # closed while this connection was being forwarded: cut it like the others
                for s in (conn, upstream):
                    s.close()
                return
            self.open_sockets.update((conn, upstream))

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                with contextlib.suppress(OSError):  # either side closing ends the pipe
                    while data := src.recv(65536):
                        dst.sendall(data)
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
        pipe(conn, upstream)
