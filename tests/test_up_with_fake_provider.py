"""``launcher up`` / ``launcher down`` end to end against a fake RunPod and the real loopback sshd.

The fake RunPod (tests/fake_providers.py, real HTTP on 127.0.0.1) answers in RunPod's
documented shapes and reports the pod's public SSH endpoint as 127.0.0.1:<sshd port>; the
config logs in as the sshd fixture's non-root user (``box.runpod.ssh_user``) instead of root.
``launcher up --yes`` must rent, record the pod in .launcher/state.json and bootstrap the box
for real over SSH; ``launcher down`` must terminate it and the fake must confirm it is gone.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fake_providers import API_KEY, FakeRunPod
from tests.harness.sshd import SSHTarget

ROOT = Path(__file__).resolve().parents[1]


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
    with FakeRunPod(ssh_host=sshd.host, ssh_port=sshd.port) as fake:
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

        # the create call the fake received: the laptop's public key, port 22 exposed, bearer auth
        [create] = fake.calls("POST", r"^/v1/pods$")
        assert create.headers["authorization"] == f"Bearer {API_KEY}"
        assert create.body["env"]["PUBLIC_KEY"] == Path(f"{sshd.identity_file}.pub").read_text().strip()
        assert create.body["ports"] == ["22/tcp"] and create.body["gpuTypeIds"] == ["NVIDIA GeForce RTX 4090"]
        pod_id = next(iter(fake.pods))

        # recorded in local state with the live price and the SSH endpoint
        state = json.loads((project / ".launcher" / "state.json").read_text())
        instance = state["instance"]
        assert instance["id"] == pod_id and instance["provider"] == "runpod"
        assert (instance["ssh_host"], instance["ssh_port"], instance["ssh_user"]) == (sshd.host, sshd.port, sshd.user)
        assert instance["hourly_price"] == pytest.approx(0.74)

        # bootstrapped for real: the project folder exists on the box, owned by the SSH user
        check = subprocess.run(sshd.ssh_argv(f"test -d {remote_workdir} && stat -c %U {remote_workdir}"),
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and check.stdout.strip() == sshd.user, check.stderr

        down_help = _launcher(project, env, "down", "--help", timeout=60).stdout
        down_args = ["down"] + (["--yes"] if "--yes" in down_help else [])
        down_args += ["--config", str(config_path)] if "--config" in down_help else []
        down = _launcher(project, env, *down_args)
        assert down.returncode == 0, f"down failed\nstdout:\n{down.stdout}\nstderr:\n{down.stderr}"
        assert [r.path for r in fake.calls("DELETE")] == [f"/v1/pods/{pod_id}"]
        assert fake.get(pod_id).status == 404  # the provider confirms it is gone
        state = json.loads((project / ".launcher" / "state.json").read_text())
        assert not state.get("instance")
    subprocess.run(sshd.ssh_argv(f"rm -rf {remote_workdir}"), capture_output=True, timeout=60)
