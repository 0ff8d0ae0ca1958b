"""The launcher on the local box (this machine): the embedded default kind, file:// store.

run -> status -> logs -> stop -> down in a copy of the project, with real tmux; --dry-run
changes nothing; an over-budget projection stops before training.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness.launcher_cli import assert_clean_error, copy_project, launcher, local_config, wait_for


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def test_local_run_status_logs_stop_down(project: Path):
    name = f"local{os.getpid()}"
    (project / "configs" / "local.yaml").write_text(local_config(name))
    dry = launcher(project, "run", "--config", "configs/local.yaml", "--dry-run")
    assert dry.returncode == 0 and "trainer.train" in dry.stdout, dry.stderr
    assert not (project / ".launcher").exists() and not (project / "runs").exists()
    try:
        run = launcher(project, "run", "--config", "configs/local.yaml")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "] sync skipped" in run.stdout and "training started" in run.stdout

        def status():
            r = launcher(project, "status", "--json")
            assert r.returncode == 0, r.stderr
            data = json.loads(r.stdout)
            return data if data.get("step") and data.get("loss") is not None else None

        data = wait_for(status, 120, "a step and a loss")
        assert data["state"] == "running" and data["box"].startswith("this machine")
        logs = launcher(project, "logs", "-n", "3")
        assert logs.returncode == 0 and len(logs.stdout.splitlines()) == 3
        stop = launcher(project, "stop", timeout=300)
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
        assert json.loads(launcher(project, "status", "--json").stdout)["state"] == "stopped"
        # the agent mirrored the run to the local store
        assert (project / ".launcher" / "store" / name / "status.json").is_file()
    finally:
        down = launcher(project, "down", timeout=300)
        subprocess.run(["tmux", "kill-session", "-t", f"=llmbox-{name}"], capture_output=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert json.loads((project / ".launcher" / "state.json").read_text())["run"] is None
    # after down, logs fall back to... the box is this machine, still reachable: the log is there
    assert launcher(project, "logs", "--config", "configs/local.yaml", "-n", "1").returncode == 0


def test_over_budget_stops_before_training(project: Path):
    name = f"budget{os.getpid()}"
    (project / "configs" / "poor.yaml").write_text(local_config(name, max_cost=0.0001))
    result = launcher(project, "run", "--config", "configs/poor.yaml")
    assert_clean_error(result, "stopped before training", "--allow-over-budget")
    assert result.returncode == 3
    cost = json.loads((project / "runs" / name / "cost.json").read_text())  # the verdict's figures come from here
    assert cost["verdict"] == "over_budget"
    assert f"projected cost ${cost['total_cost']:,.2f}" in result.stderr and f"exceeds budget.max_cost ${cost['max_cost']:,.2f}" in result.stderr
    assert "] train" not in result.stdout
    assert subprocess.run(["tmux", "has-session", "-t", f"=llmbox-{name}"], capture_output=True).returncode != 0



@pytest.mark.slow  # two trainer starts: ~40 s on a loaded machine
def test_a_refused_resume_fails_the_run_in_run_and_status(tmp_path: Path):
    """A real trainer refuses to resume with another model shape, started as the train stage starts
    it (stderr teed, exit code in train.exit): `launcher run`'s wait for the verdict raises "failed:
    resume refused: ..." (not "training started"), and `launcher status` shows the same."""
    import shlex
    import sys
    from types import SimpleNamespace

    from launcher.box.local import LocalBox
    from launcher.commands.status import read_run, render, summarize
    from launcher.run.run_status import write_launcher_phase
    from launcher.stages.train import await_resume_verdict
    from rich.console import Console
    from runcontract.errors import UserError
    from runcontract.run_folder import TRAINER_EXIT_FILE, TRAINER_STARTING, TRAINER_STDERR_LOG
    from tests.harness.trainer_runs import make_data, subprocess_env, tiny_args

    make_data(tmp_path / "data")
    first = subprocess.run([sys.executable, "-m", "trainer.train", *tiny_args(tmp_path, "shape", "--stop_at_step", "2",
                                                                              "--set", "train.checks.overfit_microset.enabled=false")],
                           cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    box = LocalBox(tmp_path)
    ctx = SimpleNamespace(box=box, run_dir="runs/shape")
    write_launcher_phase(ctx, "setup", progress=TRAINER_STARTING)  # as the train stage does before starting the session
    wider = shlex.join([sys.executable, "-m", "trainer.train", *tiny_args(tmp_path, "shape", "--set", "model.n_layers=3")])
    rd = tmp_path / "runs" / "shape"
    window = subprocess.Popen(["bash", "-c", f"{wider} 2> >(tee -ia {rd / TRAINER_STDERR_LOG} >&2); echo $? > {rd / TRAINER_EXIT_FILE}"],
                              cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(UserError, match=r"^failed: resume refused: .*another model shape.*n_layers") as refused:
            await_resume_verdict(ctx, timeout_s=240)
        assert "Nothing was trained" in str(refused.value)
    finally:
        window.wait(timeout=120)
    data = read_run(box, "shape")
    summary = summarize(box.label, "shape", data, None, None)
    assert summary["state"] == "failed" and summary["progress"].startswith("resume refused: "), summary
    out = io.StringIO()
    Console(file=out, width=400).print(render(summary))
    assert "failed: resume refused: " in out.getvalue(), out.getvalue()
