"""``launcher up`` / ``launcher down`` end to end against the fake providers and the real loopback sshd.

The fake RunPod (tests/harness/fake_providers.py, real HTTP on 127.0.0.1, REST v2 shapes) reports the
pod's public SSH endpoint as a ``LateSshd`` port in front of the real sshd: like a rented box's
freshly published port, it resets the first connections before sshd answers. The config logs
in as the sshd fixture's non-root user (``box.runpod.ssh_user``) instead of root.
``launcher up --yes`` must rent, record the pod in .launcher/state.json, retry SSH until it
answers and bootstrap the box for real; ``launcher down`` must terminate it through the
recorded provider and the fake must confirm it is gone. A config for another provider than
the recorded one is refused by both commands, naming both, with nothing terminated.
"""
from __future__ import annotations

import json
import os
import socket
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.fake_providers import API_KEY, FakeRunPod, FakeVast, LateSshd, placeholder_ssh_key
from tests.harness.sshd import SSHTarget
from tests.harness.paths import REPO as ROOT


def _project_copy(dest: Path) -> Path:
    """The project as a user has it: the files git would commit (not tests), without state or runs."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in listed:
        if rel.startswith(("tests/", ".launcher/", "runs/")) or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dest


def _launcher(project: Path, env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(project), "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_up_rents_from_fake_runpod_bootstraps_over_ssh_and_down_terminates(
        sshd: SSHTarget, box_python: Path, remote_workdir: str, tmp_path: Path):
    project = _project_copy(tmp_path / "project")
    env = {"RUNPOD_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with LateSshd(sshd.port, resets=2) as late, FakeRunPod(ssh_host=sshd.host, ssh_port=late.port) as fake:
        fake.ready_after = 3  # a couple of polls without a public port first
        config = {
            "box": {
                "kind": "runpod", "identity_file": str(sshd.identity_file), "python": str(box_python),
                "workdir": remote_workdir,
                "runpod": {"api_base": fake.rest_base, "graphql_url": fake.graphql_url, "ssh_user": sshd.user,
                           "ready_timeout_s": 30, "poll_interval_s": 0.2, "terminate_timeout_s": 30},
            },
            "budget": {"hourly_rate": 0, "max_cost": 5},
        }
        config_path = project / "configs" / "fake_runpod.yaml"
        config_path.parent.mkdir(exist_ok=True)
        config_path.write_text(yaml.safe_dump(config))

        up = _launcher(project, env, "up", "--yes", "--config", str(config_path))
        assert up.returncode == 0, f"up failed\nstdout:\n{up.stdout}\nstderr:\n{up.stderr}"
        assert API_KEY not in up.stdout + up.stderr
        assert late.accepted > late.resets  # SSH was refused at first and retried

        # the create call the fake received: the laptop's public key, port 22 exposed, bearer auth
        [create] = fake.calls("POST", r"^/v2/pods$")
        assert create.headers["authorization"] == f"Bearer {API_KEY}"
        assert create.body["env"]["PUBLIC_KEY"] == Path(f"{sshd.identity_file}.pub").read_text().strip()
        assert create.body["ports"] == ["22/tcp"] and create.body["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1, "minCudaVersion": "12.8"}
        assert create.body["cloud"] == "COMMUNITY"  # cloud_type ALL: the cheaper cloud, named
        assert "$0.340" in up.stdout and "community cloud" in up.stdout  # the price shown is the price billed
        pod_id = next(iter(fake.pods))

        # recorded in local state with the live price, the SSH endpoint and the API it came from
        state = json.loads((project / ".launcher" / "state.json").read_text())
        instance = state["instance"]
        assert instance["id"] == pod_id and instance["provider"] == "runpod" and instance["api_base"] == fake.rest_base
        assert (instance["ssh_host"], instance["ssh_port"], instance["ssh_user"]) == (sshd.host, late.port, sshd.user)
        assert instance["hourly_price"] == pytest.approx(0.34)

        # bootstrapped for real: the project folder exists on the box, owned by the SSH user
        check = subprocess.run(sshd.ssh_argv(f"test -d {remote_workdir} && stat -c %U {remote_workdir}"),
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and check.stdout.strip() == sshd.user, check.stderr

        down_help = _launcher(project, env, "down", "--help", timeout=60).stdout
        down_args = ["down"] + (["--yes"] if "--yes" in down_help else [])
        down_args += ["--config", str(config_path)] if "--config" in down_help else []
        down = _launcher(project, env, *down_args)
        assert down.returncode == 0, f"down failed\nstdout:\n{down.stdout}\nstderr:\n{down.stderr}"
        assert [r.path for r in fake.calls("DELETE")] == [f"/v2/pods/{pod_id}"]
        assert fake.get(pod_id).status == 404  # the provider confirms it is gone
        assert "billing stopped" in down.stdout
        state = json.loads((project / ".launcher" / "state.json").read_text())
        assert not state.get("instance")
    subprocess.run(sshd.ssh_argv(f"rm -rf {remote_workdir}"), capture_output=True, timeout=60)


@pytest.mark.slow
def test_up_rents_from_fake_vast_at_the_price_the_bill_shows_and_down_destroys(
        sshd: SSHTarget, box_python: Path, remote_workdir: str, tmp_path: Path):
    project = _project_copy(tmp_path / "project")
    env = {"VAST_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with LateSshd(sshd.port, resets=1) as late, FakeVast(ssh_host=sshd.host, ssh_port=late.port) as fake:
        config = _write_config(project, "fake_vast.yaml", {
            "kind": "vastai", "identity_file": str(sshd.identity_file), "python": str(box_python), "workdir": remote_workdir,
            "vastai": {"api_base": fake.api_base, "ssh_user": sshd.user, "disk_gb": 240, "max_price": 0.375,
                       "ready_timeout_s": 30, "poll_interval_s": 0.2, "terminate_timeout_s": 30}})
        up = _launcher(project, env, "up", "--yes", "--config", str(config))
        assert up.returncode == 0, f"up failed\nstdout:\n{up.stdout}\nstderr:\n{up.stderr}"
        [search] = fake.calls("POST", "/bundles/")
        assert search.body["allocated_storage"] == 240
        # offer 3002 would look cheaper without the disk ($0.282/h) and bill $0.38/h, over max_price
        assert [r.path for r in fake.calls("PUT")] == ["/api/v0/asks/3003/"]
        assert "$0.373" in up.stdout and "Live price" not in up.stdout  # shown = billed
        instance = json.loads((project / ".launcher" / "state.json").read_text())["instance"]
        assert instance["hourly_price"] == pytest.approx(0.34 + 0.10 * 240 / 720)
        assert instance["api_base"] == fake.api_base and instance["name"].startswith("llm-box-")
        down = _launcher(project, env, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert fake.alive() == [] and "billing stopped" in down.stdout


def _write_config(project: Path, name: str, box: dict) -> Path:
    path = project / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"box": box, "budget": {"hourly_rate": 0, "max_cost": 5}}))
    return path


def test_down_terminates_through_the_recorded_provider_not_the_configs(tmp_path: Path):
    """A Vast instance is recorded; a RunPod config must not 'take it down' through RunPod."""
    project = _project_copy(tmp_path / "project")
    env = {"RUNPOD_API_KEY": API_KEY, "VAST_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with FakeVast() as vast, FakeRunPod() as runpod:
        key = placeholder_ssh_key(tmp_path)
        timing = {"poll_interval_s": 0.05, "terminate_timeout_s": 20}
        vast_cfg = _write_config(project, "vast.yaml", {"kind": "vastai", "identity_file": str(key),
                                                         "vastai": {"api_base": vast.api_base, **timing}})
        runpod_cfg = _write_config(project, "runpod.yaml", {"kind": "runpod", "identity_file": str(key),
                                                             "runpod": {"api_base": runpod.rest_base, **timing}})
        ssh_cfg = _write_config(project, "ssh.yaml", {"kind": "ssh", "host": "127.0.0.1", "user": "me"})
        # a rented Vast instance, recorded as `launcher up` records it (its SSH port closed: unreachable)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        vast.create(3002, {"image": "img", "label": "llm-box-q-abc123", "disk": 60})
        record = {"id": "7000001", "provider": "vastai", "ssh_host": "127.0.0.1", "ssh_port": closed_port,
                  "ssh_user": "root", "hourly_price": 0.3, "name": "llm-box-q-abc123", "api_base": vast.api_base}
        state_dir = project / ".launcher"
        state_dir.mkdir(exist_ok=True)
        (state_dir / "state.json").write_text(json.dumps({"version": 1, "config_path": str(vast_cfg), "box": None,
                                                          "instance": record, "run": None}))

        for wrong in (runpod_cfg, ssh_cfg):
            down = _launcher(project, env, "down", "--config", str(wrong), timeout=120)
            out = down.stdout + down.stderr
            assert down.returncode != 0 and "Traceback" not in out, out
            assert "Vast.ai instance 7000001" in out and "box.kind: vastai" in out and "vastai destroy instance 7000001" in out
            assert "billing stopped" not in out
        up = _launcher(project, env, "up", "--yes", "--config", str(runpod_cfg), timeout=120)
        assert up.returncode != 0 and "Vast.ai instance 7000001" in up.stdout + up.stderr
        assert not runpod.calls("DELETE") and not runpod.calls("POST")  # nothing rented or deleted on RunPod
        assert vast.alive() == [7000001] and json.loads((state_dir / "state.json").read_text())["instance"] == record

        down = _launcher(project, env, "down", timeout=120)  # the recorded config: through Vast
        assert down.returncode == 0, down.stdout + down.stderr
        assert vast.alive() == [] and [r.path for r in vast.calls("DELETE")] == ["/api/v0/instances/7000001/"]
        assert "confirmed instance 7000001 is gone: billing stopped" in down.stdout
        assert json.loads((state_dir / "state.json").read_text())["instance"] is None


def test_up_whose_ssh_never_answers_says_the_pod_still_bills_and_how_to_stop_it(sshd: SSHTarget, tmp_path: Path):
    project = _project_copy(tmp_path / "project")
    env = {"RUNPOD_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with LateSshd(sshd.port, resets=10**6) as never, FakeRunPod(ssh_host=sshd.host, ssh_port=never.port) as fake:
        config = _write_config(project, "rp.yaml", {
            "kind": "runpod", "identity_file": str(sshd.identity_file),
            "runpod": {"api_base": fake.rest_base, "ssh_user": sshd.user, "ready_timeout_s": 2, "poll_interval_s": 0.05,
                       "terminate_timeout_s": 20}})
        up = _launcher(project, env, "up", "--yes", "--config", str(config), timeout=300)
        out = up.stdout + up.stderr
        [pod_id] = fake.alive()
        assert up.returncode != 0 and "Traceback" not in out, out
        assert f"RunPod instance {pod_id} is still running and billing" in " ".join(out.split())
        assert "`launcher down`" in out and never.accepted >= 2
        assert json.loads((project / ".launcher" / "state.json").read_text())["instance"]["id"] == pod_id
        down = _launcher(project, env, "down", timeout=120)
        assert down.returncode == 0 and fake.alive() == [], down.stdout + down.stderr


def test_ssh_readiness_retries_a_port_that_resets_with_backoff(sshd: SSHTarget, tmp_path: Path):
    from launcher.box.base import BoxUnreachable
    from launcher.box.factory import open_box

    spec = {"kind": "runpod", "host": sshd.host, "user": sshd.user, "identity_file": str(sshd.identity_file),
            "workdir": "~/x", "python": "python3", "connect_timeout": 10}
    sleeps: list[float] = []
    with LateSshd(sshd.port, resets=3) as late:
        box = open_box({**spec, "port": late.port}, tmp_path)
        box.wait_until_reachable(600, sleep=sleeps.append)  # fake sleep: no waiting, only attempts count
        assert box.run("echo ok").stdout.strip() == "ok"
        box.close()
    assert late.accepted >= 4 and sleeps == [1.0, 2.0, 4.0]  # backoff between the refused attempts
    with LateSshd(sshd.port, resets=10**6) as never:
        box = open_box({**spec, "port": never.port}, tmp_path)
        clock = iter(range(0, 10**6, 50))
        with pytest.raises(BoxUnreachable, match="reset|banner"):
            box.wait_until_reachable(120, sleep=lambda s: None, clock=lambda: next(clock))


@pytest.mark.parametrize("kind", ["vastai", "runpod"])
def test_a_lost_create_under_a_lagging_list_stays_recorded_until_up_status_or_down_finds_it(kind, tmp_path: Path):
    """The create's answer is lost and the instance list lags far behind: pre-issue-23 code looked
    three times, cleared the record and said "nothing bills" while the instance billed."""
    project = _project_copy(tmp_path / "project")
    env = {"RUNPOD_API_KEY": API_KEY, "VAST_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    key = tmp_path / "id_ed25519"
    key.write_text("unused\n")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITest test@laptop\n")
    state_file = project / ".launcher" / "state.json"
    with (FakeVast() if kind == "vastai" else FakeRunPod()) as fake:
        fake.create_then_fail, fake.list_lag, fake.never_public_port = "drop", 10**6, True
        api = fake.api_base if kind == "vastai" else fake.rest_base
        config = _write_config(project, f"{kind}.yaml", {
            "kind": kind, "identity_file": str(key), "lost_create_search_s": 1,
            kind: {"api_base": api, "poll_interval_s": 0.05, "terminate_timeout_s": 20}})

        def creates() -> int:
            return len(fake.calls("PUT", "/asks/") if kind == "vastai" else fake.calls("POST", r"^/v2/pods$"))

        def unconfirmed(result: subprocess.CompletedProcess) -> dict:
            out = " ".join((result.stdout + result.stderr).split())
            assert result.returncode != 0 and "Traceback" not in out, out
            assert "could not confirm whether an instance was created: check `" in out and "`launcher down` looks again" in out
            assert "billing stopped" not in out and "nothing bills" not in out
            record = json.loads(state_file.read_text())["instance"]
            assert record["state"] == "unconfirmed" and record["id"] is None and record["provider"] == kind
            assert record["name"].startswith("llm-box-") and record["name"] in out and record["api_base"] == api
            assert record["created_at"]
            return record

        record = unconfirmed(_launcher(project, env, "up", "--yes", "--config", str(config), timeout=120))
        [made] = fake.alive()  # it bills, whatever the list says
        fake.create_then_fail = None
        assert unconfirmed(_launcher(project, env, "up", "--yes", timeout=120)) == record
        assert creates() == 1  # no second box over an unconfirmed one
        assert unconfirmed(_launcher(project, env, "status", timeout=120)) == record
        assert unconfirmed(_launcher(project, env, "down", timeout=120)) == record
        assert fake.alive() == [made] and not fake.calls("DELETE")

        fake.unlisted.clear()  # the list catches up
        if kind == "runpod":  # status finds it, records its id, and says it bills without an SSH address
            status = _launcher(project, env, "status", timeout=120)
            out = " ".join((status.stdout + status.stderr).split())
            assert status.returncode != 0 and "Traceback" not in out, out
            assert f"found RunPod instance {made}" in out and "has no SSH address recorded yet" in out and "bills" in out
            assert json.loads(state_file.read_text())["instance"]["id"] == str(made)
        down = _launcher(project, env, "down", timeout=120)
        out = down.stdout + down.stderr
        assert down.returncode == 0 and "Traceback" not in out, out
        assert fake.alive() == [] and f"confirmed instance {made} is gone: billing stopped" in out
        assert json.loads(state_file.read_text())["instance"] is None and creates() == 1

        if kind == "vastai":  # never found: kept until the user has checked and says so
            state_file.write_text(json.dumps({"version": 1, "config_path": str(config), "box": None, "run": None,
                                              "instance": {**record, "name": "llm-box-q-000000"}}))
            unconfirmed(_launcher(project, env, "down", timeout=120))
            forget = _launcher(project, env, "down", "--forget-unconfirmed", timeout=120)
            assert forget.returncode == 0, forget.stdout + forget.stderr
            assert "record forgotten, nothing was terminated" in " ".join(forget.stdout.split())
            assert json.loads(state_file.read_text())["instance"] is None
