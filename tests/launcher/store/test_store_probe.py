"""A dead or refusing store is an error before training (issue 23): `launcher run` probes the store
from this machine and the box (write, read back, delete under <run>/) and starts nothing when
either fails; the error names the store, its endpoint and the cause."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher.agent import store_config_json
from launcher.config import LauncherConfig, StorageConfig
from launcher.store.base import StoreError
from launcher.store.factory import open_store
from launcher.store.probe import PROBE_NAME, probe_store
from runcontract.errors import UserError
from tests.harness.launcher_cli import assert_clean_error, copy_project, launcher, local_config
from tests.harness.paths import REPO
from tests.harness.stores import s3_storage

RUN = "probed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_working_store_passes_and_keeps_no_probe(kind, tmp_path, request, monkeypatch):
    if kind == "file":
        storage = StorageConfig(url=f"file://{tmp_path / 'store'}")
    else:
        server = request.getfixturevalue("s3_server")
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        storage = s3_storage(server, request.getfixturevalue("s3_bucket"))
    store = open_store(storage, tmp_path)
    probe_store(store, RUN, "this machine")
    assert [o.key for o in store.list(f"{RUN}/")] == []


def test_a_store_that_refuses_writes_is_named_with_its_cause(tmp_path, s3_server, s3_bucket, strict_proxy, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    storage = StorageConfig(url=f"s3://{s3_bucket}/team", endpoint_url=strict_proxy.url, region=s3_server.region, addressing_style="path")
    strict_proxy.inject("PUT", PROBE_NAME, "error:403:AccessDenied", count=100)
    with pytest.raises(StoreError) as refused:
        probe_store(open_store(storage, tmp_path), RUN, "this machine")
    text = str(refused.value)
    assert f"s3://{s3_bucket}/team/{RUN}" in text and f"(endpoint {strict_proxy.url})" in text, text
    assert "probe's write failed" in text and "AccessDenied" in text and "Nothing was started" in text, text


def test_the_box_probe_runs_the_agent_and_says_why(tmp_path, s3_server, s3_bucket, strict_proxy, monkeypatch):
    """The box's probe: the real agent (`python -m launcher.agent probe`) with the box's store.json
    and environment; a refusal on the box is the stage's error, in one paragraph."""
    from launcher.box.local import LocalBox
    from launcher.stages.train import probe_store_from_box

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    storage = StorageConfig(url=f"s3://{s3_bucket}/team", endpoint_url=strict_proxy.url, region=s3_server.region, addressing_style="path")
    run_dir = tmp_path / "runs" / RUN
    run_dir.mkdir(parents=True)
    (run_dir / "store.json").write_text(store_config_json(LauncherConfig(storage=storage), RUN, None))
    ctx = SimpleNamespace(box=LocalBox(tmp_path), run_dir=f"runs/{RUN}", python=sys.executable, secrets_path=str(tmp_path / "no-secrets.env"))
    probe_store_from_box(ctx)  # the store works: no error, nothing left behind
    assert [o.key for o in open_store(storage, tmp_path).list(f"{RUN}/")] == []
    strict_proxy.inject("GET", PROBE_NAME, "error:403:AccessDenied", count=100)
    with pytest.raises(UserError) as refused:
        probe_store_from_box(ctx)
    text = str(refused.value)
    assert "checked from the box" in text and "probe's read-back failed" in text and "AccessDenied" in text, text
    assert f"(endpoint {strict_proxy.url})" in text and "Traceback" not in text, text


@pytest.mark.slow  # botocore retries a refused connection for ~30 s before it gives up
def test_run_with_an_unreachable_store_starts_nothing(tmp_path: Path):
    project = copy_project(tmp_path / "project")
    name = f"dead{os.getpid()}"
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = local_config(name).replace("storage:\n  url: file://.launcher/store\n",
                                        f"storage:\n  url: s3://bucket/runs\n  endpoint_url: {endpoint}\n  addressing_style: path\n")
    (project / "configs" / "dead.yaml").write_text(config)
    env = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1"}
    result = launcher(project, "run", "--config", "configs/dead.yaml", env=env, timeout=300)
    assert_clean_error(result, f"(endpoint {endpoint})", "cannot reach", "checked from this machine", "Nothing was started")
    assert "] sync" not in result.stdout and "training started" not in result.stdout, result.stdout
    assert not (project / "runs").exists()
    assert subprocess.run(["tmux", "has-session", "-t", f"=llmbox-{name}"], capture_output=True).returncode != 0
