"""A tiny model's training run on CPU, as the trainer's tests start it: token files, arguments,
the metrics it wrote, the environment of a subprocess."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tests.harness.paths import REPO

VOCAB = 384


def make_data(data_dir: Path, vocab: int = VOCAB, n_train: int = 60_000, n_val: int = 6_000, meta_vocab: int | None = None) -> Path:
    """Token memmaps as the data step writes them: a repeated random 'text' so there is something to learn."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    text = rng.integers(0, vocab, size=997)
    np.resize(text, n_train).astype(np.uint16).tofile(data_dir / "train.bin")
    np.resize(text[::-1], n_val).astype(np.uint16).tofile(data_dir / "val.bin")
    if meta_vocab != 0:
        meta = {"vocab_size": meta_vocab or vocab, "eos_id": 0, "train_tokens": n_train, "val_tokens": n_val, "dtype": "uint16", "tokenizer_sha256": "test"}
        (data_dir / "data_meta.json").write_text(json.dumps(meta))
    return data_dir


def tiny_args(tmp: Path, run: str = "t", *extra: str, steps: int = 6) -> list[str]:
    """A ~0.2M-parameter model, 2 micro-batches of 4 x 32 tokens per step."""
    return [
        "--model_config", str(REPO / "configs/model_smoke.yaml"), "--train_config", str(REPO / "configs/train_smoke.yaml"),
        "--set", f"model.vocab_size={VOCAB}", "--set", "model.d_model=64", "--set", "model.n_layers=2", "--set", "model.n_heads=4",
        "--set", "model.n_kv_heads=2", "--set", "model.ffn_hidden=128", "--set", "model.max_seq_len=64",
        "--set", f"train.runs_dir={tmp / 'runs'}", "--set", f"train.data_dir={tmp / 'data'}", "--set", f"train.run_name={run}",
        "--set", "train.tokenizer_model=null", "--set", "train.seq_len=32", "--set", "train.micro_batch_size=4",
        "--set", "train.tokens_per_step=256", "--set", f"train.max_steps={steps}", "--set", "train.warmup_steps=2",
        "--set", "train.log_interval=1", "--set", "train.eval_interval=3", "--set", "train.eval_tokens=256",
        "--set", "train.checkpoint_interval=2", "--set", "train.keep_last=2", "--set", "train.checks.overfit_microset.steps=15",
        "--set", "train.checks.overfit_microset.seq_len=32", *extra,
    ]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
