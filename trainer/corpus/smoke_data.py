"""Small tokenizer and memmaps from the offline python_stdlib corpus, for smoke runs.

``ensure_smoke_data`` is what ``trainer.train --smoke`` calls: it builds (only when they are
missing or were built from other inputs) a tokenizer in ``tokenizer_dir`` and the memmaps in
``data_dir``, in seconds and with no network. The mix is the same as configs/data_offline.yaml,
so the CLI commands on that config see these outputs as up to date. Tokenizing happens in
this process (no workers): a smoke build is small, and workers spawned from a training process
would import torch again.
"""
from __future__ import annotations

from pathlib import Path

from trainer.corpus import memmaps as data, spm_tokenizer as tokenizer
from runcontract.config import DataMixConfig, SourceConfig

SMOKE_MIX = DataMixConfig(sources=[SourceConfig(name="python_stdlib", type="python_stdlib", weight=1.0)], seed=1234, val_every=20)


def smoke_sample_bytes(vocab_size: int) -> int:
    """Enough text for the vocabulary to be learnable, small enough to train in seconds."""
    return max(2_000_000, vocab_size * 200)


def ensure_smoke_data(data_dir: Path, tokenizer_dir: Path, vocab_size: int, train_tokens: int = 200_000, val_tokens: int = 20_000) -> None:
    data_dir, tokenizer_dir = Path(data_dir), Path(tokenizer_dir)
    sample_bytes = smoke_sample_bytes(vocab_size)
    if not tokenizer.is_up_to_date(tokenizer_dir, SMOKE_MIX, vocab_size, sample_bytes):
        tokenizer.train_tokenizer(SMOKE_MIX, tokenizer_dir, vocab_size, sample_bytes)
    model = tokenizer_dir / tokenizer.MODEL_NAME
    if not data.is_up_to_date(data_dir, SMOKE_MIX, model, train_tokens, val_tokens):
        data.build_memmaps(SMOKE_MIX, model, data_dir, train_tokens, val_tokens, workers=0)
