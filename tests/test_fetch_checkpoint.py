"""`launcher fetch-checkpoint` as a user runs it: a subprocess in a project folder, against a
file:// store and a real S3 server. Verified downloads, refusals without tracebacks, resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.config import StorageConfig
from launcher.store import open_store
from tests.test_store import make_checkpoint, s3_storage
from trainer.manifest import sha256_file, verify_manifest

ROOT = Path(__file__).resolve().parents[1]
RUN = "demo"


class Project:
    def __init__(self, tmp_path: Path, storage: StorageConfig, env: dict):
        self.root = tmp_path / "project"
        self.root.mkdir()
        self.env = env
        storage_yaml = "\n".join(f"  {k}: {v}" for k, v in storage.to_dict().items() if v is not None)
        (self.root / "run.yaml").write_text(f"run:\n  name: {RUN}\nstorage:\n{storage_yaml}\n")
        self.store = open_store(storage, self.root)
        self.source = tmp_path / "box" / "runs" / RUN

    def upload(self, step: int, **kw) -> Path:
        folder = make_checkpoint(self.source, step, **kw)
        self.store.upload_checkpoint(RUN, folder)
        return folder

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "launcher", "fetch-checkpoint", "--config", "run.yaml", *args]

    def environ(self, extra: dict | None = None) -> dict:
        return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", **self.env, **(extra or {})}

    def fetch(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.root, env=self.environ(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=["file", "s3"])
def project(request, tmp_path, monkeypatch):
    if request.param == "file":
        return Project(tmp_path, StorageConfig(url="file://store"), {})
    s3_server = request.getfixturevalue("s3_server")
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return Project(tmp_path, s3_storage(s3_server, request.getfixturevalue("s3_bucket")), s3_server.env())


def test_list_shows_step_size_date_and_state(project):
    project.upload(100)
    project.upload(200)
    half = make_checkpoint(project.source, 300)
    project.store.put_file(half / "part0.bin", f"{RUN}/checkpoints/step_000300/part0.bin")
    result = project.fetch("--list")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "step_000" in line}
    assert set(rows) == {"step_000100", "step_000200", "step_000300"}
    assert "latest" in rows["step_000200"] and "302.0 KB" in rows["step_000200"]
    assert "incomplete" in rows["step_000300"]
    assert time.strftime("%Y-%m-%d") in rows["step_000100"]


def test_fetch_latest_by_default_and_a_given_step(project):
    project.upload(100)
    newest = project.upload(200)
    result = project.fetch()
    assert result.returncode == 0, result.stderr
    assert "every sha256 verified" in result.stdout
    out = project.root / "checkpoints" / RUN / "step_000200"
    verify_manifest(out, check_hashes=True)
    assert sha256_file(out / "part0.bin") == sha256_file(newest / "part0.bin")
    result = project.fetch("--step", "100", "--out", "mine")
    assert result.returncode == 0, result.stderr
    assert verify_manifest(project.root / "mine").meta["step"] == 100


def test_refusals_are_clear_and_leave_nothing(project):
    result = project.fetch()
    assert result.returncode == 1 and "no checkpoints" in result.stderr and "Traceback" not in result.stderr
    project.upload(100)
    result = project.fetch("--step", "999")
    assert result.returncode == 1 and "step 999" in result.stderr and "Complete checkpoints: 100" in result.stderr
    result = project.fetch("--step", "100", "--latest")
    assert result.returncode == 1 and "not both" in result.stderr
    good = project.store.read_bytes(f"{RUN}/checkpoints/step_000100/part1.bin")
    project.store.write_bytes(f"{RUN}/checkpoints/step_000100/part1.bin", bytes(len(good)))  # same size, zeros
    result = project.fetch("--out", "bad")
    assert result.returncode == 1, result.stdout
    assert "part1.bin" in result.stderr and "corrupt" in result.stderr and "Traceback" not in result.stderr
    assert not (project.root / "bad").exists()


def test_interrupted_download_resumes(tmp_path, s3_server, s3_bucket, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    project = Project(tmp_path, s3_storage(s3_server, s3_bucket), s3_server.env())
    size = 6 * 1024 * 1024
    project.upload(200, sizes=(size, size, size, size))
    partial = project.root / "checkpoints" / RUN / ".step_000200.partial"
    slow = subprocess.Popen(project.argv(), cwd=project.root, env=project.environ({"LLMBOX_DOWNLOAD_MAX_BANDWIDTH": str(size)}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (partial / "part0.bin").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (partial / "part0.bin").exists(), "the first file never finished"
        slow.send_signal(signal.SIGKILL)
        slow.wait(5)
    finally:
        if slow.poll() is None:
            slow.kill()
    out = project.root / "checkpoints" / RUN / "step_000200"
    assert not out.exists(), "the download finished before the kill"
    inode = (partial / "part0.bin").stat().st_ino
    result = project.fetch()
    assert result.returncode == 0, result.stderr
    verify_manifest(out, check_hashes=True)
    assert (out / "part0.bin").stat().st_ino == inode  # kept from the first try, not fetched again
    assert not partial.exists()


def test_latest_waits_for_the_final_upload_when_training_has_ended(project):
    project.upload(100)
    project.store.write_text(f"{RUN}/status.json", '{"state": "finished", "step": 200}')
    proc = subprocess.Popen(project.argv(), cwd=project.root, env=project.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the agent is still uploading the last checkpoint
    project.upload(200)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "training ended at step 200; waiting" in out
    assert verify_manifest(project.root / "checkpoints" / RUN / "step_000200").meta["step"] == 200
