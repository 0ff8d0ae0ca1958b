"""The on-box agent, as real processes: it mirrors a run folder to a file:// store and to a real
S3 server, flushes when training ends or it is told to stop, survives a SIGKILL mid-upload
without a half checkpoint becoming `latest`, watches the budget, and restores a run.

A small stand-in trainer (a real process) writes status.json and train.log like trainer.train;
"hung", it writes status.json once and then neither progresses nor honours SIGTERM.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.agent import store_config_json
from launcher.config import AgentConfig, LauncherConfig, StorageConfig
from launcher.store.factory import open_store
from tests.harness.paths import REPO as ROOT
from tests.harness.launcher_cli import wait_for as poll_until
from tests.harness.stores import make_checkpoint, s3_endpoint_for, s3_storage
from runcontract.budget import BudgetConfig
from runcontract.manifest import sha256_file, verify_manifest, write_manifest

RUN = "demo"

TRAINER = r"""
import json, os, signal, sys, time
run_dir, cost, hung = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "hung"
def status(state):
    tmp = os.path.join(run_dir, ".status.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"state": state, "phase": "training" if state == "running" else state, "pid": os.getpid(), "step": 1,
                   "cost_spent": cost, "updated": time.time()}, f)
    os.replace(tmp, os.path.join(run_dir, "status.json"))
def stop(*_):
    status("stopped"); sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if hung else stop)
status("running")
while hung:
    time.sleep(1)
with open(os.path.join(run_dir, "train.log"), "a") as log:
    for i in range(100000):
        log.write(f"step {i} loss 1.0\n"); log.flush()
        if os.path.exists(os.path.join(run_dir, "FINISH")):
            status("finished"); sys.exit(0)
        if i % 4 == 0:
            status("running")  # progress, as the trainer writes at each logged step
        time.sleep(0.05)
"""


class Run:
    """A project folder with runs/demo, a store, a stand-in trainer and the agent."""

    def __init__(self, tmp_path: Path, storage: StorageConfig, env: dict, **config):
        self.project = tmp_path / "project"
        self.run_dir = self.project / "runs" / RUN
        self.run_dir.mkdir(parents=True)
        self.storage, self.env = storage, env
        self.config = LauncherConfig(storage=storage, **{"agent": AgentConfig(sync_interval=0.2), **config})
        self.store_json = self.run_dir / "store.json"
        self.store_json.write_text(store_config_json(self.config, RUN, config.get("instance_id")))
        self.trainer: subprocess.Popen | None = None
        self.agent: subprocess.Popen | None = None

    def store(self):
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return open_store(self.storage, self.project)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start_trainer(self, cost: float = 0.0, hung: bool = False) -> None:
        self.trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(self.run_dir), str(cost), "hung" if hung else "working"])
        wait_for(lambda: (self.run_dir / "status.json").exists(), 10, "trainer status.json")

    def start_agent(self, extra_env: dict | None = None, action: str = "mirror") -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.env, **(extra_env or {})}
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "launcher.agent", action, "--run_dir", str(self.run_dir), "--store_config", str(self.store_json),
             "--project_root", str(self.project)],
            cwd=self.project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        return self.agent

    def finish(self) -> None:
        (self.run_dir / "FINISH").write_text("")
        self.trainer.wait(10)

    def agent_output(self, timeout: float = 30) -> tuple[int, str]:
        try:
            out, _ = self.agent.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.agent.send_signal(signal.SIGUSR1)  # the agent dumps its threads' stacks
            time.sleep(1)
            self.agent.kill()
            out, _ = self.agent.communicate()
            raise AssertionError(f"the agent did not exit within {timeout}s; output:\n{out}") from None
        return self.agent.returncode, out

    def cleanup(self) -> None:
        for proc in (self.agent, self.trainer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)


def s3_server_client(run: "Run"):
    """A plain boto3 client on the run's S3 endpoint (to look at what the store API hides)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=run.storage.endpoint_url, aws_access_key_id=run.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=run.env["AWS_SECRET_ACCESS_KEY"], region_name=run.env["AWS_DEFAULT_REGION"],
                        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"))


wait_for = functools.partial(poll_until, interval=0.1)  # the agent's files are local: poll fast


@pytest.fixture(params=["file", "s3"])
def run(request, tmp_path):
    if request.param == "file":
        r = Run(tmp_path, StorageConfig(url=f"file://{tmp_path / 'store'}"), {})
    else:
        s3_server = request.getfixturevalue("s3_server")
        r = Run(tmp_path, s3_storage(s3_server, request.getfixturevalue("s3_bucket")), s3_server.env())
    yield r
    r.cleanup()


@pytest.fixture
def s3_run(tmp_path, s3_server, s3_bucket):
    r = Run(tmp_path, s3_storage(s3_server, s3_bucket), s3_server.env())
    yield r
    r.cleanup()


def test_mirror_uploads_logs_checkpoints_and_prepared_data_then_flushes(run):
    (run.run_dir / "config.yaml").write_text("model: {}\n")
    (run.run_dir / "metrics.jsonl").write_text('{"step": 10, "loss": 5.0}\n')
    for sub, meta in (("tokenizer", "tokenizer_meta.json"), ("data", "data_meta.json")):
        (run.project / sub).mkdir()
        (run.project / sub / "payload.bin").write_bytes(os.urandom(50_000))
        (run.project / sub / meta).write_text('{"ok": true}')
    run.start_trainer()
    run.start_agent()
    store = run.store()
    make_checkpoint(run.run_dir, 100)
    writing = run.run_dir / "checkpoints" / ".step_000200.tmp"  # the trainer's temp folder: no manifest yet
    writing.mkdir()
    (writing / "model.safetensors").write_bytes(b"half")
    latest = wait_for(lambda: store.latest_checkpoint(RUN), 20, "the first checkpoint in the store")
    assert latest.name == "step_000100"
    wait_for(lambda: (store.read_text(f"{RUN}/train.log") or "").count("\n") >= 3, 20, "train.log mirrored while training")
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "loss": 4.0}\n')
    wait_for(lambda: "4.0" in (store.read_text(f"{RUN}/metrics.jsonl") or ""), 20, "appended metrics mirrored")
    make_checkpoint(run.run_dir, 300, final=True)
    (run.run_dir / "report.json").write_text('{"checkpoint": "final", "tasks": []}\n')  # the report card, written just before "finished"
    (run.run_dir / "report.md").write_text("# Report card\n")
    run.finish()
    code, out = run.agent_output()
    assert code == 0, out
    assert store.read_text(f"{RUN}/report.md") == "# Report card\n" and store.read_text(f"{RUN}/report.json") is not None
    assert "agent: final flush done" in out
    assert "agent: final flush done" in (run.run_dir / "agent.log").read_text()
    assert store.read_text(f"{RUN}/train.log") == (run.run_dir / "train.log").read_text()  # the last lines too
    assert json.loads(store.read_text(f"{RUN}/status.json"))["state"] == "finished"
    assert store.read_text(f"{RUN}/config.yaml") == "model: {}\n"
    assert store.read_text(f"{RUN}/store.json") is None
    assert [c.name for c in store.checkpoints(RUN)] == ["step_000100", "final"]
    assert store.latest_checkpoint(RUN).name == "final"
    assert not any(".tmp" in o.key for o in store.list(f"{RUN}/"))
    for sub in ("tokenizer", "data"):
        manifest = store.read_manifest(f"{RUN}/_prepared/{sub}")
        assert manifest is not None and manifest.files["payload.bin"]["sha256"] == sha256_file(run.project / sub / "payload.bin")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_makes_a_final_flush(run, signum):
    run.start_trainer()
    run.start_agent()
    store = run.store()
    wait_for(lambda: store.read_text(f"{RUN}/train.log"), 20, "train.log mirrored")
    make_checkpoint(run.run_dir, 50)
    run.agent.send_signal(signum)
    code, out = run.agent_output()
    assert code == 0, out
    assert f"got {signal.Signals(signum).name}" in out and "agent: final flush done" in out
    assert store.latest_checkpoint(RUN).name == "step_000050"
    assert run.trainer.poll() is None  # the agent stops itself, not training


def test_kill_mid_upload_keeps_previous_latest_and_next_agent_finishes(s3_run):
    run = s3_run
    store = run.store()
    run.start_trainer()
    run.start_agent()
    make_checkpoint(run.run_dir, 100)
    wait_for(lambda: store.latest_checkpoint(RUN), 20, "the first checkpoint")
    run.agent.kill()
    run.agent.wait(5)
    # a 48 MB checkpoint, uploaded at 8 MB/s so the kill lands mid-upload
    big = make_checkpoint(run.run_dir, 200, sizes=(8 * 1024 * 1024, 40 * 1024 * 1024))
    run.start_agent({"LLMBOX_UPLOAD_MAX_BANDWIDTH": str(8 * 1024 * 1024)})
    agent_log = run.run_dir / "agent.log"
    wait_for(lambda: "uploading checkpoint step_000200" in agent_log.read_text(), 20, "the big upload to start")
    first_key = f"{RUN}/checkpoints/step_000200/part0.bin"
    wait_for(lambda: store.stat(first_key), 20, "the first file of the big checkpoint")
    time.sleep(1.0)
    run.agent.send_signal(signal.SIGKILL)
    run.agent.wait(5)
    assert store.stat(f"{RUN}/checkpoints/step_000200/manifest.json") is None, "the upload finished before the kill: slow it down"
    assert store.stat(f"{RUN}/checkpoints/step_000200/part1.bin") is None
    listed = {c.name: c for c in store.checkpoints(RUN)}
    assert listed["step_000200"].complete is False
    assert store.latest_checkpoint(RUN).name == "step_000100"
    first_mtime = store.stat(first_key).mtime
    client = s3_server_client(run)
    assert client.list_multipart_uploads(Bucket=store.bucket).get("Uploads"), "the kill left no multipart upload to clean up"

    run.start_agent()  # the next agent aborts the killed one's multipart upload, then finishes the upload
    latest = wait_for(lambda: (c := store.latest_checkpoint(RUN)) and c.name == "step_000200" and c, 60, "step 200 to become latest")
    assert latest.step == 200
    assert not client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")  # nothing billed and invisible left
    assert "aborted an unfinished upload of demo/checkpoints/step_000200/part1.bin" in (run.run_dir / "agent.log").read_text()
    assert store.stat(first_key).mtime == first_mtime  # already stored: not sent again
    run.finish()
    code, out = run.agent_output()
    assert code == 0, out
    fetched = run.project / "fetched"
    store.download_checkpoint(RUN, "step_000200", fetched)
    verify_manifest(fetched, check_hashes=True)
    assert sha256_file(fetched / "part1.bin") == sha256_file(big / "part1.bin")


def test_no_secret_in_process_list_or_synced_files(s3_run, s3_server):
    run = s3_run
    secret = s3_server.secret_key
    assert secret not in run.store_json.read_text()
    run.start_trainer()
    agent = run.start_agent()
    store = run.store()
    make_checkpoint(run.run_dir, 10)
    wait_for(lambda: store.latest_checkpoint(RUN), 20, "a checkpoint upload")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    lines = [line for line in ps.splitlines() if "rclone" not in line or " serve s3 " not in line]  # the test server's own flags
    assert any(str(agent.pid) in line and "launcher.agent" in line for line in lines)
    assert not [line for line in lines if secret in line]
    assert secret.encode() not in Path(f"/proc/{agent.pid}/cmdline").read_bytes()
    run.finish()
    code, out = run.agent_output()
    assert code == 0, out
    assert secret not in out
    stored = [p for p in (s3_server.data_dir).rglob("*") if p.is_file()]
    assert any(p.name == "train.log" for p in stored)
    for path in stored:
        assert secret.encode() not in path.read_bytes(), path
    for path in run.run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# ----------------------------------------------------------------------------- the budget
@pytest.fixture
def budget_run(tmp_path):
    """$1/h, at most $1; a trainer 1.2 s without a status.json write counts as hung."""
    r = Run(tmp_path, StorageConfig(url=f"file://{tmp_path / 'store'}"), {}, budget=BudgetConfig(hourly_rate=1.0, max_cost=1.0),
            agent=AgentConfig(sync_interval=0.2, hang_minutes=0.02))
    yield r
    r.cleanup()


def test_a_working_trainer_over_budget_is_left_to_stop_itself(budget_run):
    r = budget_run
    r.start_trainer(cost=1.25)  # over budget, but writing progress: the training loop owns the stop
    r.start_agent()
    time.sleep(4)  # more than three hang timeouts
    assert r.trainer.poll() is None and r.agent.poll() is None
    make_checkpoint(r.run_dir, 3, final=True)  # the trainer's own budget stop: final/, then it ends
    r.finish()
    code, out = r.agent_output()
    assert code == 0, out
    assert "hung" not in out and "budget" not in out, out
    assert r.trainer.returncode == 0 and json.loads((r.run_dir / "status.json").read_text())["state"] == "finished"
    assert r.store().latest_checkpoint(RUN).name == "final"


def test_a_hung_trainer_over_budget_is_stopped_and_ends_in_final(budget_run):
    r = budget_run
    make_checkpoint(r.run_dir, 2)
    newest = make_checkpoint(r.run_dir, 4)
    r.start_trainer(cost=1.25, hung=True)  # ignores SIGTERM: only SIGKILL ends it
    r.start_agent()
    code, out = r.agent_output()
    assert code == 0, out
    assert "spent $1.25 >= max_cost $1.00 and the trainer" in out and "it is hung; stopping it" in out, out
    assert r.trainer.wait(10) == -signal.SIGKILL
    assert "the newest complete checkpoint step_000004 is now final/" in out
    final = verify_manifest(r.run_dir / "final", check_hashes=True)
    assert final.meta["step"] == 4 and final.files == verify_manifest(newest).files
    status = json.loads((r.run_dir / "status.json").read_text())
    assert (status["state"], status["phase"], status["progress"]) == ("stopped", "stopped", "stopped during training")
    assert status["step"] == 1 and status["cost_spent"] == 1.25  # the trainer's last figures are kept
    store = r.store()
    assert store.latest_checkpoint(RUN).name == "final" and store.latest_checkpoint(RUN).step == 4
    assert json.loads(store.read_text(f"{RUN}/status.json"))["state"] == "stopped"


@pytest.mark.parametrize("cost", [1.25, 0.5])
def test_a_trainer_gone_over_budget_ends_in_final_and_under_budget_is_left_alone(budget_run, cost):
    r = budget_run
    make_checkpoint(r.run_dir, 6)
    r.start_trainer(cost=cost)
    r.start_agent()
    time.sleep(1)
    r.trainer.kill()  # gone without a word (the OOM killer, a crash in native code)
    r.trainer.wait(10)
    code, out = r.agent_output()
    assert code == 0, out
    assert "is gone" in out and "agent: final flush done" in out
    status = json.loads((r.run_dir / "status.json").read_text())
    if cost > 1.0:
        assert "the budget is spent" in out and "step_000006 is now final/" in out, out
        assert verify_manifest(r.run_dir / "final").meta["step"] == 6 and status["state"] == "stopped"
        assert r.store().latest_checkpoint(RUN).name == "final"
    else:  # a failure under budget is no budget stop: nothing is promoted, the state tells the truth
        assert "budget" not in out and not (r.run_dir / "final").exists() and status["state"] == "running"
        assert r.store().latest_checkpoint(RUN).name == "step_000006"


def test_a_trainer_that_never_trained_is_no_budget_stop(budget_run):
    r = budget_run
    make_checkpoint(r.run_dir, 6)
    r.start_agent()
    time.sleep(1)
    # the launcher's stages kept a previous run's spend; this trainer crashed before it wrote status.json
    (r.run_dir / "status.json").write_text(json.dumps({"state": "preparing", "phase": "cost", "cost_spent": 1.25, "updated": time.time()}))
    (r.run_dir / "train.exit").write_text("1\n")
    code, out = r.agent_output()
    assert code == 0, out
    assert "trainer exited with code 1" in out and "budget" not in out, out
    assert not (r.run_dir / "final").exists() and json.loads((r.run_dir / "status.json").read_text())["state"] == "preparing"


def test_idle_rented_box_is_terminated_through_the_provider(tmp_path):
    config = {"box": {"kind": "runpod"}, "agent": {"sync_interval": 0.2, "idle_minutes": 0.01, "shutdown_when_done": True}}
    r = Run(tmp_path, StorageConfig(url=f"file://{tmp_path / 'store'}"), {"HOME": str(tmp_path), "RUNPOD_API_KEY": ""})
    r.config = LauncherConfig.model_validate({**config, "storage": r.storage.to_dict()})
    r.store_json.write_text(store_config_json(r.config, RUN, "pod-123"))
    try:
        r.start_trainer()
        r.start_agent()
        r.finish()
        code, out = r.agent_output(timeout=60)
        assert code == 0, out
        flush = out.index("agent: final flush done")
        idle = out.index("agent: training ended; shutting the box down after")
        attempt = out.index("terminating runpod instance pod-123")
        assert flush < idle < attempt
    finally:
        r.cleanup()


def test_restore_brings_back_checkpoint_logs_and_prepared_data(run, capsys):
    store = run.store()
    source = run.project.parent / "old-box" / "runs" / RUN
    store.upload_checkpoint(RUN, make_checkpoint(source, 100))
    half = make_checkpoint(source, 200)
    store.put_file(half / "part0.bin", f"{RUN}/checkpoints/step_000200/part0.bin")  # no manifest: not latest
    store.write_text(f"{RUN}/metrics.jsonl", "".join(json.dumps({"type": "train", "step": s, "loss": 9 - s / 100}) + "\n" for s in (50, 100, 150)))
    store.write_text(f"{RUN}/train.log", "old log\n")
    store.write_text(f"{RUN}/status.json", '{"state": "running", "pid": 1}')
    prepared = run.project.parent / "old-box" / "data"
    prepared.mkdir()
    (prepared / "train.bin").write_bytes(os.urandom(20_000))
    (prepared / "data_meta.json").write_text("{}")
    manifest = write_manifest(prepared)
    (prepared / "manifest.json").unlink()
    store.upload_tree(prepared, f"{RUN}/_prepared/data", manifest)
    (run.project / "data").mkdir()
    (run.project / "data" / "raw_cache.txt").write_text("stays")

    run.start_agent(action="restore")
    code, out = run.agent_output()
    assert code == 0, out
    assert "restored checkpoint step_000100" in out and "prepared data/" in out
    verify_manifest(run.run_dir / "checkpoints" / "step_000100", check_hashes=True)
    assert not (run.run_dir / "checkpoints" / "step_000200").exists()
    steps = [json.loads(line)["step"] for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [50, 100]  # the resumed run logs 150 again
    assert (run.run_dir / "train.log").read_text() == "old log\n"
    assert not (run.run_dir / "status.json").exists()
    assert sha256_file(run.project / "data" / "train.bin") == sha256_file(prepared / "train.bin")
    assert (run.project / "data" / "raw_cache.txt").read_text() == "stays"
    assert not (run.project / "data" / "manifest.json").exists()
    assert not (run.project / "tokenizer").exists()

    run.start_agent(action="restore")  # again: everything is already here
    code, out = run.agent_output()
    assert code == 0 and "already here" in out, out


def test_restore_with_nothing_stored(tmp_path):
    r = Run(tmp_path, StorageConfig(url=f"file://{tmp_path / 'store'}"), {})
    r.start_agent(action="restore")
    code, out = r.agent_output()
    assert code == 0, out
    assert f"nothing stored for run {RUN}" in out


def test_bad_store_config_is_a_clear_error(tmp_path, run_python):
    bad = tmp_path / "store.json"
    bad.write_text('{"storage": {"url": "ftp://x"}, "run_name": "r"}')
    result = run_python("-m", "launcher.agent", "mirror", "--run_dir", str(tmp_path / "r"), "--store_config", str(bad))
    assert result.returncode == 2
    assert "storage url must start with file:// or s3://" in result.stderr and "Traceback" not in result.stderr
    result = run_python("-m", "launcher.agent", "restore", "--run_dir", str(tmp_path / "r"), "--store_config", str(tmp_path / "none.json"))
    assert result.returncode == 1 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_store_json_has_no_secrets_and_names_the_provider(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    config = LauncherConfig.model_validate({"box": {"kind": "vastai"}, "storage": {"url": "s3://b/p", "endpoint_url": "http://x"}})
    text = store_config_json(config, "run1", "4242")
    data = json.loads(text)
    assert data["provider"] == {"kind": "vastai", "instance_id": "4242"}
    assert data["run_name"] == "run1" and data["storage"]["url"] == "s3://b/p"
    assert set(data) == {"storage", "run_name", "budget", "agent", "provider", "fence_generation"}
    assert data["fence_generation"] is None  # not a managed run: the agent never checks a fence
    assert "very-secret-value" not in text
    assert json.loads(store_config_json(LauncherConfig(), "q", "ignored"))["provider"] == {"kind": None, "instance_id": None}


def test_train_exit_file_ends_the_mirror_even_without_status(tmp_path):
    r = Run(tmp_path, StorageConfig(url=f"file://{tmp_path / 'store'}"), {})
    try:
        (r.run_dir / "train.exit").write_text("1\n")  # a previous attempt's: older than the agent, ignored
        os.utime(r.run_dir / "train.exit", (time.time() - 60, time.time() - 60))
        r.start_agent()
        time.sleep(1.5)
        assert r.agent.poll() is None
        (r.run_dir / "train.stderr").write_text("Traceback: boom\n")
        (r.run_dir / "train.exit").write_text("1\n")  # the trainer crashed before writing status.json
        code, out = r.agent_output()
        assert code == 0, out
        assert "trainer exited with code 1" in out and "agent: final flush done" in out
        assert r.store().read_text(f"{RUN}/train.stderr") == "Traceback: boom\n"
    finally:
        r.cleanup()


# ----------------------------------------------------------------------------- issue 14
@pytest.fixture
def b2_run(request, tmp_path):
    """A run whose store is rclone behind the strict B2-like proxy (tests/harness/s3proxy.py)."""
    server, bucket = s3_endpoint_for(request, "b2")
    r = Run(tmp_path, s3_storage(server, bucket), server.env())
    r.bucket, r.server = bucket, server
    yield r
    r.cleanup()


def test_agent_aborts_stale_uploads_verifies_and_applies_retention(b2_run, strict_proxy):
    run = b2_run
    store = run.store()
    client = run.server.client()
    stale_key = f"team/runs/{RUN}/checkpoints/step_000400/model.bin"  # a killed agent's multipart upload
    stale = client.create_multipart_upload(Bucket=run.bucket, Key=stale_key)["UploadId"]
    client.upload_part(Bucket=run.bucket, Key=stale_key, UploadId=stale, PartNumber=1, Body=b"x" * 1024)
    other = client.create_multipart_upload(Bucket=run.bucket, Key="team/runs/another-run/model.bin")["UploadId"]
    for step, loss in ((100, 3.0), (200, 2.0), (300, 2.5), (400, 2.6), (500, 2.7)):
        make_checkpoint(run.run_dir, step)
        folder = run.run_dir / "checkpoints" / f"step_{step:06d}"
        write_manifest(folder, meta={"step": step, "val_loss": loss})
    make_checkpoint(run.run_dir, 500, final=True)
    run.start_trainer()
    run.start_agent()
    run.finish()
    code, out = run.agent_output(timeout=120)
    assert code == 0, out
    assert f"aborted an unfinished upload of {RUN}/checkpoints/step_000400/model.bin" in out
    assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=run.bucket).get("Uploads", [])] == [other]
    assert "checkpoint step_000500 stored and verified" in out
    # storage.keep (3): the last three, final/ and the best by validation loss (step 200)
    assert [c.name for c in store.checkpoints(RUN)] == ["step_000200", "step_000300", "step_000400", "step_000500", "final"]
    assert "step_000100" in out and ("deleted stored checkpoint step_000100" in out or "older than the 3 kept" in out)
    # every stored object checked (HEAD: its ETag against the local file) before the manifest went up
    part = [r.split()[0] for r in strict_proxy.requests if "/step_000500/part0.bin" in r]
    manifest = [i for i, r in enumerate(strict_proxy.requests) if r.startswith("PUT ") and "/step_000500/manifest.json" in r]
    assert "PUT" in part and "HEAD" in part[part.index("PUT"):], part
    assert manifest and max(i for i, r in enumerate(strict_proxy.requests) if "/step_000500/part0.bin" in r) < manifest[0]


def test_restore_skips_a_corrupt_latest_and_says_why(run):
    store = run.store()
    source = run.project.parent / "old-box" / "runs" / RUN
    store.upload_checkpoint(RUN, make_checkpoint(source, 100))
    store.upload_checkpoint(RUN, make_checkpoint(source, 200))
    store.write_text(f"{RUN}/metrics.jsonl", "".join(json.dumps({"type": "eval", "step": s}) + "\n" for s in (100, 150, 200)))
    key = f"{RUN}/checkpoints/step_000200/part0.bin"
    good = store.read_bytes(key)
    store.write_bytes(key, bytes([good[0] ^ 0xFF]) + good[1:])  # one flipped byte, same size
    run.start_agent(action="restore")
    code, out = run.agent_output()
    assert code == 0, out
    assert "skipped stored checkpoint step_000200 (step 200)" in out and "part0.bin" in out
    assert "restored checkpoint step_000100" in out
    verify_manifest(run.run_dir / "checkpoints" / "step_000100", check_hashes=True)
    assert not (run.run_dir / "checkpoints" / "step_000200").exists()
    assert not (run.run_dir / "checkpoints" / ".step_000200.partial").exists()
    assert [json.loads(line)["step"] for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()] == [100]


# ----------------------------------------------------------------------------- issue 23
def test_a_store_that_fails_mid_run_shows_in_status_and_the_end_says_what_is_not_stored(b2_run, strict_proxy):
    """The store starts refusing every write mid-run: store_health.json (the agent's) shows the last
    good upload, what waits and why; `launcher status` shows it; the end lists what is NOT stored."""
    from launcher.box.local import LocalBox
    from launcher.commands.status import read_run, render, summarize, typed
    from rich.console import Console
    import io

    run = b2_run
    health_path = run.run_dir / "store_health.json"

    def health():
        try:
            return json.loads(health_path.read_text())
        except (OSError, ValueError):
            return None

    def shown() -> tuple[dict, str]:
        box = LocalBox(run.project)
        summary = typed(summarize(box.label, RUN, read_run(box, RUN), None, None))
        out = io.StringIO()
        Console(file=out, width=400).print(render(summary))
        return summary, " ".join(out.getvalue().split())

    run.start_trainer()
    run.start_agent()
    healthy = wait_for(lambda: (h := health()) and h["last_upload"] and not h["waiting_files"] and h, 30, "a healthy store")
    assert healthy["last_error"] is None and healthy["ended"] is False
    strict_proxy.inject("PUT", f"/{RUN}/", "error:403:AccessDenied", count=10**6)  # from now on the store refuses every write
    make_checkpoint(run.run_dir, 100)
    failing = wait_for(lambda: (h := health()) and h["last_error"] and "train.log" in h["waiting_files"]
                       and h["waiting_checkpoints"] == ["step_000100"] and h, 60, "the failing store in store_health.json")
    assert "AccessDenied" in failing["last_error"] and failing["last_upload"] <= failing["last_error_at"]
    summary, text = shown()
    assert summary["store_health"]["waiting_checkpoints"] == ["step_000100"], summary
    assert "store │ last upload" in text and "waiting:" in text and "step_000100" in text and "last error:" in text, text
    run.finish()
    code, out = run.agent_output(timeout=120)
    assert code == 1, out
    assert "final flush incomplete: step_000100" in out and "not stored in" in out and "AccessDenied" in out, out
    ended = health()
    assert ended["ended"] and ended["waiting_checkpoints"] == ["step_000100"] and "train.log" in ended["waiting_files"], ended
    summary, text = shown()
    assert "NOT stored:" in text and "step_000100" in text, text
