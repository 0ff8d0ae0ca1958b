"""The whole journey, end to end, with real parts only: the commands a user types, in order.

1. Remote (issue 10, "The same journey remote"): against an OpenSSH box on loopback (non-root
   user) and an S3-compatible server: up -> run -> logs --follow until training finishes ->
   status -> fetch-checkpoint (every sha256 verified) -> trainer.eval on it with the tokenizer
   and data taken from the store -> down. Then the box is lost (its folder deleted) and a new
   box (a fresh workdir) takes over: up -> run --resume with more steps -> it continues from
   the stored step, never from step 1 -> down.
2. The embedded default (issue 10): README.md's quick-start commands, read from the README
   itself, in a fresh copy of the project: local box, file:// store, the quickstart config
   (shortened with --set). With them (issue 18), what a curious newcomer tries and what each
   command says: on a run that never started, --dry-run, the phases and progress lines, a
   second `launcher run` on the finished run, `down`'s account, and nothing written outside
   the project (HOME is an empty folder for the whole journey).
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.config import load_launcher_config
from launcher.store.factory import open_store
from tests.harness.s3server import S3Endpoint
from tests.harness.sshd import SSHTarget
from tests.harness.launcher_cli import (
    ROOT, box_shell, copy_project, follow_logs_until, launcher, ok, s3_storage, ssh_config, wait_for,
)
from runcontract.manifest import MANIFEST_NAME, verify_manifest

pytestmark = pytest.mark.slow

# A short run: every stage for real, a handful of steps, a checkpoint half-way and a final one.
QUICK_SETS = ["train.log_interval=1", "train.eval_tokens=2048"]
FIRST_STEPS, CHECKPOINT_EVERY, RESUMED_STEPS = 12, 6, 18


def journey_sets(max_steps: int) -> list[str]:
    return [*QUICK_SETS, f"train.max_steps={max_steps}", f"train.eval_interval={CHECKPOINT_EVERY}",
            f"train.checkpoint_interval={CHECKPOINT_EVERY}"]


def finished_line(steps: int) -> str:
    return f"finished at step {steps}/{steps}"


def metric_steps(metrics_jsonl: str, kind: str = "train") -> list[int]:
    return [r["step"] for r in map(json.loads, metrics_jsonl.splitlines()) if r.get("type") == kind]


def evaluate(run_python, project: Path, *args: str) -> dict:
    """``python -m trainer.eval ARGS`` in the project; its eval.json, with a finite loss and bits per byte."""
    assert args[:2] == ("-m", "trainer.eval"), args
    ok(run_python(*args, cwd=project, env={"PYTHONPATH": str(project)}))
    checkpoint = args[args.index("--checkpoint") + 1]
    result = json.loads((project / checkpoint / "eval.json").read_text())
    assert math.isfinite(result["val_loss"]) and math.isfinite(result["bits_per_byte"]), result
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


# ---------------------------------------------------------------------------------------------
def test_remote_journey_and_resume_on_a_new_box(sshd: SSHTarget, remote_workdir: str, box_python: Path,
                                                 s3_server: S3Endpoint, s3_bucket: str, project: Path,
                                                 run_python, monkeypatch):
    name = f"journey{os.getpid()}"
    env = s3_server.env()
    storage = s3_storage(s3_server, s3_bucket)
    new_box = f"{remote_workdir}-new"
    (project / "configs" / "box1.yaml").write_text(
        ssh_config(sshd, remote_workdir, str(box_python), name=name, storage=storage, sets=journey_sets(FIRST_STEPS)))
    (project / "configs" / "box2.yaml").write_text(
        ssh_config(sshd, new_box, str(box_python), name=name, storage=storage, sets=journey_sets(RESUMED_STEPS)))
    state_file = project / ".launcher" / "state.json"

    def wait_for_store_flush(workdir: str) -> None:
        wait_for(lambda: "agent: final flush done" in box_shell(sshd, f"cat {workdir}/runs/{name}/agent.log").stdout,
                 60, "the agent's final flush to the store")

    def finished_status(steps: int) -> dict:
        status = json.loads(ok(launcher(project, "status", "--json", env=env)).stdout)
        assert status["state"] == "finished" and status["run"] == name, status
        assert status["step"] == status["max_steps"] == steps, status
        assert status["loss"] is not None and math.isfinite(status["loss"]), status
        return status

    try:
        # ---- the first box: up -> run -> logs --follow -> status -> fetch-checkpoint -> eval -> down
        ok(launcher(project, "up", "--config", "configs/box1.yaml", env=env))
        run = ok(launcher(project, "run", "--config", "configs/box1.yaml", env=env))
        assert "training started" in run.stdout
        followed = follow_logs_until(project, finished_line(FIRST_STEPS), 180, env)
        assert followed.returncode == 0 and "Training has finished" in followed.stderr, followed
        assert any("overfit check passed" in line for line in followed.lines), followed.lines[:20]
        assert any(f"] step 1/{FIRST_STEPS} |" in line for line in followed.lines), followed.lines[:20]
        wait_for_store_flush(remote_workdir)
        first = finished_status(FIRST_STEPS)

        fetch = ok(launcher(project, "fetch-checkpoint", env=env))
        assert f"step {FIRST_STEPS}" in fetch.stdout and "every sha256 verified" in fetch.stdout, fetch.stdout
        checkpoint = project / "checkpoints" / name / "final"
        manifest = verify_manifest(checkpoint, check_hashes=True)  # our own check of every file's sha256
        assert int(manifest.meta["step"]) == FIRST_STEPS and "model.safetensors" in manifest.files

        # the tokenizer and the data are in the store (the agent uploaded them once): take them from there
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        store = open_store(load_launcher_config(project / "configs" / "box1.yaml").storage, project)
        for sub in ("tokenizer", "data"):
            store.download_tree(f"{name}/_prepared/{sub}", project / "prepared" / sub, keep_manifest=False)
        evaluate(run_python, project, "-m", "trainer.eval", "--checkpoint", f"checkpoints/{name}/final",
                 "--tokenizer_model", "prepared/tokenizer/spm.model", "--data_dir", "prepared/data")

        ok(launcher(project, "down", env=env))
        assert json.loads(state_file.read_text())["box"] is None

        # ---- the box is lost: its project folder, run, tokenizer and data are gone
        shutil.rmtree(remote_workdir)
        assert box_shell(sshd, f"test -e {remote_workdir}").returncode == 1

        # ---- a new box: up -> run --resume (more steps) -> logs --follow -> status -> down
        ok(launcher(project, "up", "--config", "configs/box2.yaml", env=env))
        resumed = ok(launcher(project, "run", "--config", "configs/box2.yaml", "--resume", env=env))
        out = resumed.stdout
        assert "] restore done" in out, out
        assert f"restored checkpoint final (step {FIRST_STEPS}" in out, out
        assert "restored prepared tokenizer/" in out and "restored prepared data/" in out, out
        # the restored tokenizer and data are used as they are, not rebuilt
        assert "tokenizer is up to date" in out and "data is up to date" in out, out
        followed = follow_logs_until(project, finished_line(RESUMED_STEPS), 180, env)
        assert followed.returncode == 0 and "Training has finished" in followed.stderr, followed
        wait_for_store_flush(new_box)
        second = finished_status(RESUMED_STEPS)
        assert second["tokens_seen"] == first["tokens_seen"] * RESUMED_STEPS // FIRST_STEPS, (first, second)

        log = box_shell(sshd, f"cat {new_box}/runs/{name}/train.log").stdout.splitlines()
        resume_at = next(i for i, line in enumerate(log) if re.search(rf"resuming from \S+ at step {FIRST_STEPS} ", line))
        steps_after = [int(m.group(1)) for line in log[resume_at:] if (m := re.search(r"\] step (\d+)/", line))]
        assert steps_after == list(range(FIRST_STEPS + 1, RESUMED_STEPS + 1)), steps_after
        assert not any("overfit check" in line for line in log[resume_at:])  # a resumed run passed it already
        # metrics.jsonl (restored up to the checkpoint, then appended): every step once, none twice
        metrics = box_shell(sshd, f"cat {new_box}/runs/{name}/metrics.jsonl").stdout
        assert metric_steps(metrics) == list(range(1, RESUMED_STEPS + 1))
        assert metric_steps(metrics, "eval") == list(range(CHECKPOINT_EVERY, RESUMED_STEPS + 1, CHECKPOINT_EVERY))
        assert metric_steps(store.read_text(f"{name}/metrics.jsonl")) == list(range(1, RESUMED_STEPS + 1))
        assert store.latest_checkpoint(name).step == RESUMED_STEPS

        ok(launcher(project, "down", env=env))
        assert json.loads(state_file.read_text())["box"] is None
        assert box_shell(sshd, f"tmux has-session -t =llmbox-{name}").returncode != 0
    finally:
        if state_file.is_file() and json.loads(state_file.read_text()).get("box"):
            launcher(project, "down", env=env, timeout=300)
        shutil.rmtree(new_box, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
README_QUICKSTART = [
    "launcher run",
    "launcher logs --follow",
    "launcher status",
    "launcher fetch-checkpoint",
    "python -m trainer.eval --checkpoint checkpoints/quickstart/final --tokenizer_model tokenizer/spm.model",
    "launcher down",
]
# Only to keep the test short: the same pipeline with less data and fewer steps.
QUICKSTART_SHORTER = [
    "--set", "run.tokenizer.sample_bytes=400000", "--set", "run.data.train_tokens=100000",
    "--set", "run.data.val_tokens=10000",
    "--set", "run.set=" + json.dumps(["train.run_name=quickstart", "train.max_steps=30", "train.log_interval=5",
                                      "train.eval_interval=15", "train.checkpoint_interval=15", "train.eval_tokens=2048"]),
]


def readme_quickstart_commands() -> list[str]:
    """The commands of README.md's quick start, in order: its indented code lines from `launcher run`
    (the main job) on, without their comments."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    code = [line.strip().split("  #", 1)[0].strip() for line in section.splitlines() if line.startswith("    ")]
    code = [c for c in code if c.startswith(("launcher ", "python -m ")) or c == "launcher"]
    return code


def check_status_json(text: str) -> dict:
    """`launcher status --json` output, checked against its documented schema (docs/status-json.md)."""
    from launcher.commands.status import STATUS_FIELDS

    data = json.loads(text)
    assert set(data) == set(STATUS_FIELDS), data
    kinds = {"integer": int, "number": float, "string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
    for name, (types, _) in STATUS_FIELDS.items():
        assert any(type(data[name]) is kinds[t] for t in types), (name, data[name], types)
    return data


def newcomer_before_any_run(project: Path, env: dict) -> None:
    """What a newcomer tries before `launcher run`: each says the run has not started, nothing else."""
    follow = launcher(project, "logs", "--follow", env=env, timeout=120)
    assert follow.returncode == 1 and "has not started" in follow.stderr, follow
    assert "tmux session" not in follow.stderr + follow.stdout, follow
    stop = ok(launcher(project, "stop", env=env))
    assert "nothing to stop" in stop.stdout and "has not started" in stop.stdout, stop.stdout
    assert "None" not in stop.stdout and "--resume" not in stop.stdout, stop.stdout
    status = check_status_json(ok(launcher(project, "status", "--json", env=env)).stdout)
    assert status["state"] == "not started" and status["step"] is None and status["phase"] is None, status
    dry = ok(launcher(project, "run", "--dry-run", *QUICKSTART_SHORTER, env=env))
    trainer_lines = [line for line in dry.stdout.splitlines() if " -m trainer." in line]
    assert len(trainer_lines) >= 5, dry.stdout  # tokenizer, data, benchmark, cost, train
    for line in trainer_lines:
        assert line.count("train.run_name=") <= 1, line
    assert "over SFTP" not in dry.stdout and "directly on this machine" in dry.stdout, dry.stdout
    assert "sync would be skipped" in dry.stdout and "tokenizer would run" in dry.stdout, dry.stdout
    assert not (project / ".launcher").exists() and not (project / "runs").exists()


def test_quickstart_commands_from_the_readme(tmp_path: Path, run_python):
    commands = readme_quickstart_commands()
    assert commands == README_QUICKSTART, "README.md's quick start changed: bring this test in line with it"
    home = tmp_path / "home"  # the user's home: the local box must write nothing there
    home.mkdir()
    env = {"HOME": str(home)}
    project = copy_project(tmp_path / "fresh")
    for leftover in (".launcher", "runs", "data", "tokenizer", "checkpoints"):
        assert not (project / leftover).exists()
    store = project / ".launcher" / "store" / "quickstart"
    session = "=llmbox-quickstart"  # tmux's session names are per machine: never touch one this test did not start
    assert subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0, \
        "a quickstart run is going on this machine (tmux session llmbox-quickstart); let it finish first"
    started = False
    newcomer_before_any_run(project, env)
    run_dir = project / "runs" / "quickstart"

    try:
        for command in commands:
            argv = shlex.split(command)
            if argv[:2] == ["launcher", "run"]:
                started = True
                result = ok(launcher(project, *argv[1:], *QUICKSTART_SHORTER, env=env, timeout=300))
                for stage in ("sync", "setup", "tokenizer", "data", "benchmark", "cost", "train"):
                    assert f"] {stage} " in result.stdout, result.stdout
                assert "Cost projection" in result.stdout and "training started" in result.stdout
                # output to a file: no carriage-return soup, no cursor moves, a benchmark that says how far it is
                assert "\r" not in result.stdout and "\x1b" not in result.stdout, result.stdout
                assert "benchmark: micro-batch" in result.stdout and "step 20/20" in result.stdout, result.stdout
                assert "tensorboard --logdir runs/quickstart" in result.stdout, result.stdout
            elif argv[:3] == ["launcher", "logs", "--follow"]:
                followed = follow_logs_until(project, finished_line(30), 180, env=env, args=tuple(argv[1:]))
                assert followed.returncode == 0 and "Training has finished" in followed.stderr, followed
                wait_for(lambda: "agent: final flush done" in (run_dir / "agent.log").read_text(), 60,
                         "the agent's final flush to the store")
                log = (run_dir / "train.log").read_text()
                assert "benchmark: micro-batch 8: step 20/20" in log and "overfit check: step 25/25" in log, log
            elif argv[0] == "launcher":
                result = ok(launcher(project, *argv[1:], env=env))
                if argv[1] == "status":
                    assert "finished" in result.stdout and "30 / 30" in result.stdout, result.stdout
                    status = check_status_json(ok(launcher(project, "status", "--json", env=env)).stdout)
                    assert status["phase"] == "finished" and status["exit_code"] == 0 and status["step"] == 30, status
                    again_is_a_no_op(project, env)
                elif argv[1] == "fetch-checkpoint":
                    assert "step 30" in result.stdout and "every sha256 verified" in result.stdout, result.stdout
                    verify_manifest(project / "checkpoints" / "quickstart" / "final", check_hashes=True)
                elif argv[1] == "down":
                    assert result.stdout.count("down:") == 1 and "nothing to stop" not in result.stdout, result.stdout
                    assert "run 'quickstart' had already finished at step 30/30" in result.stdout, result.stdout
                    assert "run stopped" not in result.stdout, result.stdout
            else:
                assert argv[0] == "python", argv
                evaluate(run_python, project, *argv[1:])
    finally:
        if started:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)

    assert json.loads((project / ".launcher" / "state.json").read_text())["box"] is None  # down cleared it
    losses = [r["loss"] for r in map(json.loads, (project / "runs/quickstart/metrics.jsonl").read_text().splitlines())
              if r.get("type") == "train"]
    assert len(losses) >= 2 and losses[0] > losses[-1], losses
    for folder in (project / "runs" / "quickstart", store):
        png = folder / "loss_curve.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (project / "checkpoints" / "quickstart" / "final" / "eval.json").is_file()
    assert (store / "final" / MANIFEST_NAME).is_file()
    assert list(store.glob("events.out.tfevents.*")), list(store.iterdir())  # TensorBoard's events, mirrored
    assert [p for p in home.rglob("*")] == [], "the local box wrote outside the project"


def again_is_a_no_op(project: Path, env: dict) -> None:
    """`launcher run` on the finished run: says it is complete and how to train further, changes nothing."""
    watched = [project / "runs/quickstart/status.json", project / "runs/quickstart/train.log", project / ".launcher/state.json"]
    before = [p.read_bytes() for p in watched]
    again = ok(launcher(project, "run", *QUICKSTART_SHORTER, env=env))
    assert "is complete" in again.stdout and "train.max_steps" in again.stdout and "run.name" in again.stdout, again.stdout
    assert "training started" not in again.stdout and "] cost" not in again.stdout, again.stdout
    assert [p.read_bytes() for p in watched] == before
