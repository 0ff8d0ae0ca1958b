"""`launcher fetch-checkpoint` as a user runs it: a subprocess in a project folder, against a
file:// store and a real S3 server. Verified downloads, refusals without tracebacks, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.config import StorageConfig
from launcher.store.factory import open_store
from tests.harness.stores import make_checkpoint, s3_storage
from runcontract.manifest import sha256_file, verify_manifest, write_manifest
from tests.harness.paths import REPO as ROOT

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


def test_a_broken_final_manifest_is_skipped_at_once_not_waited_for(project):
    """Missing and unreadable differ (issue 23): a truncated final/manifest.json will not mend, so
    fetch does not wait for it; it says why it skipped final/ and which checkpoint it fetched."""
    project.upload(100)
    project.upload(200, final=True)
    key = f"{RUN}/final/manifest.json"
    whole = project.store.read_bytes(key)
    project.store.write_bytes(key, whole[: len(whole) // 2])  # truncated
    project.store.write_text(f"{RUN}/status.json", '{"state": "finished", "step": 200}')
    started = time.monotonic()
    result = project.fetch("--latest", timeout=100)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60 and "waiting" not in result.stdout, result.stdout
    assert "not in the store yet" not in result.stdout, result.stdout
    assert "skipped final/: manifest unreadable (not valid JSON: " in result.stdout, result.stdout
    assert "); fetched step_000100 instead" in result.stdout, result.stdout
    assert verify_manifest(project.root / "checkpoints" / RUN / "step_000100", check_hashes=True).meta["step"] == 100
    info = {c.name: c for c in project.store.checkpoints(RUN)}
    assert info["final"].unreadable.startswith("not valid JSON") and info["step_000100"].unreadable is None
    project.store.delete(key)  # missing (still uploading, say) is not unreadable
    assert {c.name: c for c in project.store.checkpoints(RUN)}["final"].unreadable is None


# ----------------------------------------------------------------------------- issue 14
def test_a_corrupt_latest_is_skipped_for_the_newest_that_verifies(project):
    project.upload(100)
    project.upload(200)
    key = f"{RUN}/checkpoints/step_000200/part0.bin"
    good = project.store.read_bytes(key)
    project.store.write_bytes(key, bytes([good[0] ^ 0x01]) + good[1:])  # one flipped bit
    result = project.fetch()
    assert result.returncode == 0, result.stderr
    assert "skipped step_000200 (step 200)" in result.stderr and "part0.bin" in result.stderr
    assert verify_manifest(project.root / "checkpoints" / RUN / "step_000100", check_hashes=True).meta["step"] == 100
    assert not (project.root / "checkpoints" / RUN / "step_000200").exists()
    assert not (project.root / "checkpoints" / RUN / ".step_000200.partial").exists()
    result = project.fetch("--step", "200", "--out", "exact")  # asked for by step: no fallback
    assert result.returncode == 1 and "part0.bin" in result.stderr and not (project.root / "exact").exists()


def test_list_shows_the_runs_total(project):
    project.upload(100)
    project.store.write_text(f"{RUN}/train.log", "x" * 1000)
    result = project.fetch("--list")
    assert result.returncode == 0, result.stderr
    stored = project.store.list(f"{RUN}/")
    total = sum(o.size for o in stored)
    assert total > 303_000  # checkpoint files + manifest + train.log
    assert f"checkpoints: 1, 302.0 KB; run total in the store: {total / 1000:.1f} KB in {len(stored)} objects" in result.stdout


def prune(project, *args):
    argv = [sys.executable, "-m", "launcher", "prune", "--config", "run.yaml", *args]
    return subprocess.run(argv, cwd=project.root, env=project.environ(), capture_output=True, text=True, timeout=60)


def test_prune_keeps_the_last_n_final_best_and_newest(project):
    for step, loss in ((100, 2.0), (200, 3.0), (300, 2.9), (400, 2.8)):
        folder = make_checkpoint(project.source, step)
        write_manifest(folder, meta={"step": step, "val_loss": loss})
        project.store.upload_checkpoint(RUN, folder)
    half = make_checkpoint(project.source, 50)  # an interrupted upload older than the newest: garbage
    project.store.put_file(half / "part0.bin", f"{RUN}/checkpoints/step_000050/part0.bin")
    result = prune(project, "--keep", "1", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would delete step_000200" in result.stdout and "would delete step_000300" in result.stdout
    assert "would delete step_000050" in result.stdout and "dry run: 3 checkpoints" in result.stdout
    assert [c.name for c in project.store.checkpoints(RUN)] == ["step_000050", "step_000100", "step_000200", "step_000300", "step_000400"]
    result = prune(project, "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert "best validation loss 2.0000" in result.stdout and "deleted 3 checkpoints" in result.stdout
    assert [c.name for c in project.store.checkpoints(RUN)] == ["step_000100", "step_000400"]
    assert project.store.list(f"{RUN}/checkpoints/step_000200/") == []
    assert prune(project, "--keep", "0").returncode == 1


def test_prune_never_deletes_the_newest_complete_checkpoint(project):
    project.upload(100)
    newer = make_checkpoint(project.source, 200)  # newer but incomplete: may still be uploading
    project.store.put_file(newer / "part0.bin", f"{RUN}/checkpoints/step_000200/part0.bin")
    result = prune(project, "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert "nothing to prune" in result.stdout
    assert [c.name for c in project.store.checkpoints(RUN)] == ["step_000100", "step_000200"]


def test_another_config_fetches_its_own_run_not_the_recorded_one(tmp_path):
    """The recorded run is `demo` (run.yaml); --config other.yaml names run `other` and must get
    other's checkpoint. Fails on the code that took the recorded run's name whatever --config said."""
    project = Project(tmp_path, StorageConfig(url="file://store"), {})
    project.upload(100)  # run demo
    other = make_checkpoint(tmp_path / "box" / "runs" / "other", 300)
    project.store.upload_checkpoint("other", other)
    (project.root / "other.yaml").write_text("run:\n  name: other\nstorage:\n  url: file://store\n")
    (project.root / ".launcher").mkdir()
    (project.root / ".launcher" / "state.json").write_text(json.dumps({
        "version": 1, "config_path": "run.yaml", "box": None, "instance": None,
        "run": {"name": RUN, "tmux_session": f"llmbox-{RUN}", "multiplexer": "tmux", "started_at": 1.0}}))
    env = project.environ()
    result = subprocess.run([sys.executable, "-m", "launcher", "fetch-checkpoint", "--config", "other.yaml"],
                            cwd=project.root, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    verify_manifest(project.root / "checkpoints" / "other" / "step_000300", check_hashes=True)
    assert not (project.root / "checkpoints" / RUN).exists()
    # the recorded config (as given or by default) still means the recorded run
    for argv in (["--config", "run.yaml"], []):
        result = subprocess.run([sys.executable, "-m", "launcher", "fetch-checkpoint", *argv, "--list"],
                                cwd=project.root, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and f"checkpoints of {RUN} in" in result.stdout, result.stdout + result.stderr


def test_fetch_brings_the_report_card_beside_the_checkpoint(project):
    project.upload(100)
    assert "report card" not in project.fetch().stdout  # no card stored: nothing said, nothing written
    assert not (project.root / "checkpoints" / RUN / "report.json").exists()
    card = b'{"checkpoint": "runs/demo/final", "tasks": []}\n'
    project.store.write_bytes(f"{RUN}/report.json", card)
    project.store.write_bytes(f"{RUN}/report.md", b"# Report card\n")
    result = project.fetch("--step", "100", "--out", "mine")
    assert result.returncode == 0, result.stderr
    assert (project.root / "report.json").read_bytes() == card and (project.root / "report.md").read_text() == "# Report card\n"
    assert "the run's report card" in result.stdout
    result = project.fetch()
    assert result.returncode == 0 and (project.root / "checkpoints" / RUN / "report.md").is_file()
