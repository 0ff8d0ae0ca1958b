"""Training and validation batches: random contiguous windows of a flat uint16 token memmap.

The window offsets of micro-batch ``m`` of step ``s`` on rank ``r`` come from a generator seeded
with (seed, r, s, m): the draw is reproducible, different on every rank, and the sampler's
position is just the step, so an exact resume needs nothing else. The memmap is opened again
for each batch (cheap: a mmap call) because a long-lived np.memmap keeps every page it touched
counted as resident memory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from trainer.errors import UserError

TOKEN_DTYPE = np.uint16
_VAL_STREAM = 0x7A1  # seeds the fixed validation windows apart from training ones


def read_data_meta(data_dir: Path) -> Optional[dict]:
    path = data_dir / "data_meta.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); rebuild the data with `python -m trainer.data`.") from None


def _max_token(path: Path, chunk: int = 1 << 26) -> int:
    """Largest token id in a memmap, read in chunks so memory stays flat."""
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
    top = 0
    for start in range(0, len(tokens), chunk):
        top = max(top, int(tokens[start:start + chunk].max()))
    return top


def check_data(data_dir: Path, vocab_size: int, seq_len: int) -> dict:
    """Fail early and clearly on missing or unusable data. Returns facts about it."""
    train, val = data_dir / "train.bin", data_dir / "val.bin"
    for path in (train, val):
        if not path.is_file():
            raise UserError(
                f"{path} does not exist. Build the token memmaps first (`python -m trainer.data`, or "
                f"`launcher run` which does it), point train.data_dir at the folder holding train.bin and "
                f"val.bin, or pass --smoke to build a tiny offline dataset."
            )
        if path.stat().st_size % np.dtype(TOKEN_DTYPE).itemsize:
            raise UserError(f"{path} is {path.stat().st_size} bytes, not a whole number of uint16 tokens; it is truncated or not a token file. Rebuild the data.")
        n_tokens = path.stat().st_size // np.dtype(TOKEN_DTYPE).itemsize
        if n_tokens < seq_len + 1:
            raise UserError(f"{path} holds {n_tokens} tokens, fewer than one training window of train.seq_len + 1 = {seq_len + 1}; use more data or a shorter train.seq_len.")
    meta = read_data_meta(data_dir)
    if meta is not None and "vocab_size" in meta:
        data_vocab = int(meta["vocab_size"])
        source = f"{data_dir / 'data_meta.json'} says vocab_size {data_vocab}"
    else:  # no metadata: look at the tokens themselves (val first, it is small)
        data_vocab = max(_max_token(val), _max_token(train)) + 1
        source = f"the largest token id in {data_dir} is {data_vocab - 1}"
    if data_vocab > vocab_size:
        raise UserError(
            f"{source}, but the model's vocab_size is {vocab_size}: token ids would fall outside the "
            f"embedding. Set model.vocab_size to at least {data_vocab} (the tokenizer's size), or rebuild "
            f"the data with a tokenizer of at most {vocab_size} tokens."
        )
    return {"train_tokens": train.stat().st_size // 2, "val_tokens": val.stat().st_size // 2, "vocab_size": data_vocab}


class WindowSampler:
    """Batches of ``batch_size`` windows of ``seq_len + 1`` tokens -> (inputs, targets)."""

    def __init__(self, path: Path, seq_len: int, batch_size: int, seed: int, rank: int, vocab_size: int, device: torch.device):
        self.path = Path(path)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.vocab_size = vocab_size
        self.device = device
        self.n_tokens = os.path.getsize(self.path) // np.dtype(TOKEN_DTYPE).itemsize

    def offsets(self, step: int, micro: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64([self.seed, self.rank, step, micro]))
        return rng.integers(0, self.n_tokens - self.seq_len, size=self.batch_size)

    def windows(self, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r")  # re-opened: see module doc
        rows = np.stack([tokens[o:o + self.seq_len + 1] for o in offsets]).astype(np.int64)
        del tokens
        if rows.max() >= self.vocab_size:  # cheap guard for data without (or with wrong) metadata
            raise UserError(f"{self.path} holds token id {int(rows.max())}, outside the model's vocab_size {self.vocab_size}; the data was built with another tokenizer. Rebuild it or fix model.vocab_size.")
        batch = torch.from_numpy(rows)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        else:
            batch = batch.to(self.device)
        return batch[:, :-1], batch[:, 1:]

    def get(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.windows(self.offsets(step, micro))

    def state_dict(self, step: int) -> dict:
        return {"next_step": step, "seed": self.seed, "seq_len": self.seq_len, "micro_batch_size": self.batch_size, "path": str(self.path)}


def validation_offsets(n_tokens: int, seq_len: int, n_windows: int, seed: int) -> np.ndarray:
    """The same validation windows at every eval (and on every resume)."""
    rng = np.random.Generator(np.random.PCG64([seed, _VAL_STREAM]))
    return rng.integers(0, n_tokens - seq_len, size=n_windows)
