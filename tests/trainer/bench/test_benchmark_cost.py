"""Throughput benchmark, GPU peak table, cost projection and the budget gate (issue 5).

Real training steps of the smoke model on CPU; the out-of-memory halving is driven by a
memory-limit callable that raises torch's own OutOfMemoryError, as a smaller GPU would.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from trainer.bench.benchmark import largest_fitting, run_benchmark
from runcontract.config import ModelConfig, TrainConfig
from runcontract.configlib import load_config
from trainer.bench.cost import gate, project
from runcontract.errors import OverBudgetError, UserError
from runcontract.gpu_specs import mfu, peak_bf16_flops
from tests.harness.paths import REPO as ROOT

THROUGHPUT_KEYS = {
    "device_name", "device_count", "torch_version", "cuda_version", "model_config_hash", "num_parameters",
    "flops_per_token", "micro_batch_size", "seq_len", "tokens_per_sec", "step_time_s", "mfu",
    "peak_memory_bytes", "precision", "compile", "measured_at",
}


@pytest.fixture
def smoke_model() -> ModelConfig:
    return load_config(ModelConfig, ROOT / "configs/model_smoke.yaml")


@pytest.fixture
def smoke_train(tmp_path) -> TrainConfig:
    cfg = load_config(TrainConfig, ROOT / "configs/train_smoke.yaml")
    cfg.runs_dir = str(tmp_path / "runs")
    cfg.seq_len = 64
    cfg.micro_batch_size = None
    return cfg


# -- GPU table -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA GeForce RTX 4090", 165.2),
    ("NVIDIA A100-SXM4-80GB", 312),
    ("NVIDIA A100 80GB PCIe", 312),
    ("NVIDIA H100 80GB HBM3", 989),
    ("NVIDIA H100 PCIe", 756),
    ("NVIDIA A10G", 70),
    ("NVIDIA A10", 125),
    ("NVIDIA L4", 121),
    ("NVIDIA L40S", 362),
    ("NVIDIA GeForce RTX 3090", 71),
])
def test_peak_table_matches_whole_names(name, tflops):
    assert peak_bf16_flops(name) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", [None, "", "cpu (AMD EPYC)", "NVIDIA RTX A1000", "Some Future GPU"])
def test_unknown_devices_have_no_peak(name):
    assert peak_bf16_flops(name) is None
    assert mfu(1e9, 1e5, peak_bf16_flops(name)) is None


def test_mfu_is_achieved_over_peak():
    assert mfu(6e8, 1e5, 312e12) == pytest.approx(6e8 * 1e5 / 312e12)


# -- cost projection -----------------------------------------------------------------------
def test_project_hours_dollars_and_finish_time():
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    proj = project(1_000_000_000, 100_000.0, 2.0, gpu_count=2, max_cost=5.0, now=now)
    assert proj.total_tokens_per_sec == 200_000.0
    assert proj.hours == pytest.approx(5000 / 3600)
    assert proj.total_cost == pytest.approx(2.0 * 5000 / 3600)
    assert datetime.fromisoformat(proj.finish_time) == now + timedelta(seconds=5000)
    assert proj.verdict == "ok"
    assert project(1_000_000_000, 100_000.0, 2.0, gpu_count=1, max_cost=5.0, now=now).verdict == "over_budget"
    assert project(10, 1.0, 0.0).verdict == "ok" and project(10, 1.0, 0.0).max_cost is None


@pytest.mark.parametrize("args", [(0, 1.0, 1.0), (10, 0.0, 1.0), (10, float("nan"), 1.0), (10, 1.0, -1.0)])
def test_project_rejects_nonsense(args):
    with pytest.raises(UserError):
        project(*args)


def _write_throughput(run_dir: Path, tokens_per_sec: float, model_hash: str, seq_len: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "throughput.json").write_text(json.dumps({
        "tokens_per_sec": tokens_per_sec, "model_config_hash": model_hash, "seq_len": seq_len,
        "device_name": "NVIDIA GeForce RTX 4090", "device_count": 1,
    }))


def test_gate_skips_without_throughput(tmp_path, smoke_model, smoke_train, caplog):
    with caplog.at_level(logging.INFO, logger="trainer.cost"):
        assert gate(smoke_train, smoke_model, tmp_path, allow_over_budget=False) is None
    assert "cost gate skipped" in caplog.text
    assert not (tmp_path / "cost.json").exists()


def test_gate_passes_within_budget_and_writes_cost_json(tmp_path, smoke_model, smoke_train):
    smoke_train.target_tokens = 3_600_000
    smoke_train.budget.hourly_rate = 1.0
    smoke_train.budget.max_cost = 2.0
    _write_throughput(tmp_path, 1000.0, smoke_model.config_hash(), smoke_train.seq_len)
    proj = gate(smoke_train, smoke_model, tmp_path, allow_over_budget=False, gpu_count=1)
    assert proj.verdict == "ok" and proj.total_cost == pytest.approx(1.0)
    written = json.loads((tmp_path / "cost.json").read_text())
    assert written["total_cost"] == pytest.approx(1.0) and written["verdict"] == "ok"
    assert written["tokens_per_sec"] == 1000.0 and written["hours"] == pytest.approx(1.0)


def test_gate_warns_when_the_benchmark_measured_another_gpu_count(tmp_path, smoke_model, smoke_train):
    _write_throughput(tmp_path, 1000.0, smoke_model.config_hash(), smoke_train.seq_len)  # no gpu_count: one process
    gate(smoke_train, smoke_model, tmp_path, allow_over_budget=True, gpu_count=2)
    warnings = json.loads((tmp_path / "cost.json").read_text())["warnings"]
    assert any("measured on 1 GPU(s) together, this run trains on 2" in w for w in warnings), warnings
    record = json.loads((tmp_path / "throughput.json").read_text())
    (tmp_path / "throughput.json").write_text(json.dumps({**record, "gpu_count": 2}))  # measured under DDP on both
    gate(smoke_train, smoke_model, tmp_path, allow_over_budget=True, gpu_count=2)
    assert json.loads((tmp_path / "cost.json").read_text())["warnings"] == []


def test_gate_refuses_over_budget_with_figures_and_knobs(tmp_path, smoke_model, smoke_train):
    smoke_train.target_tokens = 36_000_000  # 10 h at 1000 tokens/s
    smoke_train.budget.hourly_rate = 1.5
    smoke_train.budget.max_cost = 5.0
    _write_throughput(tmp_path, 1000.0, smoke_model.config_hash(), smoke_train.seq_len)
    with pytest.raises(OverBudgetError) as caught:
        gate(smoke_train, smoke_model, tmp_path, allow_over_budget=False, gpu_count=1)
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert "$15.00" in message and "$5.00" in message
    for knob in ("train.target_tokens=12000000", "$0.50/h", "train.budget.max_cost=15", "--allow_over_budget"):
        assert knob in message, knob
    assert json.loads((tmp_path / "cost.json").read_text())["verdict"] == "over_budget"


def test_gate_override_logs_a_warning(tmp_path, smoke_model, smoke_train, caplog):
    smoke_train.target_tokens = 36_000_000
    smoke_train.budget.hourly_rate = 1.5
    smoke_train.budget.max_cost = 5.0
    _write_throughput(tmp_path, 1000.0, "0123456789ab", smoke_train.seq_len)
    with caplog.at_level(logging.WARNING, logger="trainer.cost"):
        proj = gate(smoke_train, smoke_model, tmp_path, allow_over_budget=True, gpu_count=1)
    assert proj.verdict == "over_budget"
    assert "--allow_over_budget given" in caplog.text
    assert "0123456789ab" in caplog.text  # the benchmark measured another model
    assert json.loads((tmp_path / "cost.json").read_text())["allowed_over_budget"] is True


def test_gate_rejects_a_broken_throughput_file(tmp_path, smoke_model, smoke_train):
    (tmp_path / "throughput.json").write_text('{"tokens_per_sec": ')
    with pytest.raises(UserError, match="not a valid throughput file"):
        gate(smoke_train, smoke_model, tmp_path, allow_over_budget=False)


# -- micro-batch search --------------------------------------------------------------------
def test_largest_fitting_halves_on_out_of_memory():
    tried = []

    def attempt(micro_batch: int) -> str:
        tried.append(micro_batch)
        if micro_batch > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (limit 5)")
        return f"ran {micro_batch}"

    assert largest_fitting(attempt, 32) == (4, "ran 4")
    assert tried == [32, 16, 8, 4]


def test_largest_fitting_gives_up_below_one_and_passes_other_errors():
    def never(micro_batch):
        raise torch.cuda.OutOfMemoryError("no")

    with pytest.raises(UserError, match="even a micro-batch of 1"):
        largest_fitting(never, 4)

    def broken(micro_batch):
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        largest_fitting(broken, 4)


def test_benchmark_searches_micro_batch_under_a_memory_limit(smoke_model, smoke_train):
    tried = []

    def memory_limit(micro_batch: int) -> None:  # a device that holds 3 sequences' activations
        tried.append(micro_batch)
        if micro_batch > 3:
            raise torch.cuda.OutOfMemoryError(f"{micro_batch} sequences do not fit")

    record = run_benchmark(smoke_model, smoke_train, torch.device("cpu"), steps=2, warmup=1,
                           max_micro_batch=8, memory_guard=memory_limit, peak_flops=1e12)
    assert record["micro_batch_size"] == 2 and record["micro_batch_searched"] is True
    assert tried[:3] == [8, 4, 2]
    assert THROUGHPUT_KEYS <= record.keys()
    assert record["tokens_per_sec"] > 0 and record["step_time_s"] > 0 and record["peak_memory_bytes"] > 0
    assert record["grad_accum"] == 2  # accumulation as training does it (capped at 2)
    assert record["tokens_per_sec"] == pytest.approx(2 * 64 * record["grad_accum"] / record["step_time_s"])
    assert record["mfu"] == pytest.approx(record["flops_per_token"] * record["tokens_per_sec"] / 1e12)
    assert record["model_config_hash"] == smoke_model.config_hash()
    assert record["precision"] == "fp32" and record["cuda_version"] is None


def test_benchmark_uses_a_given_micro_batch_and_reports_no_mfu_on_cpu(smoke_model, smoke_train):
    smoke_train.micro_batch_size = 3
    record = run_benchmark(smoke_model, smoke_train, torch.device("cpu"), steps=1, warmup=0)
    assert record["micro_batch_size"] == 3 and record["micro_batch_searched"] is False
    assert record["mfu"] is None and record["device_count"] == 1


def test_benchmark_turns_oom_at_a_given_micro_batch_into_advice(smoke_model, smoke_train):
    def tiny_device(micro_batch):
        raise torch.cuda.OutOfMemoryError("no room")

    with pytest.raises(UserError, match="smaller --micro_batch_size"):
        run_benchmark(smoke_model, smoke_train, torch.device("cpu"), steps=1, warmup=0, micro_batch_size=4, memory_guard=tiny_device)


# -- the commands --------------------------------------------------------------------------
def test_benchmark_command_writes_throughput_json(tmp_path, run_python):
    out = tmp_path / "run" / "throughput.json"
    result = run_python("-m", "trainer.benchmark", "--model_config", "configs/model_smoke.yaml",
                        "--train_config", "configs/train_smoke.yaml", "--output_path", str(out),
                        "--steps", "2", "--warmup", "1", "--set", "train.seq_len=64", timeout=120)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert THROUGHPUT_KEYS <= record.keys()
    assert record["micro_batch_size"] == 8 and record["seq_len"] == 64 and record["mfu"] is None
    assert "tokens/s" in result.stdout
    assert list(out.parent.iterdir()) == [out]  # no temporary files left behind


def test_benchmark_command_rejects_bad_micro_batch(run_python, tmp_path):
    result = run_python("-m", "trainer.benchmark", "--model_config", "configs/model_smoke.yaml",
                        "--train_config", "configs/train_smoke.yaml", "--output_path", str(tmp_path / "t.json"),
                        "--micro_batch_size", "0", timeout=120)
    assert result.returncode == 1
    assert "--micro_batch_size must be at least 1" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "t.json").exists()


def test_cost_command_exit_codes(tmp_path, run_python, smoke_model):
    run_dir = tmp_path / "runs" / "smoke"
    _write_throughput(run_dir, 1000.0, smoke_model.config_hash(), 128)
    base = ["-m", "trainer.cost", "--model_config", "configs/model_smoke.yaml", "--train_config", "configs/train_smoke.yaml",
            "--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", "train.target_tokens=3600000"]

    within = run_python(*base, "--set", "train.budget.hourly_rate=1.0", "--set", "train.budget.max_cost=2")
    assert within.returncode == 0, within.stderr
    assert "projected cost" in within.stdout and "$1.00" in within.stdout
    assert json.loads((run_dir / "cost.json").read_text())["verdict"] == "ok"

    over = run_python(*base, "--set", "train.budget.hourly_rate=3.0", "--set", "train.budget.max_cost=2")
    assert over.returncode == 3, over.stderr
    assert "$3.00" in over.stderr and "$2.00" in over.stderr and "Traceback" not in over.stderr

    two_gpus = run_python(*base, "--set", "train.budget.hourly_rate=3.0", "--set", "train.budget.max_cost=2", "--gpu_count", "2")
    assert two_gpus.returncode == 0, two_gpus.stderr

    missing = run_python(*base, "--throughput", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 1 and "trainer.benchmark" in missing.stderr and "Traceback" not in missing.stderr

    bad_config = run_python(*base, "--set", "train.no_such_key=1")
    assert bad_config.returncode == 2 and "no_such_key" in bad_config.stderr


@pytest.mark.slow
def test_benchmark_with_torch_compile_on_cpu(smoke_model, smoke_train):
    smoke_train.compile = True
    smoke_train.micro_batch_size = 2
    record = run_benchmark(smoke_model, smoke_train, torch.device("cpu"), steps=2, warmup=1)
    assert record["compile"] is True and record["tokens_per_sec"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_benchmark_on_cuda_searches_and_reports_mfu(smoke_model, smoke_train):
    smoke_train.precision = "auto"
    record = run_benchmark(smoke_model, smoke_train, torch.device("cuda"), steps=3, warmup=2, max_micro_batch=16, peak_flops=None)
    assert record["precision"] == "bf16" and record["cuda_version"] is not None
    assert record["micro_batch_size"] == 16 and record["peak_memory_kind"] == "cuda_max_allocated"
    if peak_bf16_flops(record["device_name"]) is not None:
        assert 0 < record["mfu"] < 1
