"""Provider clients against local HTTP servers that answer in RunPod's and Vast.ai's documented shapes.

No mocks of the HTTP layer: every call goes over real HTTP to tests/fake_providers.py, and
the tests assert the requests the clients sent (method, path, auth header, body).
"""
from __future__ import annotations

import io
import os
import socket
import sys

import pytest
from rich.console import Console

import launcher.providers as providers
from launcher.config import LauncherConfig, RunpodConfig, VastaiConfig
from launcher.providers.api_keys import load_api_key
from launcher.providers.base import Instance, ProviderError, ProvisionError, TransientProviderError
from launcher.providers.http_client import JsonHttpClient, _retry_after_seconds
from launcher.providers.runpod import RunpodProvider
from launcher.providers.vastai import VastaiProvider
from tests.fake_providers import API_KEY, FakeRunPod, FakeServer, FakeVast, Recorded, Reply
from trainer.errors import UserError

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
    monkeypatch.setattr(providers, "HTTP_OPTIONS", dict(FAST))


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


def make_config(kind: str, fake, tmp_path, max_cost: float = 5.0, **section) -> LauncherConfig:
    timing = {"ready_timeout_s": 2, "poll_interval_s": 0.02, "terminate_timeout_s": 2}
    if kind == "runpod":
        sub = {"api_base": fake.rest_base, "graphql_url": fake.graphql_url, **timing, **section}
    else:
        sub = {"api_base": fake.api_base, **timing, **section}
    return LauncherConfig.model_validate({
        "box": {"kind": kind, "identity_file": identity(tmp_path), kind: sub},
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
def test_http_retries_429_honouring_retry_after_then_succeeds(runpod):
    sleeps: list[float] = []
    client = JsonHttpClient(runpod.rest_base, API_KEY, "RunPod", sleep=sleeps.append, backoff=3.0)
    runpod.pods["p1"] = {"id": "p1", "desiredStatus": "RUNNING"}
    runpod.polls["p1"] = 0
    runpod.rate_limit_burst = 2
    reply = client.request("GET", "/pods/p1")
    assert reply.status == 200 and reply.data["id"] == "p1"
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
    with pytest.raises(ProviderError) as info:
        client.request("POST", "/pods", {"imageName": "x", "gpuTypeIds": ["g"]})
    assert info.value.status == 503 and len(runpod.requests) == 1  # a blind retry could rent twice
    runpod.rate_limit_burst = 1
    reply = client.request("POST", "/pods", {"imageName": "x", "gpuTypeIds": ["g"]})
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


# -- RunPod ---------------------------------------------------------------------------------
def test_runpod_offer_price_comes_from_graphql_gpu_types(runpod):
    client = RunpodProvider(RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url, gpu_count=2), API_KEY, **FAST)
    [offer] = client.offers()
    assert offer.hourly_price == pytest.approx(2 * 0.69) and offer.gpu_name == "RTX 4090"
    [req] = runpod.calls("POST", "/graphql")
    assert "gpuTypes" in req.body["query"]
    assert req.body["variables"] == {"input": {"id": "NVIDIA GeForce RTX 4090"}, "lowest": {"gpuCount": 2}}
    spot = RunpodProvider(RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url, interruptible=True,
                                       cloud_type="SECURE"), API_KEY, **FAST)
    assert spot.offers()[0].hourly_price == pytest.approx(0.35)
    assert runpod.requests[-1].body["variables"]["lowest"] == {"gpuCount": 1, "secureCloud": True}
    assert_auth(runpod.requests)


def test_runpod_graphql_errors_with_http_200_are_failures(runpod):
    client = RunpodProvider(RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url), API_KEY, **FAST)
    runpod.graphql_errors = [{"message": "There are no longer any instances available with the requested specifications."}]
    with pytest.raises(ProviderError, match="no longer any instances available"):
        client.offers()


def test_runpod_rest_create_get_terminate(runpod):
    cfg = RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url, cloud_type="COMMUNITY", volume_gb=10)
    client = RunpodProvider(cfg, API_KEY, **FAST)
    offer = client.offers()[0]
    created = client.create(offer, PUBLIC_KEY, "llm-box-test")
    [post] = runpod.calls("POST", "/v1/pods")
    assert post.body == {
        "name": "llm-box-test", "imageName": cfg.image, "gpuTypeIds": ["NVIDIA GeForce RTX 4090"], "gpuCount": 1,
        "containerDiskInGb": 40, "volumeInGb": 10, "volumeMountPath": "/workspace", "ports": ["22/tcp"],
        "env": {"PUBLIC_KEY": PUBLIC_KEY}, "interruptible": False, "supportPublicIp": True, "cloudType": "COMMUNITY",
    }
    assert created.id.startswith("pod") and created.ssh_port is None
    runpod.ready_after = 2
    first = client.get(created.id)
    assert first.state == "running" and not first.ssh_ready  # running, no public port yet
    ready = client.get(created.id)
    assert ready.ssh_ready and (ready.ssh_host, ready.ssh_port) == ("203.0.113.10", 10341)
    assert ready.hourly_price == pytest.approx(0.74) and ready.location == "CA" and ready.ssh_user == "root"
    client.terminate(created.id)
    assert runpod.calls("DELETE")[0].path == f"/v1/pods/{created.id}"
    assert client.get(created.id) is None
    client.terminate(created.id)  # already gone (404) is fine
    assert_auth(runpod.requests)


def test_runpod_rest_create_error_shape(runpod):
    client = RunpodProvider(RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url, image=""), API_KEY, **FAST)
    with pytest.raises(ProviderError, match="HTTP 400: imageName and gpuTypeIds are required"):
        client.create(client.offers()[0], PUBLIC_KEY, "x")


def test_runpod_graphql_api_create_spot_get_terminate(runpod):
    cfg = RunpodConfig(api_base=runpod.rest_base, graphql_url=runpod.graphql_url, api="graphql", interruptible=True)
    client = RunpodProvider(cfg, API_KEY, **FAST)
    created = client.create(client.offers()[0], PUBLIC_KEY, "spot")
    deploy = runpod.calls("POST", "/graphql")[-1]
    assert "podRentInterruptable" in deploy.body["query"]
    inp = deploy.body["variables"]["input"]
    assert inp["bidPerGpu"] == pytest.approx(0.35) and inp["ports"] == "22/tcp"
    assert inp["env"] == [{"key": "PUBLIC_KEY", "value": PUBLIC_KEY}] and PUBLIC_KEY not in deploy.body["query"]
    ready = client.get(created.id)
    assert ready.ssh_ready and ready.ssh_port == 10341 and ready.hourly_price == pytest.approx(0.74)
    client.terminate(created.id)
    assert "podTerminate" in runpod.requests[-1].body["query"]
    assert client.get(created.id) is None
    with pytest.raises(ProviderError, match="pod not found"):  # GraphQL errors on a second terminate
        client.terminate(created.id)
    assert not runpod.calls(path_re=r"^/v1/")  # everything went through GraphQL


# -- Vast.ai --------------------------------------------------------------------------------
def test_vast_search_sends_the_query_and_sorts_by_price(vast):
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base, max_price=0.5), API_KEY, **FAST)
    offers = client.offers(limit=3)
    [req] = vast.calls("POST", "/bundles/$")
    assert req.body == {
        "gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1}, "reliability": {"gte": 0.98},
        "rentable": {"eq": True}, "rented": {"eq": False}, "disk_space": {"gte": 60},
        "order": [["dph_total", "asc"]], "type": "on-demand", "limit": 3, "verified": {"eq": True},
        "direct_port_count": {"gte": 1}, "dph_total": {"lte": 0.5},
    }
    assert [(o.offer_id, o.hourly_price, o.location) for o in offers] == [
        ("3002", 0.29, "Quebec, CA"), ("3003", 0.35, "Texas, US"), ("3001", 0.41, "Norway, NO")]
    assert_auth(vast.requests)


def test_vast_create_attach_key_wait_and_destroy(vast):
    client = VastaiProvider(VastaiConfig(api_base=vast.api_base, disk_gb=80), API_KEY, **FAST)
    offer = client.offers()[0]
    created = client.create(offer, PUBLIC_KEY, "llm-box-run")
    [put] = vast.calls("PUT")
    assert put.path == "/api/v0/asks/3002/"
    assert put.body["image"] == VastaiConfig().image and put.body["disk"] == 80 and put.body["runtype"] == "ssh_direct"
    assert put.body["label"] == "llm-box-run" and put.body["client_id"] == "me"
    assert "touch ~/.no_auto_tmux" in put.body["onstart"] and PUBLIC_KEY in put.body["onstart"]
    client.after_create(created.id, PUBLIC_KEY)
    assert vast.keys[int(created.id)] == [PUBLIC_KEY]
    vast.ready_after = 2
    assert client.get(created.id).state == "starting"
    ready = client.get(created.id)
    assert ready.ssh_ready and (ready.ssh_host, ready.ssh_port) == ("203.0.113.20", 41234)
    assert ready.hourly_price == pytest.approx(0.29) and ready.gpu_name == "RTX 4090"
    client.terminate(created.id)
    assert vast.calls("DELETE")[0].path == f"/api/v0/instances/{created.id}/"
    assert client.get(created.id) is None
    assert_auth(vast.requests)


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
    with pytest.raises(ProviderError, match="no longer available"):
        client.create(offer, PUBLIC_KEY, "second")
    bad = VastaiProvider(VastaiConfig(api_base=vast.api_base), "wrong-key", **FAST)
    with pytest.raises(ProviderError, match="HTTP 401: Invalid user key"):
        bad.offers()


# -- provision: the money-safe flow ---------------------------------------------------------
def test_provision_runpod_records_before_waiting_and_returns_the_live_price(runpod, tmp_path, keyed, fast_http):
    config = make_config("runpod", runpod, tmp_path, max_cost=7.4)
    runpod.ready_after = 3
    seen: list[tuple[str, int]] = []
    con = console()
    instance = providers.provision(config, con, assume_yes=True,
                                   on_created=lambda i: seen.append((i.id, len(runpod.calls("GET")))))
    assert seen == [(instance.id, 0)]  # recorded before the first status poll
    assert instance.ssh_ready and (instance.ssh_host, instance.ssh_port) == ("203.0.113.10", 10341)
    assert instance.hourly_price == pytest.approx(0.74)  # live, not the 0.69 catalog price
    text = output(con)
    assert "RTX 4090" in text and "$0.690" in text and "at most 10.7 h" in text and "Live price $0.740/h" in text
    assert API_KEY not in text
    assert runpod.calls("POST", "/v1/pods")[0].body["env"] == {"PUBLIC_KEY": PUBLIC_KEY}


def test_provision_refuses_without_yes_on_a_non_tty(runpod, tmp_path, keyed, fast_http, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(UserError, match="pass --yes"):
        providers.provision(make_config("runpod", runpod, tmp_path), console(), assume_yes=False)
    assert not runpod.calls("POST", "/v1/pods")  # nothing rented


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
        assert fake.get(created[0].id if kind == "runpod" else int(created[0].id)).body in (
            {"error": "pod not found", "status": 404}, {"instances": None})


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
    assert "`launcher down`" in message and f"runpodctl remove pod {pod_id}" in message and "to stop charges" in message
    assert API_KEY not in message
    assert runpod.calls("DELETE")  # it did try


def test_provision_ctrl_c_during_the_wait_terminates(runpod, tmp_path, keyed, fast_http, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(providers, "wait_until_ready", interrupted)
    with pytest.raises(ProvisionError) as info:
        providers.provision(make_config("runpod", runpod, tmp_path), console(), True)
    assert info.value.terminated and "interrupted" in str(info.value)
    assert runpod.calls("DELETE")


def test_provision_rejects_a_live_price_above_max_price(runpod, tmp_path, keyed, fast_http):
    runpod.live_price = 0.99  # the market moved after the catalog price was read
    with pytest.raises(ProvisionError) as info:
        providers.provision(make_config("runpod", runpod, tmp_path, max_price=0.8), console(), True)
    assert info.value.terminated and "live price $0.990/h is above" in str(info.value)


def test_provision_rides_out_rate_limits(runpod, tmp_path, keyed, fast_http):
    runpod.rate_limit_burst = 2
    instance = providers.provision(make_config("runpod", runpod, tmp_path), console(), True)
    assert instance.ssh_ready
    assert len([r for r in runpod.requests if r.path == "/graphql"]) == 3  # two 429s, then the answer


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


# -- terminate / describe -------------------------------------------------------------------
def test_terminate_confirms_gone_through_429s_and_a_lingering_instance(vast, tmp_path, keyed, fast_http):
    config = make_config("vastai", vast, tmp_path)
    client = providers.make_provider(config)
    created = client.create(client.offers()[0], PUBLIC_KEY, "x")
    described = providers.describe(config, created.id)
    assert described.hourly_price == pytest.approx(0.29) and described.state == "running"
    vast.linger_after_delete = 2
    vast.rate_limit_burst = 2
    providers.terminate(config, created.id)
    assert providers.describe(config, created.id) is None
    assert len(vast.calls("GET", r"/instances/\d+/$")) >= 3 + 1


def test_terminate_that_cannot_be_confirmed_names_the_manual_command(runpod, tmp_path, keyed, fast_http):
    config = make_config("runpod", runpod, tmp_path, terminate_timeout_s=0.2)
    client = providers.make_provider(config)
    created = client.create(client.offers()[0], PUBLIC_KEY, "x")
    runpod.delete_fails = True
    with pytest.raises(UserError) as info:
        providers.terminate(config, created.id)
    message = str(info.value)
    assert f"instance {created.id} may still be running" in message and f"runpodctl remove pod {created.id}" in message
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
    providers.terminate(config, instance.id)  # nothing to stop


def test_instance_round_trips_through_a_dict():
    instance = Instance(id="7", provider="vastai", ssh_host="h", ssh_port=22, hourly_price=0.3, gpu_name="RTX 4090",
                        gpu_count=1, state="running", location="X")
    data = instance.to_dict()
    assert Instance.from_dict({**data, "ssh_port": "22", "extra": 1}) == instance


def test_missing_public_key_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="ssh-keygen -t ed25519"):
        providers.read_public_key(str(tmp_path / "nope"))
