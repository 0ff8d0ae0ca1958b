"""A real two-process data-parallel run on CPU (gloo) through `accelerate launch`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from runcontract.manifest import verify_manifest
from tests.harness.paths import REPO
from tests.harness.trainer_runs import VOCAB, make_data


def test_two_process_ddp_run(tmp_path):
    data = make_data(tmp_path / "data")
    sets = {
        "model.vocab_size": VOCAB, "model.d_model": 64, "model.n_layers": 2, "model.ffn_hidden": 128, "model.max_seq_len": 64,
        "train.runs_dir": tmp_path / "runs", "train.data_dir": data, "train.run_name": "ddp", "train.tokenizer_model": "null",
        "train.seq_len": 32, "train.micro_batch_size": 4, "train.tokens_per_step": 512,  # 2 ranks x 2 accumulation steps
        "train.max_steps": 4, "train.log_interval": 1, "train.eval_interval": 2, "train.eval_tokens": 256,
        "train.checkpoint_interval": 2, "train.checks.overfit_microset.steps": 20,
    }
    # `accelerate launch` as a module: the same CLI, independent of PATH (pyenv shims, venvs)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "trainer.train", "--model_config", str(REPO / "configs/model_smoke.yaml"),
               "--train_config", str(REPO / "configs/train_smoke.yaml")]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run = tmp_path / "runs" / "ddp"
    ranks = json.loads((run / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and [r["rank"] for r in ranks["ranks"]] == [0, 1]
    first, second = ranks["ranks"]
    assert first["first_batch_sha256"] != second["first_batch_sha256"]  # each rank drew its own windows
    assert first["weights_sha256"] == second["weights_sha256"]  # gradients were averaged: identical weights
    log = (run / "train.log").read_text()
    assert "world size 2" in log and "2 accumulation steps x 2 ranks = 512 tokens per step" in log
    assert log.count("run ddp:") == 1  # only the main process writes

    final = run / "final"
    verify_manifest(final)
    assert (final / "rng_rank0.pt").exists() and (final / "rng_rank1.pt").exists()
    rng0 = torch.load(final / "rng_rank0.pt", weights_only=False)["torch"]
    rng1 = torch.load(final / "rng_rank1.pt", weights_only=False)["torch"]
    assert not torch.equal(rng0, rng1)  # per-rank seeds, per-rank states
    train = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert [m["step"] for m in train] == [1, 2, 3, 4] and train[-1]["tokens_seen"] == 4 * 512
    assert "lm_head.weight" not in load_file(str(final / "model.safetensors"))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_resume_from_one_rank_on_two_keeps_the_global_batches(tmp_path):
    """1 rank (micro-batch 4 x 4 accumulation) stops at step 2; 2 ranks (4 x 2 x 2) resume it: the
    same 16 sequences per step in the same order, so the losses follow the uninterrupted run."""
    from trainer.training.loop import main

    data = make_data(tmp_path / "data")

    def sets(run: str) -> list[str]:
        values = {
            "model.vocab_size": VOCAB, "model.d_model": 64, "model.n_layers": 2, "model.ffn_hidden": 128, "model.max_seq_len": 64,
            "train.runs_dir": tmp_path / "runs", "train.data_dir": data, "train.run_name": run, "train.tokenizer_model": "null",
            "train.seq_len": 32, "train.micro_batch_size": 4, "train.tokens_per_step": 512, "train.max_steps": 4,
            "train.log_interval": 1, "train.eval_interval": 2, "train.eval_tokens": 256, "train.checkpoint_interval": 2,
            "train.checks.overfit_microset.enabled": "false",
        }
        configs = ["--model_config", str(REPO / "configs/model_smoke.yaml"), "--train_config", str(REPO / "configs/train_smoke.yaml")]
        return configs + [item for key, value in values.items() for item in ("--set", f"{key}={value}")]

    assert main(sets("straight")) == 0
    assert main([*sets("moved"), "--stop_at_step", "2"]) == 0
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trainer.train", *sets("moved")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    log = (tmp_path / "runs/moved/train.log").read_text()
    assert "world size 2" in log and "micro-batch 4 x 4 accumulation x 1 ranks -> 4 x 2 x 2" in log

    def curve(run: str) -> dict:
        records = [json.loads(line) for line in (tmp_path / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        return {(r["type"], r["step"]): r["loss"] if r["type"] == "train" else r["val_loss"] for r in records}

    straight, moved = curve("straight"), curve("moved")
    assert sorted(straight) == sorted(moved) and len(straight) == 6
    for key, loss in straight.items():
        assert abs(moved[key] - loss) < 2e-5, (key, loss, moved[key])
    state = json.loads((tmp_path / "runs/moved/final/data_state.json").read_text())
    assert (state["world_size"], state["grad_accum"], state["global_batch"], state["next_sample"]) == (2, 2, 16, 64)


def test_a_rank_with_bad_input_exits_with_its_code_not_a_signal(tmp_path):
    """Each rank ends through exit_process: a UserError is exit 1 with its message, never an abort
    in interpreter finalization (SIGABRT) that would hide it."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trainer.train",
               "--model_config", str(REPO / "configs/model_smoke.yaml"), "--train_config", str(REPO / "configs/train_smoke.yaml"),
               "--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", f"train.data_dir={tmp_path / 'no-data'}",
               "--set", "train.run_name=bad", "--set", "train.tokenizer_model=null"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert output.count("no-data/train.bin does not exist") == 2, output[-3000:]  # each rank's one-paragraph error
    assert "trainer/training/loop.py" not in output  # no traceback of the trainer's
    assert "(exitcode: 1)" in output and "SIGABRT" not in output and "terminate called" not in output, output[-3000:]
