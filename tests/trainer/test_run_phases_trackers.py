"""What the trainer shows while it runs (issue 18): status.json phases, overfit-check progress
lines, a finished run left as it was, the CPU thread choice, and the trackers: TensorBoard event
files read back with tensorboard's own reader, W&B run files in offline mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.trainer_runs import make_data, read_metrics, tiny_args
from trainer.training.cpu_threads import auto_threads
from runcontract.run_folder import RUN_PHASES
from trainer.training.loop import main
from tests.harness.paths import REPO


def test_phases_progress_and_tensorboard_match_metrics(tmp_path: Path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from runcontract.run_files import StatusFile

    make_data(tmp_path / "data")
    run_dir = tmp_path / "runs" / "t"
    seen: list = []  # every (phase, progress) status.json was written with, in order
    write = StatusFile.write

    def recording_write(status, path):
        if not seen or seen[-1] != (status.phase, status.progress):
            seen.append((status.phase, status.progress))
        return write(status, path)

    monkeypatch.setattr(StatusFile, "write", recording_write)
    main(tiny_args(tmp_path, "t", "--set", "train.checks.overfit_microset.steps=20"))
    log = (run_dir / "train.log").read_text()
    # the overfit check reports progress (every 2nd of its 20 steps) in train.log and status.json
    assert [f"overfit check: step {n}/20" in log for n in range(2, 21, 2)] == [True] * 10, log
    phases = [p for p, _ in seen]
    assert {"setup", "overfit-check", "training", "eval", "checkpoint", "finished"} <= set(phases), seen
    assert set(phases) <= set(RUN_PHASES), seen
    assert any(p == "overfit-check" and prog and prog.startswith("20/20 steps, loss") for p, prog in seen), seen
    assert phases.index("overfit-check") < phases.index("training") < phases.index("finished")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == status["phase"] == "finished" and status["step"] == 6

    # TensorBoard: the event file in the run folder holds metrics.jsonl's losses, step by step
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, list(run_dir.iterdir())
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    train = {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["type"] == "train"}
    evals = {r["step"]: r["val_loss"] for r in read_metrics(run_dir) if r["type"] == "eval"}
    tb_train = {e.step: e.value for e in acc.Scalars("train/loss")}
    tb_eval = {e.step: e.value for e in acc.Scalars("val/loss")}
    assert sorted(tb_train) == sorted(train) == [1, 2, 3, 4, 5, 6]
    assert all(abs(tb_train[s] - train[s]) < 1e-5 for s in train), (tb_train, train)
    assert sorted(tb_eval) == sorted(evals) == [3, 6]
    assert all(abs(tb_eval[s] - evals[s]) < 1e-5 for s in evals)
    assert "tensorboard --logdir" in log

    # a second run of a finished run changes nothing: status.json and train.log stay as they were
    before = {name: (run_dir / name).read_bytes() for name in ("status.json", "metrics.jsonl")}
    log_before = (run_dir / "train.log").read_text()
    assert main(tiny_args(tmp_path, "t")) == 0
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    added = (run_dir / "train.log").read_text()[len(log_before):]
    assert "nothing to do" in added and "train.max_steps" in added and "loss None" not in added


def test_failed_overfit_check_names_its_phase(tmp_path: Path):
    make_data(tmp_path / "data")
    with pytest.raises(Exception):
        main(tiny_args(tmp_path, "f", "--set", "train.lr=0", "--set", "train.checks.overfit_microset.steps=3"))
    status = json.loads((tmp_path / "runs" / "f" / "status.json").read_text())
    assert status["state"] == status["phase"] == "failed"
    assert status["progress"] == "failed during overfit-check"


def test_wandb_offline_writes_its_run_files(tmp_path: Path):
    make_data(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}
    env.pop("WANDB_API_KEY", None)
    args = tiny_args(tmp_path, "w", "--set", "train.trackers=[tensorboard, wandb]",
                     "--set", "train.checks.overfit_microset.enabled=false")
    result = subprocess.run([sys.executable, "-m", "trainer.train", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = list((tmp_path / "runs" / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "runs" / "w").rglob("*"))
    assert list(runs[0].glob("*.wandb")), list(runs[0].rglob("*"))  # the run's data file, for `wandb sync`
    assert list((tmp_path / "runs" / "w").glob("events.out.tfevents.*"))


def test_cpu_threads_leave_busy_cores_alone(tmp_path: Path):
    assert auto_threads(2, 0.0) == 2 and auto_threads(2, 0.3) == 2
    assert auto_threads(2, 1.0) == 1 and auto_threads(2, 2.0) == 1  # one busy core of two: one thread
    assert auto_threads(16, 4.2) == 12 and auto_threads(4, 9.0) == 1
    make_data(tmp_path / "data")
    main(tiny_args(tmp_path, "c", "--set", "train.cpu_threads=1", "--set", "train.checks.overfit_microset.enabled=false",
                   "--set", "train.trackers=[]"))
    log = (tmp_path / "runs" / "c" / "train.log").read_text()
    assert "CPU threads: 1 (train.cpu_threads)" in log
    assert not list((tmp_path / "runs" / "c").glob("events.out.tfevents.*"))  # trackers: [] means none
