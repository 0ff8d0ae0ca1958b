"""The training loop end to end on CPU with a tiny model: outputs, checks, NaN, signals, budget,
bad input, samples, detaching; and its parts (schedule, batch plan, window sampler)."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.training import checkpoint as ckpt
from trainer.training.batches import WindowSampler
from trainer.training.overfit_check import CheckFailed, overfit_microset
from runcontract.config import ModelConfig, OverfitCheckConfig, TrainConfig
from runcontract.errors import UserError
from runcontract.manifest import verify_manifest
from runcontract.run_folder import step_dir_name
from trainer.modeling.transformer import Transformer
from trainer.training.schedule import CosineSchedule
from trainer.training.loop import main, plan_batches, resolve_micro_batch
from tests.harness.trainer_runs import VOCAB, make_data, read_metrics, subprocess_env, tiny_args


def folder_hashes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# -- a whole run ---------------------------------------------------------------------------------
def test_fresh_run_writes_everything(tmp_path):
    make_data(tmp_path / "data")
    assert main(tiny_args(tmp_path, "fresh", steps=7)) == 0
    run = tmp_path / "runs" / "fresh"
    metrics = read_metrics(run)
    train = [m for m in metrics if m["type"] == "train"]
    evals = [m for m in metrics if m["type"] == "eval"]
    assert [m["step"] for m in train] == list(range(1, 8))
    assert [m["step"] for m in evals] == [3, 6, 7]
    for key in ("step", "tokens_seen", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "elapsed_s", "cost_spent"):
        assert key in train[0]
    assert train[-1]["tokens_seen"] == 7 * 256
    assert train[-1]["loss"] < train[0]["loss"]
    assert train[0]["lr"] == pytest.approx(3e-3 / 2) and train[1]["lr"] == pytest.approx(3e-3)  # warmup
    assert all(math.isfinite(e["val_loss"]) for e in evals)
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # redrawn at each eval

    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 7 and status["max_steps"] == 7 and status["pid"] == os.getpid()
    # keep_last 2 of the step checkpoints (2, 4, 6), plus final/
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000004", "step_000006"]
    for folder in [run / "checkpoints/step_000004", run / "checkpoints/step_000006", run / "final"]:
        verify_manifest(folder)
    assert ckpt.latest_checkpoint(run) == run / "final"
    model, cfg = ckpt.load_model_from_checkpoint(run / "final")
    assert cfg.d_model == 64 and isinstance(model, Transformer)
    log = (run / "train.log").read_text()
    assert "overfit check passed" in log and "finished at step 7/7" in log and "2 accumulation steps" in log
    assert "samples are skipped" not in log  # tokenizer_model null: samples off on purpose, no warning
    resolved = (run / "config.yaml").read_text()
    assert "grad_accum: 2" in resolved and "d_model: 64" in resolved

    # Started again with the same config: it resumes from final/ and has nothing left to do.
    before = folder_hashes(run / "final")
    assert main(tiny_args(tmp_path, "fresh", steps=7)) == 0
    assert folder_hashes(run / "final") == before
    assert "nothing to do" in (run / "train.log").read_text()


# -- the overfit check ---------------------------------------------------------------------------
def test_overfit_check_stops_lr_zero(tmp_path):
    make_data(tmp_path / "data")
    with pytest.raises(CheckFailed) as err:
        main(tiny_args(tmp_path, "lr0", "--set", "train.lr=0"))
    message = str(err.value)
    assert "overfit check failed" in message and "lr 0" in message and "learning rate of 0" in message
    assert re.search(r"went from \d+\.\d+ to \d+\.\d+", message)  # initial and final loss are both named
    run = tmp_path / "runs" / "lr0"
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


class DetachedTransformer(Transformer):
    """A broken model: its logits are cut from the graph (a stray .detach())."""

    def forward(self, idx, targets=None):
        logits, _ = super().forward(idx)
        logits = logits.detach()
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1)) if targets is not None else None
        return logits, loss


def _check_inputs(model_cfg_overrides=None):
    from runcontract.config import ModelConfig

    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=128, max_seq_len=64)
    data = torch.randint(0, VOCAB, (2, 33), generator=torch.Generator().manual_seed(0))
    make_opt = lambda m, lr: m.configure_optimizer(0.0, lr, (0.9, 0.95), 1e-8, "cpu")  # noqa: E731
    return cfg, (data[:, :-1], data[:, 1:]), make_opt


def test_overfit_check_stops_a_detached_graph():
    cfg, batch, make_opt = _check_inputs()
    torch.manual_seed(0)
    with pytest.raises(CheckFailed, match="does not depend on any trainable weight"):
        overfit_microset(DetachedTransformer(cfg), batch, OverfitCheckConfig(steps=10), 3e-3, make_opt, log=lambda m: None)


def test_overfit_check_stops_frozen_weights_and_passes_a_healthy_model():
    cfg, batch, make_opt = _check_inputs()
    torch.manual_seed(0)
    model = Transformer(cfg)
    check = OverfitCheckConfig(steps=15, min_drop_factor=2.0)
    result = overfit_microset(model, batch, check, 3e-3, make_opt, log=lambda m: None)
    assert result.final_loss < result.initial_loss / 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the copy trained, not the model
    for param in model.parameters():
        param.requires_grad_(False)
    with pytest.raises(CheckFailed, match="graph is detached or every parameter is frozen"):
        overfit_microset(model, batch, check, 3e-3, make_opt, log=lambda m: None)


# -- NaN -----------------------------------------------------------------------------------------
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    make_data(tmp_path / "data")
    args = tiny_args(tmp_path, "nan", "--set", "train.checks.overfit_microset.enabled=false", steps=8)
    assert main([*args, "--stop_at_step", "2"]) == 0
    run = tmp_path / "runs" / "nan"
    good = run / "checkpoints" / "step_000002"
    before = folder_hashes(run)
    # lr = inf: the first resumed update makes the weights NaN (checkpoint_interval 2 would save them at step 4).
    with pytest.raises(UserError) as err:
        main([*args, "--set", "train.lr=.inf"])
    message = str(err.value)
    assert "non-finite" in message or "nan" in message
    assert str(good) in message and "no checkpoint was written" in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002"]
    assert not (run / "final").exists()
    after = folder_hashes(run)
    assert {k: v for k, v in after.items() if k.startswith("checkpoints/")} == {k: v for k, v in before.items() if k.startswith("checkpoints/")}
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    verify_manifest(good)


# -- stopping: budget, SIGTERM ---------------------------------------------------------------------
def test_budget_reached_stops_with_a_final_checkpoint(tmp_path):
    make_data(tmp_path / "data")
    # $3.6M/hour: one millisecond costs $1, so the first step spends the $0.5 budget.
    args = tiny_args(tmp_path, "money", "--set", "train.budget.hourly_rate=3600000", "--set", "train.budget.max_cost=0.5",
                     "--set", "train.checks.overfit_microset.enabled=false", steps=50)
    assert main(args) == 0
    run = tmp_path / "runs" / "money"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] == 1 and status["cost_spent"] >= 0.5
    assert "budget reached" in (run / "train.log").read_text()
    verify_manifest(run / "final")
    assert read_metrics(run)[0]["cost_spent"] >= 0.5


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path):
    make_data(tmp_path / "data")
    args = tiny_args(tmp_path, "sig", "--set", "train.checks.overfit_microset.enabled=false", "--set", "train.checkpoint_interval=1000", steps=100_000)
    proc = subprocess.Popen([sys.executable, "-m", "trainer.train", *args], env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status_path = tmp_path / "runs" / "sig" / "status.json"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if status_path.exists() and json.loads(status_path.read_text()).get("step", 0) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    status = json.loads(status_path.read_text())
    assert status["state"] == "stopped"
    saved = tmp_path / "runs" / "sig" / "checkpoints" / step_dir_name(status["step"])
    assert verify_manifest(saved).meta["step"] == status["step"]
    assert "SIGTERM received" in (tmp_path / "runs" / "sig" / "train.log").read_text()


# -- bad input -------------------------------------------------------------------------------------
def test_missing_train_bin(tmp_path):
    with pytest.raises(UserError, match="train.bin does not exist"):
        main(tiny_args(tmp_path, "nodata"))
    assert not (tmp_path / "runs").exists()  # nothing written


def test_data_vocab_larger_than_model(tmp_path):
    make_data(tmp_path / "data", meta_vocab=1000)
    with pytest.raises(UserError, match="vocab_size 1000.*model's vocab_size is 384"):
        main(tiny_args(tmp_path, "vocab"))
    assert not (tmp_path / "runs").exists()


def test_token_ids_beyond_vocab_without_metadata(tmp_path):
    make_data(tmp_path / "data", vocab=VOCAB + 50, meta_vocab=0)
    with pytest.raises(UserError, match="largest token id"):
        main(tiny_args(tmp_path, "vocab2"))


def test_sequence_longer_than_context(tmp_path):
    make_data(tmp_path / "data")
    with pytest.raises(UserError, match="does not fit the model's context"):
        main(tiny_args(tmp_path, "ctx", "--set", "train.seq_len=128"))


def test_corrupt_checkpoint_is_refused_and_left_alone(tmp_path):
    make_data(tmp_path / "data")
    args = tiny_args(tmp_path, "corrupt", "--set", "train.checks.overfit_microset.enabled=false", steps=6)
    main([*args, "--stop_at_step", "4"])
    run = tmp_path / "runs" / "corrupt"
    weights = run / "checkpoints" / "step_000004" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes
    weights.write_bytes(bytes(data))
    before = folder_hashes(run)
    with pytest.raises(UserError, match="sha256") as err:
        main(args)
    assert "step_000004" in str(err.value) and str(err.value).startswith("resume refused: ")
    after = folder_hashes(run)
    # the checkpoints and data are left alone; the logs and status.json say the resume was refused
    said = {"train.log", "status.json", ".lock"}
    assert {k: after[k] for k in before if k not in said} == {k: v for k, v in before.items() if k not in said}
    assert set(after) == set(before)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["progress"].startswith("resume refused: ") and status["step"] == 4, status


def test_errors_exit_non_zero_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trainer.train", *tiny_args(tmp_path, "cli")], env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "train.bin does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# -- samples with a real tokenizer ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_model(tmp_path_factory) -> Path:
    import sentencepiece as spm
    import textwrap

    folder = tmp_path_factory.mktemp("tok")
    text = "\n".join(textwrap.dedent(mod.__doc__ or "") for mod in (json, os, subprocess, textwrap, math, signal, time, uuid))
    (folder / "corpus.txt").write_text(text * 3)
    spm.SentencePieceTrainer.train(input=str(folder / "corpus.txt"), model_prefix=str(folder / "spm"), vocab_size=300,
                                   model_type="bpe", minloglevel=2)
    return folder / "spm.model"


def test_fixed_prompt_samples_are_deterministic(tmp_path, tokenizer_model):
    make_data(tmp_path / "data")
    samples = []
    for run in ("s1", "s2"):
        args = tiny_args(tmp_path, run, "--set", f"train.tokenizer_model={tokenizer_model}", "--set", "train.fixed_prompt=The function",
                         "--set", "train.sample_tokens=8", "--set", "train.checks.overfit_microset.enabled=false", steps=3)
        assert main(args) == 0
        samples.append((tmp_path / "runs" / run / "fixed_prompt_samples.txt").read_text())
    assert samples[0] == samples[1]
    assert samples[0].startswith("step 3 (tokens 768, val loss ") and "The function" in samples[0]


def test_missing_tokenizer_skips_samples_with_a_warning(tmp_path):
    make_data(tmp_path / "data")
    args = tiny_args(tmp_path, "notok", "--set", f"train.tokenizer_model={tmp_path / 'absent.model'}", "--set", "train.checks.overfit_microset.enabled=false", steps=3)
    assert main(args) == 0
    run = tmp_path / "runs" / "notok"
    assert "not found: fixed_prompt samples are skipped" in (run / "train.log").read_text()
    assert not (run / "fixed_prompt_samples.txt").exists()


# -- --launch_screen -------------------------------------------------------------------------------
def test_launch_screen_runs_detached(tmp_path):
    from trainer.training.detach import pick_multiplexer, stop_session

    make_data(tmp_path / "data")
    run_name = f"detach-{uuid.uuid4().hex[:8]}"
    args = tiny_args(tmp_path, run_name, "--set", "train.checks.overfit_microset.enabled=false", steps=3)
    result = subprocess.run([sys.executable, "-m", "trainer.train", *args, "--launch_screen"], env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    tool = pick_multiplexer()
    try:
        assert result.returncode == 0, result.stderr
        assert f"session 'llmbox-{run_name}'" in result.stdout and "attach:" in result.stdout
        status_path = tmp_path / "runs" / run_name / "status.json"
        deadline = time.time() + 120
        while time.time() < deadline and not (status_path.exists() and json.loads(status_path.read_text())["state"] == "finished"):
            time.sleep(0.5)
        status = json.loads(status_path.read_text())
        assert status["state"] == "finished" and status["pid"] != os.getpid()
        # A second launch of the same run is refused while its session exists.
        again = subprocess.run([sys.executable, "-m", "trainer.train", *args, "--launch_screen"], env=subprocess_env(),
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already exists" in again.stderr
    finally:
        stop_session(f"llmbox-{run_name}", tool)


# -- parts -----------------------------------------------------------------------------------------
def test_schedule_warmup_cosine_floor():
    schedule = CosineSchedule(peak_lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert schedule.lr_at(0) == pytest.approx(0.1) and schedule.lr_at(9) == pytest.approx(1.0)
    assert schedule.lr_at(10) == pytest.approx(1.0)
    assert schedule.lr_at(60) == pytest.approx(0.55)  # halfway down the cosine
    assert schedule.lr_at(110) == pytest.approx(0.1) and schedule.lr_at(500) == pytest.approx(0.1)
    lrs = [schedule.lr_at(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_batch_plan_and_micro_batch_source(tmp_path):
    cfg = TrainConfig(seq_len=1024, tokens_per_step=524288, target_tokens=2_000_000_000)
    plan = plan_batches(cfg, micro_batch_size=16, world_size=2)
    assert plan.grad_accum == 16 and plan.tokens_per_step == 524288 and plan.max_steps == math.ceil(2e9 / 524288)
    assert plan_batches(cfg.model_copy(update={"max_steps": 10}), 16, 1).max_steps == 10
    assert plan_batches(cfg.model_copy(update={"tokens_per_step": 100}), 16, 1).grad_accum == 1  # at least one micro-batch
    assert resolve_micro_batch(cfg, tmp_path) == (8, "default (no throughput.json)")
    (tmp_path / "throughput.json").write_text(json.dumps({"micro_batch_size": 24, "tokens_per_sec": 1.0}))
    assert resolve_micro_batch(cfg, tmp_path)[0] == 24
    assert resolve_micro_batch(cfg.model_copy(update={"micro_batch_size": 4}), tmp_path)[0] == 4


def test_window_sampler_reproducible_per_rank(tmp_path):
    data = make_data(tmp_path / "data")
    make = lambda rank: WindowSampler(data / "train.bin", 32, 4, seed=5, rank=rank, vocab_size=VOCAB, device=torch.device("cpu"))  # noqa: E731
    x0, y0 = make(0).get(3, 1)
    assert torch.equal(x0, make(0).get(3, 1)[0])
    assert not torch.equal(x0, make(1).get(3, 1)[0]) and not torch.equal(x0, make(0).get(4, 1)[0])
    assert torch.equal(x0[:, 1:], y0[:, :-1]) and x0.dtype == torch.long and x0.shape == (4, 32)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_window_sampler_keeps_resident_memory_flat(tmp_path):
    path = tmp_path / "big.bin"
    np.zeros(64 * 1024 * 1024 // 2, dtype=np.uint16).tofile(path)  # 64 MiB of tokens
    sampler = WindowSampler(path, 256, 16, seed=0, rank=0, vocab_size=VOCAB, device=torch.device("cpu"))
    sampler.get(0, 0)
    start = _rss_kib()
    for step in range(1500):  # touches ~1500 * 16 random pages: ~90 MiB if they stayed mapped
        sampler.get(step, 0)
    assert _rss_kib() - start < 24 * 1024


@pytest.mark.slow
def test_compiled_run_matches_eager(tmp_path):
    """torch.compile (inductor on CPU) trains to the same losses as eager mode (~20-60 s cold)."""
    make_data(tmp_path / "data")
    losses = {}
    for run, compiled in (("eager", "false"), ("compiled", "true")):
        args = tiny_args(tmp_path, run, "--set", f"train.compile={compiled}", "--set", "train.checks.overfit_microset.enabled=false", steps=3)
        assert main(args) == 0
        losses[run] = [m["loss"] for m in read_metrics(tmp_path / "runs" / run) if m["type"] == "train"]
    assert losses["compiled"] == pytest.approx(losses["eager"], abs=1e-4)
    assert "compiling the model" in (tmp_path / "runs/compiled/train.log").read_text()
    verify_manifest(tmp_path / "runs/compiled/final")


def test_smoke_mode_builds_its_data_and_exercises_everything(tmp_path):
    """`--smoke` in an empty folder: the data helper builds a tiny dataset and tokenizer, then the
    check, eval, sample and checkpoints all run (shortened to 12 steps here)."""
    result = subprocess.run(
        [sys.executable, "-m", "trainer.train", "--smoke", "--set", "train.max_steps=12", "--set", "train.eval_interval=6",
         "--set", "train.checkpoint_interval=6", "--set", "train.log_interval=6"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "data/train.bin").exists() and (tmp_path / "tokenizer/spm.model").exists()
    run = tmp_path / "runs/smoke"
    log = (run / "train.log").read_text()
    assert "overfit check passed" in log and "eval step 12" in log and "finished at step 12/12" in log
    assert (run / "fixed_prompt_samples.txt").read_text().count("The function returns") == 2
    verify_manifest(run / "checkpoints/step_000006")
    verify_manifest(run / "final")


@pytest.mark.parametrize("tool", ["screen", "tmux"])
def test_detach_with_each_multiplexer(tmp_path, tool):
    """launch_detached runs the command in a detached session of either tool (screen is the fallback)."""
    import shutil

    from trainer.training.detach import launch_detached, stop_session

    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    session = f"test-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "ran.txt"
    try:
        attach = launch_detached([sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')"], session, tmp_path, tool)
        assert session in attach and ("screen -r" in attach if tool == "screen" else "tmux attach" in attach)
        deadline = time.time() + 20
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert marker.read_text() == "ok"
        with pytest.raises(UserError, match="already exists"):
            launch_detached([sys.executable, "-c", "pass"], session, tmp_path, tool)
    finally:
        stop_session(session, tool)


# -- epoch sampling, the shared training step --------------------------------------------------
def batches_for(path: Path, micro: int, accum: int, world: int, rank: int, sampling: str = "epoch"):
    from trainer.training.batches import TrainBatches

    return TrainBatches(path, 32, micro, accum, world, rank, seed=7, vocab_size=65535, device=torch.device("cpu"), sampling=sampling)


def step_starts(path: Path, step: int, micro: int, accum: int, world: int) -> list[int]:
    """The window starts of one optimizer step, over all ranks and micro-batches, in rank order."""
    return [int(s) for rank in range(world) for m in range(accum) for s in batches_for(path, micro, accum, world, rank).starts(step, m)]


def test_one_epoch_uses_every_window_exactly_once_across_ranks(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(64 * 32 + 1, dtype=np.uint16).tofile(path)  # 64 windows of 33 tokens (neighbours share one)
    windows = np.arange(64) * 32
    for epoch in range(2):
        seen = [s for step in range(epoch * 8, epoch * 8 + 8) for s in step_starts(path, step, micro=2, accum=2, world=2)]
        assert sorted(seen) == windows.tolist(), f"epoch {epoch} did not use every window exactly once"
        ranks = [{int(s) for step in range(epoch * 8, epoch * 8 + 8) for m in range(2) for s in batches_for(path, 2, 2, 2, r).starts(step, m)} for r in range(2)]
        assert not ranks[0] & ranks[1] and len(ranks[0]) == len(ranks[1]) == 32  # disjoint halves
    first, second = (step_starts(path, s, 2, 2, 2) for s in (0, 8))
    assert first != second  # each epoch has its own permutation
    assert batches_for(path, 2, 2, 2, 0).epoch(12) == 1.5
    x, y = batches_for(path, 2, 2, 2, 1).get(3, 1)
    assert torch.equal(x[:, 1:], y[:, :-1]) and (x[:, 0] % 32 == 0).all()  # windows begin on a window boundary


def test_the_stream_does_not_depend_on_micro_batch_or_ranks(tmp_path):
    """Same global batches in the same order whatever the layout (8 sequences per step)."""
    path = tmp_path / "train.bin"
    np.arange(50 * 32 + 20, dtype=np.uint16).tofile(path)  # 50 windows: steps straddle epochs
    for sampling in ("epoch", "random"):
        layouts = [(8, 1, 1), (4, 2, 1), (2, 4, 1), (4, 1, 2), (1, 2, 4)]
        for step in (0, 5, 6, 13):
            got = [[int(s) for r in range(w) for m in range(a) for s in batches_for(path, mb, a, w, r, sampling).starts(step, m)] for mb, a, w in layouts]
            assert all(g == got[0] for g in got), (sampling, step)
    # step 6 holds samples 48..55: the last two windows of epoch 0, then six of epoch 1
    straddle = step_starts(path, 6, 8, 1, 1)
    assert len(set(straddle[:2]) | set(straddle[2:])) == 8


def test_random_sampling_draws_with_replacement(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(64 * 32 + 1, dtype=np.uint16).tofile(path)
    drawn = [s for step in range(8) for s in step_starts_random(path, step)]
    assert len(set(drawn)) < 64 and any(s % 32 for s in drawn)  # repeats and windows at any offset


def step_starts_random(path: Path, step: int) -> list[int]:
    return [int(s) for m in range(2) for s in batches_for(path, 4, 2, 1, 0, "random").starts(step, m)]


def test_no_micro_batch_logits_outlive_their_backward():
    """The shared step (training and benchmark) keeps nothing of micro-batch m while m + 1 runs
    or after the last backward (clipping and the optimizer step come after it)."""
    import weakref

    from trainer.training.step import accumulate

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, ffn_hidden=64, max_seq_len=32))
    alive = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, inputs, targets):
            logits, loss = self.inner(inputs, targets)
            alive.append(weakref.ref(logits))
            return logits, loss

    data = torch.randint(0, VOCAB, (3, 4, 17))

    def get_batch(micro):
        assert all(ref() is None for ref in alive), f"logits of an earlier micro-batch are alive at micro-batch {micro}"
        return data[micro, :, :-1], data[micro, :, 1:]

    loss_sum = accumulate(Probe(), get_batch, 3, torch.device("cpu"), None)
    assert len(alive) == 3 and all(ref() is None for ref in alive), "the last micro-batch's logits outlived its backward"
    assert loss_sum.requires_grad is False and all(p.grad is not None for p in model.parameters())


# -- validation per source -----------------------------------------------------------------------
def test_validation_per_source_in_the_log_status_and_eval(tmp_path, tokenizer_model):
    """Data of two sources (named like the real mix): each eval logs loss and bits per byte for the
    mix and for c4 and wikipedia apart; status.json, `launcher status` and eval.json show c4's."""
    import itertools

    from launcher.commands.status import render, summarize
    from runcontract.run_files import StatusFile
    from rich.console import Console

    from runcontract.config import DataMixConfig, SourceConfig
    from trainer.corpus.memmaps import build_memmaps
    from trainer.evaluation.evaluate import evaluate_checkpoint
    from trainer.corpus.stdlib_corpus import iter_stdlib_documents

    text = "".join(itertools.islice(iter_stdlib_documents(), 400))
    docs = [text[i:i + 600] for i in range(0, min(len(text), 600_000), 600)]  # many short documents: both sources reach val
    for name, part in (("c4", docs[0::2]), ("wikipedia", docs[1::2])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    mix = DataMixConfig(sources=[SourceConfig(name="c4", type="json", path=str(tmp_path / "c4.jsonl"), weight=0.8),
                                 SourceConfig(name="wikipedia", type="json", path=str(tmp_path / "wikipedia.jsonl"), weight=0.2)], val_every=4)
    meta = build_memmaps(mix, tokenizer_model, tmp_path / "data", 30_000, 6_000, workers=0, progress=False)
    assert {v["source"] for v in meta["val_sources"]} == {"c4", "wikipedia"} and all(v["tokens"] > 8 * 33 for v in meta["val_sources"]), meta["val_sources"]

    args = tiny_args(tmp_path, "src", "--set", "model.vocab_size=300", "--set", f"train.tokenizer_model={tokenizer_model}", "--set", "train.checks.overfit_microset.enabled=false", steps=3)
    assert main(args) == 0
    run = tmp_path / "runs/src"
    evals = [m for m in read_metrics(run) if m["type"] == "eval"]
    assert set(evals[-1]["val_sources"]) == {"c4", "wikipedia"}
    c4 = evals[-1]["val_sources"]["c4"]
    assert 0 < c4["bpb"] < c4["loss"] and evals[-1]["val_bpb"] > 0  # ~3 bytes a token: fewer bits per byte than nats per token
    assert c4["loss"] != evals[-1]["val_sources"]["wikipedia"]["loss"] != evals[-1]["val_loss"]
    assert re.search(r"eval step 3: val loss \S+ \(\S+ bits/byte\); c4 \S+ \(\S+ bits/byte\); wikipedia ", (run / "train.log").read_text())

    status = json.loads((run / "status.json").read_text())
    assert status["val_sources"]["c4"] == c4 and status["val_bpb"] == evals[-1]["val_bpb"]
    summary = summarize("local", "src", {"source": "box", "status": StatusFile.model_validate(status), "session_alive": False}, None, None)
    console = Console(width=200, record=True)
    console.print(render(summary))
    shown = console.export_text()
    assert f"val loss c4" in shown and f"{c4['loss']:.4f} ({c4['bpb']:.4f} bits/byte)" in shown

    # trainer.eval scores the same windows: its c4 figures are the training's
    result = evaluate_checkpoint(run / "final", tokenizer_model, max_new_tokens=4)
    written = json.loads((run / "final/eval.json").read_text())
    assert set(written["sources"]) == {"c4", "wikipedia"}
    assert written["sources"]["c4"]["val_loss"] == pytest.approx(c4["loss"], rel=1e-5)
    assert written["sources"]["c4"]["bits_per_byte"] == pytest.approx(c4["bpb"], rel=1e-5)
    assert result["val_loss"] == pytest.approx(evals[-1]["val_loss"], rel=1e-5)
