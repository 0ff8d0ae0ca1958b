"""Local HTTP servers that answer like RunPod's and Vast.ai's APIs, for the provider tests.

Real HTTP on 127.0.0.1 (``http.server`` in a thread); each server records every request
(method, path, headers, JSON body) so tests can assert what the client sent. The shapes
follow the providers' documentation (cited in launcher/providers/runpod.py and vastai.py):

RunPod REST  (base ``<url>/v1``): POST /pods -> 201 Pod; GET /pods/{id} -> Pod | 404;
             DELETE /pods/{id} -> 204; errors {"error": "...", "status": N}.
RunPod GraphQL (``<url>/graphql``): gpuTypes, podFindAndDeployOnDemand, podRentInterruptable,
             pod(input: {podId}) with runtime.ports, podTerminate; failures are HTTP 200 with
             {"errors": [{"message": ...}], "data": null}.
Vast.ai      (base ``<url>/api/v0``): POST /bundles/ -> {"offers": [...]};
             PUT /asks/{id}/ -> {"success": true, "new_contract": N};
             POST /instances/{id}/ssh/ -> {"success": true, "msg": ...};
             GET /instances/{id}/ -> {"instances": {...}} | {"instances": null} once destroyed;
             DELETE /instances/{id}/ -> {"success": true}.

Knobs (attributes, change them between calls): ``rate_limit_burst`` (next N requests get 429
with Retry-After: 0), ``server_errors`` (next N get 503), ``never_public_port`` (the machine
runs but never gets a public SSH port), ``fail_after_create`` (create succeeds, then every
status query answers 500), ``delete_fails`` (terminate answers 500), ``ready_after`` (status
polls before the machine runs), ``linger_after_delete`` (polls a deleted machine still shows),
``live_price`` (the instance's real $/h, unlike the catalog's), ``graphql_errors``.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

API_KEY = "test-key-0123456789abcdef"


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
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if payload:
            self.send_header("Content-Type", "application/json")
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
                return Reply(429, {"error": "Too many requests"}, {"Retry-After": "0"})
            if self.server_errors > 0:
                self.server_errors -= 1
                return Reply(503, {"error": "service unavailable"})
            return self.route(rec)

    def unauthorized(self) -> Reply:
        return Reply(401, {"error": "invalid api key"})

    def route(self, rec: Recorded) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError


class FakeRunPod(FakeServer):
    """RunPod's REST API under /v1 and GraphQL under /graphql, on one port."""

    def __init__(self, ssh_host: str = "203.0.113.10", ssh_port: int = 10341, api_key: str = API_KEY):
        super().__init__(api_key)
        self.ssh_host, self.ssh_port = ssh_host, ssh_port
        self.pods: dict[str, dict] = {}
        self.deleted: dict[str, int] = {}   # pod id -> GETs answered since deletion
        self.polls: dict[str, int] = {}
        self.ids = (f"pod{n:04d}xyz" for n in itertools.count(1))
        self.catalog_price = 0.69         # per GPU, uninterruptable
        self.spot_price = 0.35
        self.live_price = 0.74            # per GPU: what the pod really costs
        self.ready_after = 1
        self.never_public_port = False
        self.fail_after_create = False
        self.delete_fails = False
        self.linger_after_delete = 0
        self.graphql_errors: Optional[list] = None

    @property
    def rest_base(self) -> str:
        return f"{self.url}/v1"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def route(self, rec: Recorded) -> Reply:
        if rec.path.rstrip("/") == "/graphql" and rec.method == "POST":
            return self.graphql(rec.body or {})
        m = re.fullmatch(r"/v1/pods(?:/([^/?]+))?(?:\?.*)?", rec.path)
        if not m:
            return Reply(404, {"error": f"no route {rec.method} {rec.path}", "status": 404})
        pod_id = m.group(1)
        if pod_id is None and rec.method == "POST":
            return self.create(rec.body or {})
        if pod_id and rec.method == "GET":
            return self.get(pod_id)
        if pod_id and rec.method == "DELETE":
            return self.delete(pod_id)
        return Reply(405, {"error": "method not allowed", "status": 405})

    # -- REST -----------------------------------------------------------------------------
    def create(self, body: dict) -> Reply:
        if not body.get("imageName") or not body.get("gpuTypeIds"):
            return Reply(400, {"error": "imageName and gpuTypeIds are required", "status": 400})
        pod_id = next(self.ids)
        count = int(body.get("gpuCount") or 1)
        self.pods[pod_id] = {
            "id": pod_id, "name": body.get("name"), "image": body["imageName"], "desiredStatus": "RUNNING",
            "costPerHr": f"{self.live_price * count:.2f}", "adjustedCostPerHr": round(self.live_price * count, 4),
            "gpu": {"id": body["gpuTypeIds"][0], "count": count, "displayName": body["gpuTypeIds"][0].replace("NVIDIA GeForce ", "")},
            "interruptible": bool(body.get("interruptible")), "ports": body.get("ports", []),
            "env": body.get("env", {}), "publicIp": None, "portMappings": None,
            "machine": {"location": "CA", "dataCenterId": "CA-MTL-1"}, "containerDiskInGb": body.get("containerDiskInGb"),
            "volumeInGb": body.get("volumeInGb"),
        }
        self.polls[pod_id] = 0
        return Reply(201, dict(self.pods[pod_id]))

    def _advance(self, pod_id: str) -> Optional[dict]:
        """One status poll: the pod gets its public port after ``ready_after`` polls."""
        if pod_id in self.deleted:
            self.deleted[pod_id] += 1
            if self.deleted[pod_id] <= self.linger_after_delete:
                pod = dict(self.pods[pod_id])
                pod["desiredStatus"] = "EXITED"
                return pod
            return None
        pod = self.pods.get(pod_id)
        if pod is None:
            return None
        self.polls[pod_id] += 1
        if self.polls[pod_id] >= self.ready_after and not self.never_public_port:
            pod["publicIp"] = self.ssh_host
            pod["portMappings"] = {"22": self.ssh_port}
        return dict(pod)

    def get(self, pod_id: str) -> Reply:
        if self.fail_after_create and pod_id in self.pods:
            return Reply(500, {"error": "internal error", "status": 500})
        pod = self._advance(pod_id)
        if pod is None:
            return Reply(404, {"error": "pod not found", "status": 404})
        return Reply(200, pod)

    def delete(self, pod_id: str) -> Reply:
        if self.delete_fails:
            return Reply(500, {"error": "internal error", "status": 500})
        if pod_id not in self.pods or pod_id in self.deleted:
            return Reply(404, {"error": "pod not found", "status": 404})
        self.deleted[pod_id] = 0
        return Reply(204)

    # -- GraphQL --------------------------------------------------------------------------
    def graphql(self, body: dict) -> Reply:
        query, variables = body.get("query", ""), body.get("variables") or {}
        if self.graphql_errors is not None:
            return Reply(200, {"errors": self.graphql_errors, "data": None})
        if "gpuTypes" in query:
            gpu_id = (variables.get("input") or {}).get("id")
            types = [{
                "id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24,
                "securePrice": 0.69, "communityPrice": 0.34, "secureSpotPrice": 0.35, "communitySpotPrice": 0.2,
                "lowestPrice": {"uninterruptablePrice": self.catalog_price, "minimumBidPrice": self.spot_price, "stockStatus": "High"},
            }]
            return Reply(200, {"data": {"gpuTypes": [t for t in types if gpu_id in (None, t["id"])]}})
        for mutation in ("podFindAndDeployOnDemand", "podRentInterruptable"):
            if mutation in query:
                inp = variables.get("input") or {}
                if mutation == "podRentInterruptable" and "bidPerGpu" not in inp:
                    return Reply(200, {"errors": [{"message": "bidPerGpu is required"}], "data": None})
                created = self.create({"imageName": inp.get("imageName"), "gpuTypeIds": [inp.get("gpuTypeId")],
                                       "gpuCount": inp.get("gpuCount"), "name": inp.get("name"),
                                       "env": {e["key"]: e["value"] for e in inp.get("env", [])}})
                if created.status != 201:
                    return Reply(200, {"errors": [{"message": created.body["error"]}], "data": None})
                pod = created.body
                return Reply(200, {"data": {mutation: {"id": pod["id"], "desiredStatus": "RUNNING", "costPerHr": float(pod["costPerHr"]),
                                                       "machineId": "m1", "imageName": pod["image"]}}})
        if "podTerminate" in query:
            pod_id = (variables.get("input") or {}).get("podId")
            reply = self.delete(pod_id)
            if reply.status == 404:
                return Reply(200, {"errors": [{"message": "pod not found", "path": ["podTerminate"]}], "data": None})
            if reply.status >= 400:
                return Reply(200, {"errors": [{"message": "internal error"}], "data": None})
            return Reply(200, {"data": {"podTerminate": None}})
        if re.search(r"\bpod\s*\(", query):
            pod_id = (variables.get("input") or {}).get("podId")
            if self.fail_after_create and pod_id in self.pods:
                return Reply(200, {"errors": [{"message": "internal error"}], "data": None})
            pod = self._advance(pod_id)
            if pod is None:
                return Reply(200, {"data": {"pod": None}})
            ports = [{"ip": pod["publicIp"], "isIpPublic": True, "privatePort": 22, "publicPort": pod["portMappings"]["22"], "type": "tcp"}] \
                if pod.get("portMappings") else []
            return Reply(200, {"data": {"pod": {
                "id": pod["id"], "name": pod["name"], "desiredStatus": pod["desiredStatus"], "costPerHr": float(pod["costPerHr"]),
                "gpuCount": pod["gpu"]["count"], "machine": {"gpuDisplayName": pod["gpu"]["displayName"], "location": "CA"},
                "runtime": {"uptimeInSeconds": 5, "ports": ports},
            }}})
        return Reply(200, {"errors": [{"message": "Cannot query field on type Query"}], "data": None})


class FakeVast(FakeServer):
    """Vast.ai's REST API under /api/v0."""

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
        self.live_price: Optional[float] = None  # None: the offer's dph_total
        self.ready_after = 1
        self.never_public_port = False
        self.fail_after_create = False
        self.delete_fails = False
        self.linger_after_delete = 0
        self.direct = True  # report ports {"22/tcp": ...} and public_ipaddr (direct SSH)

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v0"

    def unauthorized(self) -> Reply:
        return Reply(401, {"success": False, "error": "invalid_user_key", "msg": "Invalid user key"})

    def route(self, rec: Recorded) -> Reply:
        path = rec.path.split("?", 1)[0]
        if path == "/api/v0/bundles/" and rec.method == "POST":
            return self.search(rec.body or {})
        m = re.fullmatch(r"/api/v0/asks/(\d+)/", path)
        if m and rec.method == "PUT":
            return self.create(int(m.group(1)), rec.body or {})
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
    def _matches(offer: dict, field_name: str, cond: dict) -> bool:
        value = offer.get(field_name)
        for op, target in cond.items():
            if op == "eq" and value != target:
                return False
            if op == "gte" and (value is None or value < target):
                return False
            if op == "lte" and (value is None or value > target):
                return False
        return True

    def search(self, query: dict) -> Reply:
        if query.get("type") not in ("on-demand", "bid", "reserved"):
            return Reply(400, {"success": False, "error": "invalid_args", "msg": "type must be on-demand, bid or reserved"})
        found = [o for o in self.offers
                 if all(self._matches(o, k, v) for k, v in query.items() if isinstance(v, dict))]
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
        self.instances[iid] = {
            "id": iid, "actual_status": None, "intended_status": "running", "cur_state": "running",
            "label": body.get("label"), "image_uuid": body["image"], "image_runtype": body.get("runtype"),
            "onstart": body.get("onstart"), "ssh_host": None, "ssh_port": None, "public_ipaddr": None, "ports": {},
            "gpu_name": offer["gpu_name"], "num_gpus": offer["num_gpus"], "geolocation": offer.get("geolocation"),
            "dph_total": self.live_price if self.live_price is not None else offer["dph_total"], "disk_space": body.get("disk"),
        }
        self.polls[iid] = 0
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
        if inst is None:
            return None
        self.polls[iid] += 1
        inst["actual_status"] = "loading" if self.polls[iid] < self.ready_after else "running"
        if inst["actual_status"] == "running" and not self.never_public_port:
            inst["ssh_host"], inst["ssh_port"] = self.ssh_host, self.ssh_port
            if self.direct:
                inst["public_ipaddr"] = self.ssh_host
                inst["ports"] = {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(self.ssh_port)}]}
        return dict(inst)

    def get(self, iid: int) -> Reply:
        if self.fail_after_create and iid in self.instances:
            return Reply(500, {"success": False, "error": "server_error", "msg": "internal error"})
        inst = self._advance(iid)
        return Reply(200, {"instances": inst})

    def destroy(self, iid: int) -> Reply:
        if self.delete_fails:
            return Reply(500, {"success": False, "error": "server_error", "msg": "internal error"})
        if iid not in self.instances or iid in self.deleted:
            return Reply(404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"})
        self.deleted[iid] = 0
        return Reply(200, {"success": True})


def default_vast_offers() -> list[dict]:
    """Offers in the search response's documented shape (a subset of its fields)."""
    base = {"num_gpus": 1, "gpu_name": "RTX 4090", "rentable": True, "rented": False, "verified": True,
            "verification": "verified", "disk_space": 200.0, "gpu_ram": 24564, "direct_port_count": 20}
    rows = [
        (3001, 0.41, 0.995, "Norway, NO"), (3002, 0.29, 0.990, "Quebec, CA"), (3003, 0.35, 0.999, "Texas, US"),
        (3004, 0.22, 0.900, "Unreliable, XX"), (3005, 0.95, 0.999, "Expensive, DE"),
    ]
    offers = []
    for oid, price, rel, loc in rows:
        o = dict(base, id=oid, ask_contract_id=oid, dph_total=price, dph_base=round(price * 0.9, 4), reliability=rel,
                 reliability2=rel, geolocation=loc)
        offers.append(o)
    offers.append(dict(base, id=3006, ask_contract_id=3006, dph_total=0.25, reliability=0.999, reliability2=0.999,
                       geolocation="Nodirect, US", direct_port_count=0, dph_base=0.2))
    offers.append(dict(base, id=3007, ask_contract_id=3007, dph_total=0.18, reliability=0.999, reliability2=0.999,
                       geolocation="Twogpu, US", num_gpus=2, dph_base=0.15))
    return offers
