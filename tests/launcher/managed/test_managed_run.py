"""``launcher run --managed`` end to end: real sshd, real S3 server (rclone serve s3), the strict
fake Vast.ai taught to preempt.

The "boxes" are the one loopback sshd: every instance the fake rents reports the sshd's port,
and a box that dies is simulated for real: its tmux session is killed and its folder deleted
(so the next box must resume from the store), while the fake says what the provider would.
The run is interrupted twice, two different ways (outbid: the instance goes ``stopped``; then
SSH refused past the grace period while the provider still says running), and the controller
is SIGKILLed right after it recorded the third rental and started again. The losses per step
must equal an uninterrupted run's, no instance may be left, three rentals exactly, and the
spend ledger must match what the fake billed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.config import load_launcher_config
from launcher.managed.spend import SpendLedger
from launcher.store.factory import open_store
from tests.harness.fake_providers import API_KEY, FakeVast
from tests.harness.launcher_cli import box_shell, copy_project, launcher, launcher_env, s3_storage, wait_for
from tests.harness.s3server import S3Endpoint
from tests.harness.sshd import SSHTarget

MAX_STEPS, CHECKPOINT_EVERY = 50, 5
# cpu_threads pinned: an exact resume is exact for one thread count, and the automatic count follows
# the machine's load at each start (trainer/training/cpu_threads.py), so a busy moment would change the sums' order
SETS = ["train.log_interval=1", "train.eval_tokens=2048", "train.checks.overfit_microset.enabled=false", "train.cpu_threads=1",
        f"train.max_steps={MAX_STEPS}", f"train.eval_interval={CHECKPOINT_EVERY}", f"train.checkpoint_interval={CHECKPOINT_EVERY}"]


def managed_config(sshd: SSHTarget, fake: FakeVast, workdir: str, python: str, name: str, storage: str) -> str:
    return "\n".join([
        "box:", "  kind: vastai", f"  identity_file: {sshd.identity_file}", f"  workdir: {workdir}", f"  python: {python}",
        "  connect_timeout: 5",
        "  vastai:", f"    api_base: {fake.api_base}", f"    ssh_user: {sshd.user}", "    ready_timeout_s: 60",
        "    poll_interval_s: 0.2", "    terminate_timeout_s: 30",
        "run:", f"  name: {name}", f"  set: {json.dumps(SETS)}", "  benchmark: false",
        "  tokenizer: {vocab_size: 4096, sample_bytes: 400000}", "  data: {train_tokens: 100000, val_tokens: 10000}",
        storage,
        "budget: {hourly_rate: 0, max_cost: 5, max_total_cost: 5}",
        "managed: {poll_s: 0.5, ssh_grace_s: 4, hang_s: 300, startup_s: 0}",
        "agent: {sync_interval: 1}",
        "",
    ])


def start_controller(project: Path, config: Path, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "launcher", "run", "--managed", "--config", str(config)],
                            cwd=project, env=launcher_env(project, env), stdout=log.open("a"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def losses(store, name: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (store.read_text(f"{name}/metrics.jsonl") or "").splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if r.get("type") == "train"}


def stored_steps(store, name: str) -> list[int]:
    return [c.step for c in store.checkpoints(name) if c.complete] or [0]


def store_step(store, name: str) -> int:
    """The step the run's mirrored status.json says (0 before any)."""
    try:
        return int(json.loads(store.read_text(f"{name}/status.json") or "{}").get("step") or 0)
    except ValueError:
        return 0


def while_running(controller: subprocess.Popen, predicate):
    """``predicate`` for wait_for, failing at once when the controller has exited (its output says why)."""
    def check():
        if controller.poll() is not None:
            raise AssertionError(f"the controller exited ({controller.returncode})")
        return predicate()
    return check


def box_dies(sshd: SSHTarget, workdir: str, name: str, controller: subprocess.Popen, provider_says) -> None:
    """The box and its disk are gone at once: its trainer and agent stop, its folder with them, and
    the provider says so. The controller is paused meanwhile, so it sees the box alive or dead, never
    half-wiped (the "boxes" share one sshd and one folder)."""
    controller.send_signal(signal.SIGSTOP)
    try:
        box_shell(sshd, f"tmux kill-session -t llmbox-{name} 2>/dev/null; sleep 1; rm -rf {workdir}")
        provider_says()
    finally:
        controller.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_managed_run_interrupted_twice_matches_an_uninterrupted_run(
        sshd: SSHTarget, box_python: Path, remote_workdir: str, s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path):
    env = {**s3_server.env(), "VAST_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    storage = s3_storage(s3_server, s3_bucket)
    project = copy_project(tmp_path / "project")
    os.environ.update(s3_server.env())  # this process reads the store too
    ref_name, name = f"ref{os.getpid()}", f"managed{os.getpid()}"

    # -- the uninterrupted reference: one box, start to finish
    with FakeVast(ssh_host=sshd.host, ssh_port=sshd.port) as ref_fake:
        ref_config = project / "configs" / "ref.yaml"
        ref_config.write_text(managed_config(sshd, ref_fake, f"{remote_workdir}-ref", str(box_python), ref_name, storage))
        log = tmp_path / "ref.log"
        proc = start_controller(project, ref_config, env, log)
        assert proc.wait(timeout=900) == 0, log.read_text()
        assert ref_fake.alive() == [] and len(ref_fake.calls("PUT", r"/asks/")) == 1
    (project / ".launcher" / "state.json").unlink()
    store = open_store(load_launcher_config(ref_config).storage, project)
    reference = losses(store, ref_name)
    assert sorted(reference) == list(range(1, MAX_STEPS + 1))

    # -- the managed run, interrupted twice, its controller killed mid-recovery
    with FakeVast(ssh_host=sshd.host, ssh_port=sshd.port) as fake:
        fake.forward_ssh = True  # each box its own published SSH port, which refuse_ssh closes
        config = project / "configs" / "managed.yaml"
        config.write_text(managed_config(sshd, fake, remote_workdir, str(box_python), name, storage))
        log = tmp_path / "managed.log"
        proc = start_controller(project, config, env, log)
        state_file = project / ".launcher" / "state.json"

        def recorded_id():
            try:
                return (json.loads(state_file.read_text()).get("instance") or {}).get("id")
            except (OSError, ValueError):
                return None

        try:
            # 1. outbid: the provider says stopped (its disk still bills until destroyed)
            wait_for(while_running(proc, lambda: max(stored_steps(store, name)) > 0), 600, "a first stored checkpoint", 0.3)
            [first] = fake.alive()
            print(time.strftime("%H:%M:%S"), "first box stored", stored_steps(store, name), "status step", store_step(store, name))
            box_dies(sshd, remote_workdir, name, proc, lambda: fake.outbid(first))
            wait_for(while_running(proc, lambda: len(fake.instances) == 2 and fake.alive() and fake.alive()[0] != first), 300,
                     "the controller to destroy the outbid box and rent the next", 0.3)
            assert first in fake.deleted  # destroyed, not left stopped

            # 2. SSH refused for minutes while the provider says running
            second = fake.alive()[0]
            resumed_at = max(stored_steps(store, name))
            wait_for(while_running(proc, lambda: max(stored_steps(store, name)) > resumed_at), 600, "a checkpoint from the second box", 0.3)
            print(time.strftime("%H:%M:%S"), "second box stored", stored_steps(store, name), "status step", store_step(store, name))
            assert store_step(store, name) < MAX_STEPS, "the second box finished before it could be interrupted"
            box_dies(sshd, remote_workdir, name, proc, lambda: fake.refuse_ssh(second))

            # 3. the controller is killed right after it recorded the third rental, then started again
            wait_for(while_running(proc, lambda: recorded_id() not in (None, str(first), str(second))), 300, "the third rental recorded", 0.05)
            proc.send_signal(signal.SIGKILL)
            print(time.strftime("%H:%M:%S"), "controller killed with the third rental recorded")
            proc.wait(timeout=30)
            assert second in fake.deleted
            proc = start_controller(project, config, env, log)
            assert proc.wait(timeout=900) == 0, log.read_text()[-5000:]
        except AssertionError as failure:  # what the controller said is the first thing to read
            raise AssertionError(f"{failure}\n--- the controller's output (tail) ---\n{log.read_text()[-8000:]}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
        output = log.read_text()
        assert len(fake.calls("PUT", r"/asks/")) == 3, output[-3000:]  # no second box for the third rental
        assert fake.alive() == [], output[-3000:]

        # the run resumed exactly: the same losses at every step as the uninterrupted run
        resumed = losses(store, name)
        assert sorted(resumed) == list(range(1, MAX_STEPS + 1))
        assert resumed == pytest.approx(reference, rel=1e-6, abs=1e-6)

        # the spend ledger: three boxes, two interruptions, what the fake billed
        spend = SpendLedger(store, name).read()
        assert [b.id for b in spend.boxes] == [str(i) for i in sorted(fake.instances)]
        assert all(b.end is not None for b in spend.boxes) and spend.interruptions == 2
        for box in spend.boxes:
            assert box.cost() == pytest.approx(fake.billed(int(box.id)), rel=0.05, abs=2e-4), box
        assert spend.total() == pytest.approx(fake.billed_total(), rel=0.05, abs=5e-4)
        assert "2 interruption(s)" in output

        # status --json: the boxes, the interruptions and the spend across them (no box rented now: the stored copy)
        status = launcher(project, "status", "--json", "--config", str(config), env=env)
        assert status.returncode == 0, status.stderr
        summary = json.loads(status.stdout)
        assert summary["state"] == "finished (stored copy)" and summary["step"] == MAX_STEPS
        assert [(b["id"], b["state"]) for b in summary["boxes"]] == [(str(i), "ended") for i in sorted(fake.instances)]
        assert summary["interruptions"] == 2
        assert summary["spend_total"] == pytest.approx(fake.billed_total(), rel=0.05, abs=5e-4)
