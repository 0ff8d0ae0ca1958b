"""Checkpoints: complete-or-absent folders, manifests checked before use, and a resumed run that
reproduces the uninterrupted one step for step."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trainer.training import checkpoint as ckpt
from runcontract.config import ModelConfig
from runcontract.errors import UserError
from runcontract.run_folder import step_dir_name
from trainer.modeling.transformer import Transformer
from trainer.training.loop import main
from tests.harness.paths import REPO
from tests.harness.trainer_runs import VOCAB, make_data


def run_args(tmp: Path, run: str, steps: int = 10, *extra: str) -> list[str]:
    return [
        "--model_config", str(REPO / "configs/model_smoke.yaml"), "--train_config", str(REPO / "configs/train_smoke.yaml"),
        "--set", f"model.vocab_size={VOCAB}", "--set", "model.d_model=64", "--set", "model.n_layers=2", "--set", "model.ffn_hidden=128",
        "--set", "model.max_seq_len=64", "--set", f"train.runs_dir={tmp / 'runs'}", "--set", f"train.data_dir={tmp / 'data'}",
        "--set", f"train.run_name={run}", "--set", "train.tokenizer_model=null", "--set", "train.seq_len=32",
        "--set", "train.micro_batch_size=4", "--set", "train.tokens_per_step=256",  # 2 accumulation steps
        "--set", f"train.max_steps={steps}", "--set", "train.warmup_steps=3", "--set", "train.log_interval=1",
        "--set", "train.eval_interval=4", "--set", "train.eval_tokens=256", "--set", "train.checkpoint_interval=3",
        "--set", "train.keep_last=5", "--set", "train.checks.overfit_microset.enabled=false", *extra,
    ]


def curve(run_dir: Path) -> dict:
    """step -> train loss, ("eval", step) -> val loss; a re-logged step keeps its last value."""
    points = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        key = record["step"] if record["type"] == "train" else ("eval", record["step"])
        points[key] = record["loss"] if record["type"] == "train" else record["val_loss"]
    return points


def final_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "final" / ckpt.MODEL_FILE))


def test_stopped_and_resumed_run_matches_uninterrupted_run(tmp_path):
    make_data(tmp_path / "data")
    assert main(run_args(tmp_path, "straight")) == 0
    # Stop at step 5 (between the checkpoints at 3 and 6): the resume starts from step 5's stop checkpoint.
    assert main([*run_args(tmp_path, "interrupted"), "--stop_at_step", "5"]) == 0
    stopped = json.loads((tmp_path / "runs/interrupted/status.json").read_text())
    assert stopped["state"] == "stopped" and stopped["step"] == 5
    assert main(run_args(tmp_path, "interrupted")) == 0  # resumes automatically

    straight, resumed = curve(tmp_path / "runs/straight"), curve(tmp_path / "runs/interrupted")
    assert sorted(straight, key=str) == sorted(resumed, key=str)
    assert len([k for k in straight if isinstance(k, int)]) == 10
    for key, loss in straight.items():
        assert resumed[key] == pytest.approx(loss, abs=1e-6), key
    a, b = final_weights(tmp_path / "runs/straight"), final_weights(tmp_path / "runs/interrupted")
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    log = (tmp_path / "runs/interrupted/train.log").read_text()
    assert "resuming from" in log and "step_000005" in log
    state = json.loads((tmp_path / "runs/interrupted/final/trainer_state.json").read_text())
    assert state["step"] == 10 and state["tokens_seen"] == 10 * 256


def test_explicit_resume_from_an_earlier_checkpoint(tmp_path):
    make_data(tmp_path / "data")
    assert main(run_args(tmp_path, "base", 7)) == 0
    earlier = tmp_path / "runs/base/checkpoints/step_000003"
    assert main([*run_args(tmp_path, "base", 7), "--resume", str(earlier)]) == 0
    points = curve(tmp_path / "runs/base")
    assert "resuming from " + str(earlier) in (tmp_path / "runs/base/train.log").read_text()
    assert len([k for k in points if isinstance(k, int)]) == 7
    # The replay of steps 4..7 from step 3 gave the same losses as the first pass.
    first_pass = [json.loads(line) for line in (tmp_path / "runs/base/metrics.jsonl").read_text().splitlines()]
    by_step = {}
    for record in first_pass:
        if record["type"] == "train":
            by_step.setdefault(record["step"], []).append(record["loss"])
    assert all(len(set(v)) == 1 for v in by_step.values()) and len(by_step[5]) == 2


def test_resume_with_another_model_shape_is_refused(tmp_path):
    make_data(tmp_path / "data")
    assert main([*run_args(tmp_path, "shape"), "--stop_at_step", "2"]) == 0
    status_path = tmp_path / "runs/shape/status.json"
    stopped = json.loads(status_path.read_text())
    assert stopped["state"] == "stopped" and stopped["step"] == 2
    with pytest.raises(UserError, match="^resume refused: .*another model shape.*n_layers"):
        main(run_args(tmp_path, "shape", 10, "--set", "model.n_layers=3"))
    # the refusal is the run's state, not only a line on stderr: `launcher status` shows "failed: resume refused: ..."
    refused = json.loads(status_path.read_text())
    assert refused["state"] == refused["phase"] == "failed", refused
    assert refused["progress"].startswith("resume refused: ") and "n_layers" in refused["progress"], refused
    assert refused["step"] == 2 and refused["loss"] == stopped["loss"]  # the last run's figures stay
    assert "error: resume refused: " in (tmp_path / "runs/shape/train.log").read_text()


def test_resume_flag_without_checkpoints_is_an_error(tmp_path):
    make_data(tmp_path / "data")
    with pytest.raises(UserError, match="has no checkpoints"):
        main([*run_args(tmp_path, "none"), "--resume"])


# -- the checkpoint module -------------------------------------------------------------------------
def small_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, ffn_hidden=64, max_seq_len=32))


def state(step: int) -> ckpt.TrainingState:
    return ckpt.TrainingState(step=step, tokens_seen=step * 100, elapsed_s=1.0, cost_spent=0.0, val_loss=None, world_size=1,
                              data_state={"next_step": step}, scheduler_state={"step": step}, rng_states=[{"torch": torch.get_rng_state()}])


def test_checkpoint_layout_and_round_trip(tmp_path):
    model = small_model()
    folder = ckpt.save_checkpoint(tmp_path / "run/checkpoints/step_000012", model, None, state(12), {"model": model.config.to_dict()})
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.yaml", "data_state.json", "manifest.json", "model.safetensors", "model_config.json",
                     "rng_rank0.pt", "scheduler.json", "trainer_state.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["meta"] == {"step": 12, "tokens_seen": 1200, "val_loss": None}
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    assert "lm_head.weight" not in load_file(str(folder / "model.safetensors"))  # tied: stored once
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["d_model"] == 32
    loaded, cfg = ckpt.load_model_from_checkpoint(folder)
    assert cfg == model.config and loaded.lm_head.weight is loaded.embed.weight
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert ckpt.load_model_from_checkpoint(tmp_path / "run")[1] == cfg  # a run folder: its newest checkpoint


def test_incomplete_and_corrupt_checkpoints(tmp_path):
    model = small_model()
    run = tmp_path / "run"
    ckpt.save_checkpoint(run / "checkpoints/step_000002", model, None, state(2), {})
    newer = ckpt.save_checkpoint(run / "checkpoints/step_000004", model, None, state(4), {})
    assert ckpt.latest_checkpoint(run) == newer
    (newer / "manifest.json").unlink()  # as if the writer died before the manifest
    assert ckpt.latest_checkpoint(run) == run / "checkpoints/step_000002"
    with pytest.raises(UserError, match="no manifest.json"):
        ckpt.load_model_from_checkpoint(newer)
    older = run / "checkpoints/step_000002"
    with open(older / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(UserError, match="sha256"):
        ckpt.load_model_from_checkpoint(older)
    with pytest.raises(UserError, match="does not exist"):
        ckpt.load_model_from_checkpoint(tmp_path / "nowhere")


def test_a_failed_write_leaves_no_checkpoint(tmp_path):
    model = small_model()
    target = tmp_path / "run/checkpoints/step_000001"
    with pytest.raises(yaml.representer.RepresenterError):
        ckpt.save_checkpoint(target, model, None, state(1), {"bad": object()})  # fails after the weights were written
    assert not target.exists()
    assert list((tmp_path / "run/checkpoints").iterdir()) == []  # no temporary folder left either


def test_prune_keeps_the_newest(tmp_path):
    model = small_model()
    run = tmp_path / "run"
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(run / "checkpoints" / step_dir_name(step), model, None, state(step), {})
    ckpt.save_checkpoint(run / "final", model, None, state(4), {})
    (run / "checkpoints/.step_000005.abc.tmp").mkdir()  # a write killed half-way
    ckpt.prune_checkpoints(run, keep_last=2)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000003", "step_000004"]
    assert (run / "final/manifest.json").exists()
    assert ckpt.latest_checkpoint(run) == run / "final"  # final wins the tie at step 4


# -- the sample stream across a resume --------------------------------------------------------------
def test_resume_mid_epoch_records_and_keeps_the_stream_position(tmp_path):
    make_data(tmp_path / "data")
    assert main([*run_args(tmp_path, "pos"), "--stop_at_step", "5"]) == 0
    saved = json.loads((tmp_path / "runs/pos/checkpoints/step_000005/data_state.json").read_text())
    assert saved["sampling"] == "epoch" and saved["global_batch"] == 8 and saved["next_sample"] == 40
    assert saved["epoch"] == 0 and saved["position_in_epoch"] == 40 and saved["n_windows"] == (60_000 - 1) // 32
    assert saved["train_tokens"] == 60_000 and saved["seq_len"] == 32
    trainer_state = json.loads((tmp_path / "runs/pos/checkpoints/step_000005/trainer_state.json").read_text())
    assert trainer_state["val_scores"]["mix"]["loss"] == trainer_state["val_loss"]  # the step-4 eval, shown again on resume
    assert ckpt.load_training_state(tmp_path / "runs/pos/checkpoints/step_000005").val_scores == trainer_state["val_scores"]


def test_resume_with_another_micro_batch_keeps_the_global_batches(tmp_path):
    """Micro-batch 8 -> 4 (gradient accumulation 2 -> 4): the same 16 sequences per step, in the same order."""
    make_data(tmp_path / "data")
    bigger = ("--set", "train.tokens_per_step=512")
    assert main(run_args(tmp_path, "straight", 8, *bigger, "--set", "train.micro_batch_size=8")) == 0
    assert main([*run_args(tmp_path, "moved", 8, *bigger, "--set", "train.micro_batch_size=8"), "--stop_at_step", "4"]) == 0
    assert main(run_args(tmp_path, "moved", 8, *bigger, "--set", "train.micro_batch_size=4")) == 0
    log = (tmp_path / "runs/moved/train.log").read_text()
    assert "micro-batch 8 x 2 accumulation x 1 ranks -> 4 x 4 x 1" in log
    straight, moved = curve(tmp_path / "runs/straight"), curve(tmp_path / "runs/moved")
    assert sorted(straight, key=str) == sorted(moved, key=str)
    for key, loss in straight.items():
        assert moved[key] == pytest.approx(loss, abs=2e-5), key
    a, b = final_weights(tmp_path / "runs/straight"), final_weights(tmp_path / "runs/moved")
    assert all(torch.allclose(a[k], b[k], atol=2e-5, rtol=0) for k in a)


def test_a_micro_batch_that_does_not_divide_is_lowered(tmp_path):
    make_data(tmp_path / "data")
    assert main([*run_args(tmp_path, "odd", 6), "--stop_at_step", "2"]) == 0  # 8 sequences per step
    assert main(run_args(tmp_path, "odd", 6, "--set", "train.micro_batch_size=3")) == 0
    log = (tmp_path / "runs/odd/train.log").read_text()
    assert "micro-batch lowered from 3 to 2" in log and "2 x 4 x 1" in log


@pytest.mark.parametrize("change, message", [
    (("--set", "train.seq_len=16"), "seq_len: checkpoint 32, now 16"),
    (("--set", "train.seed=9"), "seed: checkpoint 1337, now 9"),
    (("--set", "train.sampling=random"), "sampling: checkpoint 'epoch', now 'random'"),
])
def test_a_resume_that_would_change_the_stream_is_refused_before_training(tmp_path, change, message):
    make_data(tmp_path / "data")
    assert main([*run_args(tmp_path, "fixed"), "--stop_at_step", "2"]) == 0
    before = (tmp_path / "runs/fixed/metrics.jsonl").read_text()
    with pytest.raises(UserError, match="resume refused: cannot resume with the same sample stream: " + message.replace("(", r"\(")):
        main(run_args(tmp_path, "fixed", 10, *change))
    assert (tmp_path / "runs/fixed/metrics.jsonl").read_text() == before  # nothing trained
    status = json.loads((tmp_path / "runs/fixed/status.json").read_text())
    assert status["state"] == "failed" and status["progress"].startswith("resume refused: cannot resume"), status


def test_keep_stream_rules():
    from trainer.training.stream_resume import keep_stream

    saved = {"global_batch": 16, "next_sample": 32, "seq_len": 32, "seed": 1, "sampling": "epoch", "train_tokens": 100, "train_sha256": "a"}
    current = {k: saved[k] for k in ("seq_len", "seed", "sampling", "train_tokens", "train_sha256")}
    lines = []
    assert keep_stream(saved, current, 8, 1, 2, lines.append) == (8, 2)
    assert keep_stream(saved, current, 8, 2, 2, lines.append) == (8, 1)
    assert keep_stream(saved, current, 16, 4, 2, lines.append) == (4, 1) and "lowered from 16 to 4" in lines[-1]
    with pytest.raises(UserError, match="16 sequences per step, which 3 ranks cannot share"):
        keep_stream(saved, current, 8, 3, 2, lines.append)
    with pytest.raises(UserError, match="train_sha256: checkpoint 'a', now 'b'"):
        keep_stream(saved, {**current, "train_sha256": "b"}, 8, 1, 2, lines.append)
    with pytest.raises(UserError, match="does not belong to it"):
        keep_stream(saved, current, 8, 1, 3, lines.append)


def test_a_fenced_run_writes_no_checkpoint(tmp_path):
    """The agent leaves runs/<run>/fenced when the store's fencing generation moved on (a managed
    run's box declared lost, then back): the trainer then writes no checkpoint at all."""
    make_data(tmp_path / "data")
    run_dir = tmp_path / "runs" / "stale"
    run_dir.mkdir(parents=True)
    (run_dir / "fenced").write_text("stale fencing generation\n")
    main(run_args(tmp_path, "stale", 4))
    assert not list(run_dir.glob("checkpoints/step_*")) and not (run_dir / "final").exists()
    assert "this box is fenced" in (run_dir / "train.log").read_text()
