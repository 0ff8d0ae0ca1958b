"""trainer.nccl_probe on CPU: two real gloo ranks through `accelerate launch` (ACCELERATE_USE_CPU=1),
the same code that all-reduces across GPUs with NCCL on a box."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runcontract.run_files import NcclProbe
from tests.harness.procs import processes_mentioning
from tests.harness.trainer_runs import subprocess_env
from trainer.bench.nccl_probe import SIMULATE_HANG_ENV, bus_bandwidth


def probe(tmp_path: Path, *extra: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "trainer.nccl_probe", "--gpu_count", "2", "--output_path", str(tmp_path / "nccl_probe.json"),
               "--box_id", "box-1", "--size_mb", "0.1", "--iterations", "2", "--min_busbw_gbps", "0", *extra]
    return subprocess.run(command, cwd=tmp_path, env=env or cpu_ranks_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def cpu_ranks_env(tmp_path: Path, **extra: str) -> dict:
    # TMPDIR: the attempts' work folders land in tmp_path, so a test can look for processes left behind
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**subprocess_env(), "ACCELERATE_USE_CPU": "1", "TMPDIR": str(tmp_path / "tmp"), **extra}


def test_bus_bandwidth_is_nccl_tests_definition():
    assert bus_bandwidth(10.0, 2) == 10.0  # 2(n-1)/n = 1
    assert bus_bandwidth(10.0, 4) == 15.0
    assert bus_bandwidth(8.0, 8) == 14.0


def test_a_box_with_fewer_gpus_than_configured_is_refused_before_anything_starts(tmp_path):
    env = {k: v for k, v in subprocess_env().items() if k != "ACCELERATE_USE_CPU"}  # no CUDA here: 0 GPUs
    result = probe(tmp_path, env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "run.gpu_count is 2 but torch sees 0 CUDA GPU(s)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nccl_probe.json").exists() and "probe: all-reduce" not in result.stdout


def test_two_ranks_all_reduce_and_the_result_is_recorded(tmp_path):
    result = probe(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = NcclProbe.read(tmp_path / "nccl_probe.json")
    assert recorded.ok and recorded.gpu_count == 2 and recorded.backend == "gloo" and recorded.box_id == "box-1"
    assert recorded.nccl_env == {} and [a.outcome for a in recorded.attempts] == ["ok"]  # NCCL's defaults worked: no retry
    assert recorded.busbw_gbps > 0 and recorded.busbw_gbps == pytest.approx(recorded.algbw_gbps)  # 2 ranks: busbw = algbw
    assert recorded.size_bytes == 100_000 and recorded.iterations == 2
    assert "probe passed with NCCL defaults" in result.stdout and "all-reduce of 0.1 MB x 2 across 2 ranks (gloo" in result.stdout


@pytest.mark.slow
def test_a_bus_under_the_threshold_is_retried_without_p2p_then_refused(tmp_path):
    result = probe(tmp_path, "--min_busbw_gbps", "1e9")  # no bus crawls slower than that
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = NcclProbe.read(tmp_path / "nccl_probe.json")
    assert not recorded.ok and [(a.nccl_env, a.outcome) for a in recorded.attempts] == [({}, "slow"), ({"NCCL_P2P_DISABLE": "1"}, "slow")]
    assert all(a.busbw_gbps > 0 for a in recorded.attempts)
    message = result.stderr
    assert "Tried NCCL defaults: slow" in message and "NCCL_P2P_DISABLE=1: slow" in message and "run.gpu_count: 1" in message
    assert "Traceback" not in message


@pytest.mark.slow
def test_hanging_ranks_are_killed_and_the_probe_fails_naming_what_was_tried(tmp_path):
    """Both attempts hang (the test-only knob): each is killed at its timeout, no rank is left behind."""
    env = cpu_ranks_env(tmp_path, **{SIMULATE_HANG_ENV: "all"})
    result = probe(tmp_path, "--timeout_s", "3", env=env)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = NcclProbe.read(tmp_path / "nccl_probe.json")
    assert [(a.nccl_env, a.outcome) for a in recorded.attempts] == [({}, "hang"), ({"NCCL_P2P_DISABLE": "1"}, "hang")]
    assert "no result within timeout_s 3 s of all 2 ranks starting; killed" in recorded.attempts[0].detail
    assert "NCCL defaults: hang" in result.stderr and "NCCL_P2P_DISABLE=1: hang" in result.stderr
    assert processes_mentioning(str(tmp_path / "tmp")) == []  # the launcher and both ranks of each attempt are gone
