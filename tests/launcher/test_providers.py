"""Provider clients against local HTTP servers that answer in RunPod's and Vast.ai's documented shapes.

No mocks of the HTTP layer: every call goes over real HTTP to tests/harness/fake_providers.py (RunPod
REST v2 and Vast.ai, strict as their published descriptions say), and the tests assert the
requests the clients sent (method, path, auth header, body). The money cases (a create that
fails after making something, prices that must match the bill, teardown through the recorded
provider) each have a test here that fails on the pre-v2 code.
"""
from __future__ import annotations

import io
import re
import os
import socket
import sys

import pytest
from rich.console import Console

import launcher.providers as providers
from launcher.providers import provisioning, registry
from launcher.config import LauncherConfig, RunpodConfig, VastaiConfig
from launcher.providers.api_keys import load_api_key
from launcher.providers.base import CreatedButFailed, Instance, ProviderError, ProvisionError, TransientProviderError
from launcher.providers.http_client import JsonHttpClient, _retry_after_seconds
from launcher.providers.runpod import RunpodProvider
from launcher.providers.vastai import VastaiProvider
from tests.harness.fake_providers import API_KEY, FakeRunPod, FakeServer, FakeVast, Recorded, Reply, validate_pod_create
from runcontract.errors import UserError

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKeyForTheLauncher test@laptop"
FAST = {"backoff": 0.001, "max_backoff": 0.01, "max_attempts": 4, "timeout": 5}


@pytest.fixture
def runpod():
    with FakeRunPod() as fake:
        yield fake


@pytest.fixture
def vast():
    with FakeVast() as fake:
        yield fake


@pytest.fixture
def fast_http(monkeypatch):
    monkeypatch.setattr(registry, "HTTP_OPTIONS", dict(FAST))


@pytest.fixture
def keyed(monkeypatch, tmp_path):
    """API keys in the environment; the key files' folder points into tmp_path."""
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def identity(tmp_path) -> str:
    private = tmp_path / "id_ed25519"
    private.write_text("not a real key\n")
    (tmp_path / "id_ed25519.pub").write_text(PUBLIC_KEY + "\n")
    return str(private)


def make_config(kind: str, fake, tmp_path, max_cost: float = 5.0, search_s: float = 5.0, **section) -> LauncherConfig:
    timing = {"ready_timeout_s": 2, "poll_interval_s": 0.02, "terminate_timeout_s": 2}
    if kind == "runpod":
        sub = {"api_base": fake.rest_base, "graphql_url": fake.graphql_url, **timing, **section}
    else:
        sub = {"api_base": fake.api_base, **timing, **section}
    return LauncherConfig.model_validate({
        "box": {"kind": kind, "identity_file": identity(tmp_path), "lost_create_search_s": search_s, kind: sub},
        "budget": {"hourly_rate": 0, "max_cost": max_cost},
    })


def console() -> Console:
    return Console(file=io.StringIO(), width=200, force_terminal=False)


def output(con: Console) -> str:
    return con.file.getvalue()  # type: ignore[attr-defined]


def assert_auth(requests: list[Recorded]) -> None:
    assert requests
    for r in requests:
        assert r.headers["authorization"] == f"Bearer {API_KEY}"
        assert API_KEY not in r.path  # never in a URL


# -- the HTTP layer -------------------------------------------------------------------------
def new_pod(client: JsonHttpClient, name: str = "p") -> str:
    body = {"name": name, "image": "img", "gpu": {"id": FakeRunPod.GPU, "count": 1}, "cloud": "SECURE"}
    return client.request("POST", "/pods", body).data["id"]


def test_http_retries_429_honouring_retry_after_then_succeeds(runpod):
    sleeps: list[float] = []
    client = JsonHttpClient(runpod.rest_base, API_KEY, "RunPod", sleep=sleeps.append, backoff=3.0)
    pod_id = new_pod(client)
    runpod.requests.clear()
    runpod.rate_limit_burst = 2
    reply = client.request("GET", f"/pods/{pod_id}")
    assert reply.status == 200 and reply.data["id"] == pod_id
    assert sleeps == [0.0, 0.0]  # Retry-After: 0 wins over the 3 s backoff
    assert [r.method for r in runpod.requests] == ["GET"] * 3
    assert_auth(runpod.requests)


def test_http_retries_5xx_with_bounded_backoff_and_gives_up(runpod):
    sleeps: list[float] = []
    client = JsonHttpClient(runpod.rest_base, API_KEY, "RunPod", sleep=sleeps.append, backoff=1.0, max_backoff=3.0, max_attempts=4)
    runpod.server_errors = 10
    with pytest.raises(TransientProviderError) as info:
        client.request("GET", "/pods/nope")
    assert len(runpod.requests) == 4
    assert sleeps == [1.0, 2.0, 3.0]  # exponential, capped at max_backoff
    assert "503" in str(info.value) and API_KEY not in str(info.value)


def test_http_does_not_retry_a_create_on_5xx_but_does_on_429(runpod):
    client = JsonHttpClient(runpod.rest_base, API_KEY, "RunPod", sleep=lambda s: None)
    runpod.server_errors = 1
    body = {"name": "x", "image": "x", "gpu": {"id": "g"}}
    with pytest.raises(ProviderError) as info:
        client.request("POST", "/pods", body)
    assert info.value.status == 503 and len(runpod.requests) == 1  # a blind retry could rent twice
    assert info.value.may_have_created
    runpod.rate_limit_burst = 1
    reply = client.request("POST", "/pods", body)
    assert reply.status == 201 and len(runpod.calls("POST")) == 3


def test_http_connection_errors_are_transient_and_bounded():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    client = JsonHttpClient(f"http://127.0.0.1:{port}", API_KEY, "Vast.ai", sleep=sleeps.append, max_attempts=3, backoff=0.5)
    with pytest.raises(TransientProviderError) as info:
        client.request("GET", "/instances/1/")
    assert "connection error" in str(info.value) and len(sleeps) == 2
    with pytest.raises(TransientProviderError) as info:
        client.request("PUT", "/asks/1/", {}, idempotent=False)
    assert "may or may not have reached" in str(info.value)


class EchoingServer(FakeServer):
    """A badly behaved API that echoes the Authorization header in its error body."""

    def route(self, rec: Recorded) -> Reply:
        return Reply(400, {"error": f"bad request from {rec.headers.get('authorization')}"})


def test_errors_never_echo_the_api_key():
    with EchoingServer() as server:
        client = JsonHttpClient(server.url, API_KEY, "RunPod", sleep=lambda s: None)
        with pytest.raises(ProviderError) as info:
            client.request("GET", "/x")
    assert API_KEY not in str(info.value) and "Bearer ***" in str(info.value)
    assert API_KEY not in repr(client)


def test_retry_after_accepts_seconds_and_http_dates():
    assert _retry_after_seconds("7") == 7.0
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_after_seconds(None) is None and _retry_after_seconds("soon") is None


# -- API keys -------------------------------------------------------------------------------
def test_api_key_from_env_then_mode_600_file(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert load_api_key("runpod", "RUNPOD_API_KEY", {**env, "RUNPOD_API_KEY": "from-env"}) == "from-env"
    with pytest.raises(UserError) as info:
        load_api_key("vastai", "VAST_API_KEY", env)
    assert "VAST_API_KEY" in str(info.value) and str(tmp_path / "llm-box" / "vast_key") in str(info.value)
    key_file = tmp_path / "llm-box" / "vast_key"
    key_file.parent.mkdir()
    key_file.write_text("secret-from-file\n")
    os.chmod(key_file, 0o644)
    with pytest.raises(UserError) as info:
        load_api_key("vastai", "VAST_API_KEY", env)
    assert f"chmod 600 {key_file}" in str(info.value) and "secret-from-file" not in str(info.value)
    os.chmod(key_file, 0o600)
    assert load_api_key("vastai", "VAST_API_KEY", env) == "secret-from-file"


def test_the_key_sent_to_the_box_is_read_by_the_same_rules(tmp_path):
    """``launcher run`` puts the provider key in the box's secrets file: from the same file, with
    the same mode check, as ``up`` (one loader, providers/api_keys.py)."""
    from launcher.secrets import box_secret_env

    config = LauncherConfig.model_validate({"box": {"kind": "vastai"}})
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert "VAST_API_KEY" not in box_secret_env(config, env)
    assert box_secret_env(config, {**env, "VAST_API_KEY": "from-env"})["VAST_API_KEY"] == "from-env"
    key_file = tmp_path / "llm-box" / "vast_key"
    key_file.parent.mkdir()
    key_file.write_text("secret-from-file\n")
    os.chmod(key_file, 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        box_secret_env(config, env)
    os.chmod(key_file, 0o600)
    assert box_secret_env(config, env)["VAST_API_KEY"] == "secret-from-file"


# -- RunPod REST v2 -------------------------------------------------------------------------
def rp_config(runpod, **kw) -> RunpodConfig:
    return RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url, **kw)


def test_runpod_defaults_to_rest_v2_and_refuses_v1_settings():
    assert RunpodConfig().api_base == "https://api.runpod.io/v2"
    with pytest.raises(ValueError):
        RunpodConfig(api="rest")  # REST v1 retires on 1 December 2026
    with pytest.raises(ValueError, match="at least 10"):
        RunpodConfig(volume_gb=5)


def test_runpod_offers_price_each_cloud_from_the_v2_catalog(runpod):
    client = RunpodProvider(rp_config(runpod, gpu_count=2), API_KEY, **FAST)
    offers = client.offers()
    assert [(o.cloud, o.hourly_price) for o in offers] == [("COMMUNITY", pytest.approx(0.68)), ("SECURE", pytest.approx(1.38))]
    queries = [r.path for r in runpod.calls("GET", "/v2/catalog/gpus")]
    assert queries == ["/v2/catalog/gpus?include=AVAILABILITY&product=POD&count=2&cloud=SECURE",
                       "/v2/catalog/gpus?include=AVAILABILITY&product=POD&count=2&cloud=COMMUNITY"]
    runpod.stock["COMMUNITY"] = "NONE"  # out of stock: not offered
    assert [o.cloud for o in client.offers()] == ["SECURE"]
    secure_only = RunpodProvider(rp_config(runpod, cloud_type="SECURE"), API_KEY, **FAST)
    assert [o.cloud for o in secure_only.offers()] == ["SECURE"]
    assert not runpod.calls(path_re="graphql")  # on-demand prices come from REST v2 only
    assert_auth(runpod.requests)


def test_runpod_fake_rejects_unknown_fields_by_name_as_v2_does():
    v1_body = {"name": "x", "imageName": "img", "gpuTypeIds": ["g"], "cloudType": "ALL", "supportPublicIp": True}
    errors = validate_pod_create(v1_body)
    for field_name in ("imageName", "gpuTypeIds", "cloudType", "supportPublicIp"):
        assert f"$: additional properties '{field_name}' not allowed" in errors
    assert "$.cloud: value must be one of 'SECURE', 'COMMUNITY'" in validate_pod_create(
        {"name": "x", "image": "i", "gpu": {"id": "g"}, "cloud": "ALL"})


def test_runpod_create_body_is_valid_v2_and_names_the_cloud(runpod):
    cfg = rp_config(runpod, volume_gb=20)
    client = RunpodProvider(cfg, API_KEY, **FAST)
    offer = client.offers()[0]
    created = client.create(offer, PUBLIC_KEY, "llm-box-test-abc123")
    [post] = runpod.calls("POST", "/v2/pods$")
    assert post.body == {
        "name": "llm-box-test-abc123", "image": cfg.image, "cloud": "COMMUNITY",
        "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1, "minCudaVersion": "12.8"}, "disk": 40, "ports": ["22/tcp"],
        "env": {"PUBLIC_KEY": PUBLIC_KEY}, "mounts": {"persistent": {"size": 20, "path": "/workspace"}},
    }
    assert validate_pod_create(post.body) == []
    assert created.state == "starting" and created.raw_state == "PROVISIONING" and created.ssh_port is None
    assert created.api_base == runpod.rest_base and created.name == "llm-box-test-abc123"


def test_runpod_get_follows_v2_statuses_and_reads_the_billed_cost(runpod):
    client = RunpodProvider(rp_config(runpod, cloud_type="SECURE", volume_gb=0), API_KEY, **FAST)
    created = client.create(client.offers()[0], PUBLIC_KEY, "x")
    assert "mounts" not in runpod.calls("POST", "/v2/pods$")[0].body
    runpod.ready_after = 2
    first = client.get(created.id)
    assert (first.raw_state, first.ssh_ready) == ("STARTING", False)
    ready = client.get(created.id)
    assert ready.raw_state == "RUNNING" and ready.ssh_ready and (ready.ssh_host, ready.ssh_port) == ("203.0.113.10", 10341)
    assert ready.hourly_price == pytest.approx(0.69) and ready.location == "CA-MTL-1" and ready.ssh_user == "root"
    client.terminate(created.id)
    assert runpod.calls("DELETE")[0].path == f"/v2/pods/{created.id}"
    assert client.get(created.id) is None
    client.terminate(created.id)  # already gone (RunPod's own 404) is fine
    assert_auth(runpod.requests)


def test_runpod_404_that_is_not_runpods_is_not_gone():
    class WrongUrl(FakeServer):
        def route(self, rec: Recorded) -> Reply:
            return Reply(404, text="<html>not found</html>")

    with WrongUrl() as server:
        client = RunpodProvider(RunpodConfig(api_base=server.url + "/v2"), API_KEY, **FAST)
        with pytest.raises(ProviderError, match="not RunPod's"):
            client.get("pod1")
        with pytest.raises(ProviderError, match="not RunPod's"):
            client.terminate("pod1")


def test_runpod_validation_error_names_the_field(runpod):
    client = RunpodProvider(rp_config(runpod, image=""), API_KEY, **FAST)
    with pytest.raises(ProviderError) as info:
        client.create(client.offers()[0], PUBLIC_KEY, "x")
    assert info.value.status == 422 and "missing property 'image'" in str(info.value)
    assert not info.value.may_have_created


def test_runpod_finds_pods_by_name(runpod):
    client = RunpodProvider(rp_config(runpod), API_KEY, **FAST)
    a = client.create(client.offers()[0], PUBLIC_KEY, "llm-box-a")
    client.create(client.offers()[0], PUBLIC_KEY, "llm-box-b")
    assert [i.id for i in client.find_by_name("llm-box-a")] == [a.id]
    assert client.find_by_name("nothing") == []


def test_runpod_spot_pods_rent_through_graphql_then_live_on_v2(runpod):
    cfg = rp_config(runpod, interruptible=True, cloud_type="COMMUNITY")
    client = RunpodProvider(cfg, API_KEY, **FAST)
    [offer] = client.offers()
    assert offer.hourly_price == pytest.approx(0.20) and offer.cloud == "COMMUNITY"
    created = client.create(offer, PUBLIC_KEY, "spot")
    deploy = runpod.calls("POST", "/graphql")[-1]
    inp = deploy.body["variables"]["input"]
    assert "podRentInterruptable" in deploy.body["query"] and inp["bidPerGpu"] == pytest.approx(0.20)
    assert inp["cloudType"] == "COMMUNITY" and inp["env"] == [{"key": "PUBLIC_KEY", "value": PUBLIC_KEY}]
    assert PUBLIC_KEY not in deploy.body["query"]
    ready = client.get(created.id)
    assert ready.ssh_ready and ready.hourly_price == pytest.approx(0.20)
    client.terminate(created.id)
    assert runpod.calls("DELETE")[0].path == f"/v2/pods/{created.id}"


def test_runpod_graphql_errors_with_http_200_are_failures(runpod):
    client = RunpodProvider(rp_config(runpod, interruptible=True), API_KEY, **FAST)
    runpod.graphql_errors = [{"message": "There are no longer any instances available with the requested specifications."}]
    with pytest.raises(ProviderError, match="no longer any instances available"):
        client.offers()

# -- Vast.ai --------------------------------------------------------------------------------
def test_vast_search_prices_the_rented_disk_and_sorts_by_price(vast):
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base, max_price=0.5), API_KEY, **FAST)
    offers = client.offers(limit=3)
    [req] = vast.calls("POST", "/bundles/$")
    assert req.body == {
        "gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1}, "reliability": {"gte": 0.98},
        "rentable": {"eq": True}, "rented": {"eq": False}, "disk_space": {"gte": 60}, "cuda_max_good": {"gte": 12.8},
        "order": [["dph_total", "asc"]], "type": "on-demand", "limit": 3, "verified": {"eq": True},
        "direct_port_count": {"gte": 1}, "dph_total": {"lte": 0.5}, "allocated_storage": 60,
    }
    assert [(o.offer_id, o.location) for o in offers] == [("3002", "Quebec, CA"), ("3003", "Texas, US"), ("3001", "Norway, NO")]
    assert [o.hourly_price for o in offers] == [  # machine + 60 GB of disk at the host's $/GB/month
        pytest.approx(0.28 + 0.30 * 60 / 720), pytest.approx(0.34 + 0.10 * 60 / 720), pytest.approx(0.40 + 0.15 * 60 / 720)]
    assert_auth(vast.requests)


def test_vast_never_rents_a_host_whose_driver_is_too_old_for_the_image(vast):
    """Offer 3008 is the cheapest, but its driver runs CUDA 12.4 at most: the default image needs 12.8 (issue 22)."""
    old_driver = next(o for o in vast.offers if o["id"] == 3008)
    assert old_driver["cuda_max_good"] < VastaiConfig().min_cuda
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base), API_KEY, **FAST)
    offers = client.offers(limit=50)
    assert offers and "3008" not in [o.offer_id for o in offers]
    created = client.create(offers[0], PUBLIC_KEY, "llm-box-x")
    assert not old_driver["rented"] and created.id
    older_image = VastaiProvider(VastaiConfig(api_base=vast.api_base, min_cuda=12.4), API_KEY, **FAST)
    assert older_image.offers(limit=50)[0].offer_id == "3008"  # the fake filters on the field as Vast does


def test_runpod_fake_checks_the_host_cuda_fields_as_the_v2_openapi_does():
    body = {"name": "x", "image": "i", "gpu": {"id": "g", "minCudaVersion": "12"}}
    assert "$.gpu.minCudaVersion: must match '^\\d+\\.\\d+$'" in validate_pod_create(body)
    body["gpu"] = {"id": "g", "minCudaVersion": "12.8", "allowedCudaVersions": ["12.8"]}
    assert "$.gpu: allowedCudaVersions and minCudaVersion are mutually exclusive" in validate_pod_create(body)


def test_vast_offer_price_is_the_instance_price_with_its_disk(vast):
    """A big disk changes which offer is cheapest; the offer shown must be what the bill shows."""
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base, disk_gb=240), API_KEY, **FAST)
    offer = client.offers()[0]
    assert (offer.offer_id, offer.location) == ("3003", "Texas, US")  # 3002 is cheaper only with a small disk
    created = client.create(offer, PUBLIC_KEY, "llm-box-x")
    assert client.get(created.id).hourly_price == pytest.approx(offer.hourly_price)


def test_vast_create_attach_key_wait_and_destroy(vast):
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base, disk_gb=80), API_KEY, **FAST)
    offer = client.offers()[0]
    created = client.create(offer, PUBLIC_KEY, "llm-box-run")
    [put] = vast.calls("PUT")
    assert put.path == f"/api/v0/asks/{offer.offer_id}/"
    assert put.body["image"] == VastaiConfig().image and put.body["disk"] == 80 and put.body["runtype"] == "ssh_direct"
    assert put.body["label"] == "llm-box-run" and put.body["client_id"] == "me" and put.body["cancel_unavail"] is True
    assert "touch ~/.no_auto_tmux" in put.body["onstart"] and PUBLIC_KEY in put.body["onstart"]
    client.after_create(created.id, PUBLIC_KEY)
    assert vast.keys[int(created.id)] == [PUBLIC_KEY]
    vast.ready_after = 2
    assert client.get(created.id).state == "starting"
    ready = client.get(created.id)
    assert ready.ssh_ready and (ready.ssh_host, ready.ssh_port) == ("203.0.113.20", 41234)
    assert ready.hourly_price == pytest.approx(offer.hourly_price) and ready.gpu_name == "RTX 4090"
    assert [i.id for i in client.find_by_name("llm-box-run")] == [created.id]
    client.terminate(created.id)
    assert vast.calls("DELETE")[0].path == f"/api/v0/instances/{created.id}/"
    assert client.get(created.id) is None and client.find_by_name("llm-box-run") == []
    assert_auth(vast.requests)


def test_vast_plain_text_429_without_retry_after_is_backed_off(vast):
    sleeps: list[float] = []
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base), API_KEY, sleep=sleeps.append, backoff=0.5, max_attempts=4)
    vast.rate_limit_burst = 2
    assert client.offers()
    assert sleeps == [0.5, 1.0]  # no Retry-After to honour: exponential backoff
    vast.rate_limit_burst = 10
    with pytest.raises(TransientProviderError, match="HTTP 429: API requests too frequent"):
        client.offers()


def test_vast_success_false_with_a_new_contract_is_an_instance(vast):
    vast.create_half_fails = True
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base), API_KEY, **FAST)
    with pytest.raises(CreatedButFailed) as info:
        client.create(client.offers()[0], PUBLIC_KEY, "x")
    assert info.value.instance_id == "7000001" and vast.alive() == [7000001]


def test_vast_proxy_ssh_when_direct_ports_are_off(vast):
    vast.direct = False
    vast.ssh_host = "ssh5.example.test"
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base, direct_port=False), API_KEY, **FAST)
    created = client.create(client.offers()[0], PUBLIC_KEY, "x")
    assert vast.calls("PUT")[0].body["runtype"] == "ssh_proxy"
    ready = client.get(created.id)
    assert (ready.ssh_host, ready.ssh_port) == ("ssh5.example.test", 41234)


def test_vast_error_shape_on_a_taken_offer(vast):
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base), API_KEY, **FAST)
    offer = client.offers()[0]
    client.create(offer, PUBLIC_KEY, "first")
    with pytest.raises(ProviderError, match="no longer available") as info:
        client.create(offer, PUBLIC_KEY, "second")
    assert not info.value.may_have_created
    bad = VastaiProvider(VastaiConfig(api_base=vast.api_base), "wrong-key", **FAST)
    with pytest.raises(ProviderError, match="HTTP 401: Invalid user key"):
        bad.offers()


# -- provision: the money-safe flow ---------------------------------------------------------
def test_provision_runpod_records_before_waiting_and_returns_the_live_price(runpod, tmp_path, keyed, fast_http):
    config = make_config("runpod", runpod, tmp_path, max_cost=7.4, cloud_type="SECURE")
    runpod.ready_after = 3
    runpod.live_price = 0.74  # the market moved since the catalog was read
    seen: list[tuple[str, int]] = []
    con = console()
    instance = providers.provision(config, con, assume_yes=True,
                                   on_created=lambda i: seen.append((i.id, len(runpod.calls("GET", "/v2/pods/")))))
    assert seen == [(instance.id, 0)]  # recorded before the first status poll
    assert instance.ssh_ready and (instance.ssh_host, instance.ssh_port) == ("203.0.113.10", 10341)
    assert instance.hourly_price == pytest.approx(0.74)  # live, not the 0.69 catalog price
    assert instance.api_base == runpod.rest_base and instance.name.startswith("llm-box-quickstart-")
    text = output(con)
    assert "RTX 4090" in text and "$0.690" in text and "at most 10.7 h" in text and "Live price $0.740/h" in text
    assert API_KEY not in text
    post = runpod.calls("POST", "/v2/pods$")[0].body
    assert post["env"] == {"PUBLIC_KEY": PUBLIC_KEY} and post["cloud"] == "SECURE" and post["name"] == instance.name


def test_provision_with_cloud_all_rents_the_cheaper_cloud_and_says_which(runpod, tmp_path, keyed, fast_http):
    """Pre-v2 code left cloudType out for ALL: RunPod then rented SECURE at $0.69 while showing $0.34."""
    con = console()
    instance = providers.provision(make_config("runpod", runpod, tmp_path), con, True)
    assert runpod.calls("POST", "/v2/pods$")[0].body["cloud"] == "COMMUNITY"
    assert instance.hourly_price == pytest.approx(0.34)  # what the offer said is what the pod bills
    assert "in the community cloud (cheaper than secure at $0.690/h)" in output(con)


def test_provision_vast_price_includes_the_disk_and_max_price_holds(vast, tmp_path, keyed, fast_http):
    """Searched without allocated_storage, offer 3002 looks like $0.282/h but bills $0.38/h with 240 GB."""
    config = make_config("vastai", vast, tmp_path, disk_gb=240, max_price=0.375)
    instance = providers.provision(config, console(), True)
    assert instance.hourly_price <= 0.375
    assert vast.calls("PUT")[0].path == "/api/v0/asks/3003/"


def test_provision_refuses_without_yes_on_a_non_tty(runpod, tmp_path, keyed, fast_http, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(UserError, match="pass --yes"):
        providers.provision(make_config("runpod", runpod, tmp_path), console(), assume_yes=False)
    assert not runpod.calls("POST", "/v2/pods")  # nothing rented


@pytest.mark.parametrize("kind", ["runpod", "vastai"])
def test_provision_terminates_a_machine_that_never_gets_a_public_port(kind, tmp_path, keyed, fast_http):
    with (FakeRunPod() if kind == "runpod" else FakeVast()) as fake:
        fake.never_public_port = True
        created: list[Instance] = []
        with pytest.raises(ProvisionError) as info:
            providers.provision(make_config(kind, fake, tmp_path, ready_timeout_s=0.3), console(), True, created.append)
        err = info.value
        assert err.terminated and err.instance_id == created[0].id
        assert "no public port for 22" in str(err) and "confirmed gone" in str(err)
        [delete] = fake.calls("DELETE")
        assert delete.path.rstrip("/").endswith(f"/{created[0].id}")
        assert fake.alive() == []


@pytest.mark.parametrize("kind", ["runpod", "vastai"])
@pytest.mark.parametrize("failure", ["500", "drop", "hang"])
def test_provision_finds_and_terminates_what_a_failed_create_made(kind, failure, tmp_path, keyed, fast_http, monkeypatch):
    """A 5xx, a dropped connection or a timeout after the provider made the machine, while the
    instance list lags 5 answers behind: pre-v2 code lost it, three looks concluded "nothing bills"."""
    if failure == "hang":  # the create never answers: the client's own timeout ends the wait
        monkeypatch.setattr(registry, "HTTP_OPTIONS", {**FAST, "timeout": 1})
    with (FakeRunPod() if kind == "runpod" else FakeVast()) as fake:
        fake.create_then_fail = failure
        fake.list_lag = 5
        recorded: list[Instance] = []
        with pytest.raises(ProvisionError) as info:
            providers.provision(make_config(kind, fake, tmp_path, search_s=30), console(), True, recorded.append)
        made = str(fake.alive() or [None])
        assert fake.alive() == []  # terminated and confirmed gone
        assert info.value.terminated and "named" in str(info.value) and "nothing bills" in str(info.value)
        assert len(fake.calls("GET", LIST_PATH[kind])) == 6  # looked until the list caught up
        first = recorded[0]  # recorded before the first look: unconfirmed, by name
        assert first.state == "unconfirmed" and first.id is None and first.created_at, made
        assert first.name.startswith("llm-box-") and first.api_base and first.provider == kind
        [made_id] = fake.pods if kind == "runpod" else fake.instances
        assert recorded[-1].id == str(made_id) and recorded[-1].name == first.name  # then the instance, by its id
        assert len([r for r in fake.requests if r.method in ("POST", "PUT") and "ssh" not in r.path
                    and "graphql" not in r.path and "bundles" not in r.path]) == 1  # never a blind second create


LIST_PATH = {"runpod": r"^/v2/pods$", "vastai": r"^/api/v1/instances/"}


@pytest.mark.parametrize("kind", ["runpod", "vastai"])
def test_provision_lost_create_never_listed_stays_recorded_unconfirmed(kind, tmp_path, keyed, fast_http):
    """The list lags past the whole search window: the instance bills, and the record must say so."""
    with (FakeRunPod() if kind == "runpod" else FakeVast()) as fake:
        fake.create_then_fail = "drop"
        fake.list_lag = 10**6
        recorded: list[Instance] = []
        with pytest.raises(ProvisionError) as info:
            providers.provision(make_config(kind, fake, tmp_path, search_s=0.5), console(), True, recorded.append)
        err, message = info.value, " ".join(str(info.value).split())
        [made] = fake.alive()  # it exists and bills: nothing may say otherwise
        name = recorded[-1].name
        assert not err.terminated and "nothing bills" not in message and "billing stopped" not in message
        manual = registry.PROVIDER_CLASSES[kind].manual_find_command(name)
        assert f"could not confirm whether an instance was created: check {manual}; `launcher down` looks again" in message
        assert [r.state for r in recorded] == ["unconfirmed"] and recorded[0].id is None
        assert recorded[0].to_dict()["created_at"] and recorded[0].api_base == (fake.rest_base if kind == "runpod" else fake.api_base)
        assert len(fake.calls("GET", LIST_PATH[kind])) >= 3  # backoff within the window, not one look

        # a later look, once the list has caught up, finds it and hands back the record with its id
        fake.unlisted.clear()
        stored: list[dict] = []
        found = providers.reconcile_unconfirmed(recorded[0].to_dict(), make_config(kind, fake, tmp_path), console(),
                                                window_s=0, on_found=stored.append)
        assert stored == [found] and found["id"] == str(made) and found["name"] == name and found["created_at"]
        assert found["state"] != "unconfirmed" and found["api_base"] == recorded[0].api_base


@pytest.mark.parametrize("kind", ["runpod", "vastai"])
def test_reconcile_that_does_not_find_it_keeps_the_record_and_gives_the_command(kind, tmp_path, keyed, fast_http):
    with (FakeRunPod() if kind == "runpod" else FakeVast()) as fake:
        config = make_config(kind, fake, tmp_path, search_s=0.3)
        record = provisioning.unconfirmed_instance(kind, "llm-box-q-abc123", registry.provider_config(config), 1.0e9).to_dict()
        stored: list[dict] = []
        with pytest.raises(UserError) as info:
            providers.reconcile_unconfirmed(record, config, console(), window_s=0.3, on_found=stored.append)
        message = " ".join(str(info.value).split())
        assert stored == [] and "could not confirm whether an instance was created: check `" in message
        assert "llm-box-q-abc123" in message and "2001-09-09 01:46:40 UTC" in message and "lists lag" in message
        assert len(fake.calls("GET", LIST_PATH[kind])) >= 2
        # by default the search window runs from the create: a record older than it gets one look
        with pytest.raises(UserError, match=r"\b1 look\(s\) at"):
            providers.reconcile_unconfirmed(record, config, console(), on_found=stored.append)
        with pytest.raises(UserError, match="no id to terminate"):
            providers.terminate_recorded(record, config)
        assert "llm-box-q-abc123" in providers.manual_terminate_command(record)


def test_provision_lost_create_with_unreadable_list_names_the_instance_and_the_command(runpod, tmp_path, keyed, fast_http):
    runpod.create_then_fail = "drop"
    original = runpod.route

    def no_list(rec):
        if rec.method == "GET" and rec.path == "/v2/pods":
            return Reply(503, {"title": "Service Unavailable", "status": 503, "detail": "try later"})
        return original(rec)

    runpod.route = no_list
    with pytest.raises(ProvisionError) as info:
        providers.provision(make_config("runpod", runpod, tmp_path, search_s=0.5), console(), True)
    message = " ".join(str(info.value).split())
    name = runpod.pods[runpod.alive()[0]]["name"]
    assert not info.value.terminated and f"named {name!r} may exist and bill" in message
    assert f"`runpodctl pod list --all --name {name}`" in message


def test_provision_vast_success_false_with_new_contract_is_recorded_and_destroyed(vast, tmp_path, keyed, fast_http):
    vast.create_half_fails = True
    recorded: list[Instance] = []
    with pytest.raises(ProvisionError) as info:
        providers.provision(make_config("vastai", vast, tmp_path), console(), True, recorded.append)
    assert [i.id for i in recorded] == ["7000001"] and info.value.terminated
    assert vast.alive() == [] and vast.calls("DELETE")[0].path == "/api/v0/instances/7000001/"


def test_provision_create_then_failure_reports_id_and_command_when_unconfirmed(runpod, tmp_path, keyed, fast_http):
    runpod.fail_after_create = True  # create succeeds, every status query answers 500 afterwards
    created: list[Instance] = []
    config = make_config("runpod", runpod, tmp_path, ready_timeout_s=0.3, terminate_timeout_s=0.3)
    with pytest.raises(ProvisionError) as info:
        providers.provision(config, console(), True, created.append)
    err, pod_id = info.value, created[0].id
    assert not err.terminated and err.instance_id == pod_id
    message = str(err)
    assert f"RunPod instance {pod_id} may still be running" in message
    assert "`launcher down`" in message and f"runpodctl pod delete {pod_id}" in message and "to stop charges" in message
    assert API_KEY not in message
    assert runpod.calls("DELETE")  # it did try


def test_provision_ctrl_c_during_the_wait_terminates(runpod, tmp_path, keyed, fast_http, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(provisioning, "wait_until_ready", interrupted)
    with pytest.raises(ProvisionError) as info:
        providers.provision(make_config("runpod", runpod, tmp_path), console(), True)
    assert info.value.terminated and "interrupted" in str(info.value)
    assert runpod.calls("DELETE") and runpod.alive() == []


@pytest.mark.parametrize("kind", ["runpod", "vastai"])
def test_provision_terminates_an_over_price_instance_on_the_first_poll(kind, tmp_path, keyed, fast_http):
    """Pre-v2 code checked max_price only once SSH was ready (up to ready_timeout_s of billing)."""
    with (FakeRunPod() if kind == "runpod" else FakeVast()) as fake:
        fake.live_price = 0.99  # the market moved after the offer was read
        fake.never_public_port = True  # it would never become ready: only the price check can stop it
        with pytest.raises(ProvisionError) as info:
            providers.provision(make_config(kind, fake, tmp_path, max_price=0.8, ready_timeout_s=60), console(), True)
        assert info.value.terminated and "live price $0.990/h is above" in str(info.value)
        status_polls = [r for r in fake.calls("GET") if re.search(r"/(pods|instances)/\w+/?(\?|$)", r.path)]
        assert fake.alive() == [] and len(status_polls) >= 1
        assert len([r for r in status_polls if r.path.split("?")[0].rstrip("/").endswith(str(info.value.instance_id))]) >= 1


def test_provision_rides_out_rate_limits(runpod, tmp_path, keyed, fast_http):
    runpod.rate_limit_burst = 2
    instance = providers.provision(make_config("runpod", runpod, tmp_path, cloud_type="SECURE"), console(), True)
    assert instance.ssh_ready
    assert len(runpod.calls("GET", "/v2/catalog/gpus")) == 3  # two 429s, then the answer


def test_provision_vast_shows_the_cheapest_offers_and_attaches_the_key(vast, tmp_path, keyed, fast_http):
    vast.live_price = 0.31
    con = console()
    instance = providers.provision(make_config("vastai", vast, tmp_path, offers_shown=3), con, True)
    text = output(con)
    for location in ("Quebec, CA", "Texas, US", "Norway, NO"):
        assert location in text
    assert "Expensive" not in text and "Unreliable" not in text
    assert instance.id == "7000001" and instance.hourly_price == pytest.approx(0.31)
    assert instance.location == "Quebec, CA" and instance.ssh_user == "root"
    assert vast.keys[7000001] == [PUBLIC_KEY]


def test_provision_with_no_matching_offer(vast, tmp_path, keyed, fast_http):
    with pytest.raises(UserError, match="no Vast.ai offer matches the config at or below"):
        providers.provision(make_config("vastai", vast, tmp_path, max_price=0.1), console(), True)
    assert not vast.calls("PUT")


# -- teardown through the recorded provider -------------------------------------------------
def test_terminate_recorded_confirms_gone_through_429s_and_a_lingering_instance(vast, tmp_path, keyed, fast_http):
    config = make_config("vastai", vast, tmp_path)
    client = providers.make_provider(config)
    created = client.create(client.offers()[0], PUBLIC_KEY, "x")
    described = providers.describe(config, created.id)
    assert described.state == "running"
    vast.linger_after_delete = 2
    vast.rate_limit_burst = 2
    providers.terminate_recorded(created.to_dict(), config)
    assert providers.describe(config, created.id) is None and vast.alive() == []


def test_terminate_recorded_goes_to_the_recorded_provider_not_the_configs(vast, runpod, tmp_path, keyed, fast_http):
    """A Vast instance with a RunPod config: pre-v2 code sent DELETE to RunPod, took its 404 as
    'gone', said billing stopped and left the Vast instance running."""
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base), API_KEY, **FAST)
    record = client.create(client.offers()[0], PUBLIC_KEY, "x").to_dict()
    runpod_config = make_config("runpod", runpod, tmp_path)
    with pytest.raises(UserError) as info:
        providers.terminate_recorded(record, runpod_config)
    message = str(info.value)
    assert "box.kind: runpod" in message and f"Vast.ai instance {record['id']}" in message
    assert f"vastai destroy instance {record['id']}" in message
    assert not runpod.calls("DELETE") and vast.alive() == [int(record["id"])]
    providers.terminate_recorded(record)  # no config: the record alone is enough
    assert vast.alive() == [] and not runpod.calls("DELETE")


def test_record_mismatch_names_both_sides(vast, runpod, tmp_path):
    record = Instance(id="7", provider="vastai", api_base=vast.api_base).to_dict()
    ssh_config = LauncherConfig.model_validate({"box": {"kind": "ssh", "host": "h", "user": "u"}})
    problem = providers.record_mismatch(ssh_config, record, "the config c.yaml")
    assert "the config c.yaml says box.kind: ssh" in problem and "Vast.ai instance 7 (box.kind: vastai)" in problem
    other_api = make_config("vastai", FakeVast(), tmp_path)
    assert "was rented through " + vast.api_base in providers.record_mismatch(other_api, record)
    assert providers.record_mismatch(make_config("vastai", vast, tmp_path), record) is None


def test_terminate_that_cannot_be_confirmed_names_the_manual_command(runpod, tmp_path, keyed, fast_http):
    config = make_config("runpod", runpod, tmp_path, terminate_timeout_s=0.2)
    client = providers.make_provider(config)
    created = client.create(client.offers()[0], PUBLIC_KEY, "x")
    runpod.delete_fails = True
    with pytest.raises(UserError) as info:
        providers.terminate_recorded(created.to_dict(), config)
    message = str(info.value)
    assert f"instance {created.id} may still be running" in message and f"runpodctl pod delete {created.id}" in message
    assert API_KEY not in message


def test_terminate_by_id_for_the_agent(vast, runpod, keyed, fast_http):
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base), API_KEY, **FAST)
    created = client.create(client.offers()[0], PUBLIC_KEY, "x")
    providers.terminate_by_id("vastai", created.id, api_base=vast.api_base, poll_interval_s=0.01, timeout_s=2)
    assert client.get(created.id) is None
    pod = RunpodProvider(RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url), API_KEY, **FAST)
    pod_id = pod.create(pod.offers()[0], PUBLIC_KEY, "y").id
    providers.terminate_by_id("runpod", pod_id, api_base=runpod.rest_base, poll_interval_s=0.01, timeout_s=2)
    assert pod.get(pod_id) is None
    with pytest.raises(UserError):
        providers.terminate_by_id("local", "x")


def test_static_box_is_described_not_rented(tmp_path):
    config = LauncherConfig.model_validate({"box": {"kind": "ssh", "host": "10.0.0.5", "user": "me", "port": 2200},
                                            "budget": {"hourly_rate": 0.5, "max_cost": 5}})
    seen = []
    instance = providers.provision(config, console(), assume_yes=False, on_created=seen.append)
    assert (instance.provider, instance.ssh_host, instance.ssh_port, instance.ssh_user) == ("static", "10.0.0.5", 2200, "me")
    assert instance.hourly_price == 0.5 and seen == [instance]
    providers.terminate_recorded(instance.to_dict(), config)  # nothing to stop


def test_instance_round_trips_through_a_dict():
    instance = Instance(id="7", provider="vastai", ssh_host="h", ssh_port=22, hourly_price=0.3, gpu_name="RTX 4090",
                        gpu_count=1, state="running", location="X", name="llm-box-q-abc", api_base="http://x/api/v0")
    data = instance.to_dict()
    assert Instance.from_dict({**data, "ssh_port": "22", "extra": 1}) == instance


def test_missing_public_key_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="ssh-keygen -t ed25519"):
        providers.read_public_key(str(tmp_path / "nope"))
