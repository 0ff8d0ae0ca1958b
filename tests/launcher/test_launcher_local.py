"""The launcher on the local box (this machine): the embedded default kind, file:// store.

run -> status -> logs -> stop -> down in a copy of the project, with real tmux; --dry-run
changes nothing; an over-budget projection stops before training.
"""
from __future__ import annotations

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
