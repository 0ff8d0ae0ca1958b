"""Several GPUs on one box (run.gpu_count 2), on this machine's CPU: the nccl_probe stage, the
benchmark and training launched as their stages launch them, each as two real gloo ranks through
`accelerate launch` (ACCELERATE_USE_CPU=1 in the box's environment stands in for two GPUs)."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from launcher.box.local import LocalBox
from launcher.config import LauncherConfig
from launcher.stages import benchmark
from launcher.run.context import RunContext
from launcher.run.runner import build_stages, run_stages
from launcher.stages.train import train_command
from runcontract.errors import UserError
from runcontract.run_files import NcclProbe, Throughput
from tests.harness.paths import REPO
from tests.harness.procs import processes_mentioning
from tests.harness.trainer_runs import make_data, tiny_args
from trainer.bench.nccl_probe import SIMULATE_HANG_ENV


def two_gpu_context(tmp_path, **probe) -> RunContext:
    args = tiny_args(tmp_path, "two", "--set", "train.max_steps=2", "--set", "train.tokens_per_step=256",  # 4 x 32 x 2 ranks
                     "--set", "train.checks.overfit_microset.enabled=false", "--set", "train.eval_interval=2")
    sets = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    config = LauncherConfig.model_validate({"run": {
        "name": "two", "gpu_count": 2, "model_config": str(REPO / "configs/model_smoke.yaml"),
        "train_config": str(REPO / "configs/train_smoke.yaml"), "set": sets,
        "nccl_probe": {"size_mb": 0.1, "iterations": 2, "min_busbw_gbps": 0, **probe}}})
    return RunContext(config=config, project_root=tmp_path, box=LocalBox(tmp_path), console=Console(file=io.StringIO(), width=400))


def test_dry_run_shows_the_probe_and_the_two_process_launches(tmp_path):
    ctx = two_gpu_context(tmp_path)
    ctx.probe_box = False
    stages = build_stages(ctx)
    assert [s.name for s in stages][:3] == ["sync", "setup", "nccl_probe"]
    run_stages(ctx, stages, dry_run=True)
    shown = ctx.console.file.getvalue()
    assert "[3/8] nccl_probe" in shown and "-m trainer.nccl_probe --gpu_count 2 --output_path runs/two/nccl_probe.json" in shown
    assert "--box_id \"$(( hostname; nvidia-smi -L 2>/dev/null ) | sha256sum | cut -c1-16)\"" in shown
    assert "the benchmark and train launches below get NCCL_P2P_DISABLE=1 in front" in shown
    launch = "-m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1"
    assert f"{launch} --mixed_precision no --dynamo_backend no -m trainer.benchmark" in shown
    assert f"{launch} --mixed_precision no --dynamo_backend no -m trainer.train" in shown


def test_one_gpu_has_no_probe_stage(tmp_path):
    ctx = two_gpu_context(tmp_path)
    one = RunContext(config=ctx.config.model_copy(update={"run": ctx.config.run.model_copy(update={"gpu_count": 1})}),
                     project_root=tmp_path, box=ctx.box, console=ctx.console)
    assert "nccl_probe" not in [s.name for s in build_stages(one)]
    assert "accelerate" not in benchmark.command(one) and "accelerate" not in train_command(one)


@pytest.mark.slow
def test_a_probe_that_hangs_falls_back_to_no_p2p_and_the_benchmark_and_training_use_it(tmp_path, monkeypatch):
    """The probe's first attempt hangs unless NCCL_P2P_DISABLE=1 (the test-only knob: the multi-4090
    hang); it is killed at its timeout, the retry without P2P passes and is recorded; the next
    `launcher run` on this box reuses it; the benchmark and the training launch both carry it,
    as two ranks."""
    make_data(tmp_path / "data")
    (tmp_path / "tmp").mkdir()  # the probe's work folders, so its killed ranks can be looked for
    for name, value in {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), SIMULATE_HANG_ENV: "p2p",
                        "TMPDIR": str(tmp_path / "tmp")}.items():
        monkeypatch.setenv(name, value)
    ctx = two_gpu_context(tmp_path, timeout_s=20)
    stage = next(s for s in build_stages(ctx) if s.name == "nccl_probe")
    assert stage.is_done(ctx) is None
    summary = stage.run(ctx)
    assert summary == "2 GPUs all-reduce with NCCL_P2P_DISABLE=1 (gloo, bus " + summary.split("bus ")[1]
    recorded = NcclProbe.read(tmp_path / "runs/two/nccl_probe.json")
    assert recorded.ok and recorded.nccl_env == {"NCCL_P2P_DISABLE": "1"}
    assert [(a.nccl_env, a.outcome) for a in recorded.attempts] == [({}, "hang"), ({"NCCL_P2P_DISABLE": "1"}, "ok")]
    assert "probe: NCCL defaults: hang" in (tmp_path / "runs/two/train.log").read_text()  # `launcher logs` shows it
    assert processes_mentioning(str(tmp_path / "tmp")) == []  # the hung ranks were killed

    again = two_gpu_context(tmp_path, timeout_s=20)  # the next `launcher run`: same box, same GPU count
    assert "runs/two/nccl_probe.json for this box" in stage.is_done(again)
    assert again.nccl_env == {"NCCL_P2P_DISABLE": "1"}

    bench = benchmark.command(again)
    assert bench.startswith("NCCL_P2P_DISABLE=1 ")
    again.box.run(f"{bench} --steps 2 --warmup 0", timeout=600)
    throughput = Throughput.read(tmp_path / "runs/two/throughput.json")
    assert throughput.gpu_count == 2 and throughput.nccl_env == {"NCCL_P2P_DISABLE": "1"}

    train = train_command(again)
    assert train.startswith("NCCL_P2P_DISABLE=1 ")
    again.box.run(train, timeout=600)
    ranks = json.loads((tmp_path / "runs/two/ranks.json").read_text())
    assert ranks["world_size"] == 2 and [r["rank"] for r in ranks["ranks"]] == [0, 1]
    assert json.loads((tmp_path / "runs/two/cost.json").read_text())["gpu_count"] == 2


def test_a_box_without_the_gpus_is_refused_at_the_probe_stage(tmp_path, monkeypatch):
    """No CUDA here and no ACCELERATE_USE_CPU: run.gpu_count 2 stops at the probe, before data or training."""
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    ctx = two_gpu_context(tmp_path)
    stage = next(s for s in build_stages(ctx) if s.name == "nccl_probe")
    with pytest.raises(UserError) as refused:
        stage.run(ctx)
    message = str(refused.value)
    assert "run.gpu_count is 2 but torch sees 0 CUDA GPU(s) on this box" in message and "Traceback" not in message
    assert not (tmp_path / "runs/two/nccl_probe.json").exists() and ctx.nccl_env == {}
