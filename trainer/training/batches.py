"""Training and validation batches: contiguous windows of a flat uint16 token memmap.

Training reads train.bin in epochs (``SampleStream``, as litgpt, llm.c and modded-nanogpt do):
train.bin is cut into non-overlapping windows of ``seq_len + 1`` tokens (neighbours share one
boundary token), and each epoch visits all of them once in a permutation seeded with
(seed, epoch). The windows form one global stream of samples numbered 0, 1, 2, ...; optimizer
step ``s`` takes samples ``[s * B, (s + 1) * B)`` for the global batch of ``B`` sequences,
and ``TrainBatches`` splits them disjointly: rank ``r`` gets the ``r``-th contiguous share,
cut into micro-batches. The stream depends only on (train.bin, seq_len, seed, B), never on the
micro-batch or the number of ranks, so a resume on other hardware sees the same global batches
(trainer/training/stream_resume.py checks that). ``sampling: random`` draws windows with replacement
instead (kept for comparison: bench/recipe_study.py), also keyed by the global sample number.

``WindowSampler`` reads windows (and draws the overfit check's batch). The memmap is opened
again for each batch (cheap: a mmap call) because a long-lived np.memmap keeps every page it
touched counted as resident memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from runcontract.config import TOKEN_DTYPE
from runcontract.errors import UserError
from runcontract.run_folder import DATA_META_FILE
from trainer.corpus.prepared_files import TOKEN_BYTES, open_tokens, read_data_meta, token_count

_RANDOM_STREAM = 0x5A3  # seeds sampling with replacement apart from the epoch permutations
SAMPLING_MODES = ("epoch", "random")


def _max_token(path: Path, chunk: int = 1 << 26) -> int:
    """Largest token id in a memmap, read in chunks so memory stays flat."""
    tokens = open_tokens(path)
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
        if path.stat().st_size % TOKEN_BYTES:
            raise UserError(f"{path} is {path.stat().st_size} bytes, not a whole number of {TOKEN_DTYPE} tokens; it is truncated or not a token file. Rebuild the data.")
        n_tokens = token_count(path)
        if n_tokens < seq_len + 1:
            raise UserError(f"{path} holds {n_tokens} tokens, fewer than one training window of train.seq_len + 1 = {seq_len + 1}; use more data or a shorter train.seq_len.")
    meta = read_data_meta(data_dir)
    if meta is not None and "vocab_size" in meta:
        data_vocab = int(meta["vocab_size"])
        source = f"{data_dir / DATA_META_FILE} says vocab_size {data_vocab}"
    else:  # no metadata: look at the tokens themselves (val first, it is small)
        data_vocab = max(_max_token(val), _max_token(train)) + 1
        source = f"the largest token id in {data_dir} is {data_vocab - 1}"
    if data_vocab > vocab_size:
        raise UserError(
            f"{source}, but the model's vocab_size is {vocab_size}: token ids would fall outside the "
            f"embedding. Set model.vocab_size to at least {data_vocab} (the tokenizer's size), or rebuild "
            f"the data with a tokenizer of at most {vocab_size} tokens."
        )
    return {"train_tokens": token_count(train), "val_tokens": token_count(val), "vocab_size": data_vocab}


class WindowSampler:
    """Batches of ``batch_size`` windows of ``seq_len + 1`` tokens -> (inputs, targets).

    ``windows`` reads given offsets (training and validation); ``get``/``offsets`` draw random
    ones keyed by (seed, rank, step, micro), used only for the overfit check's one batch."""

    def __init__(self, path: Path, seq_len: int, batch_size: int, seed: int, rank: int, vocab_size: int, device: torch.device):
        self.path = Path(path)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.vocab_size = vocab_size
        self.device = device
        self.n_tokens = token_count(self.path)

    def offsets(self, step: int, micro: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64([self.seed, self.rank, step, micro]))
        return rng.integers(0, self.n_tokens - self.seq_len, size=self.batch_size)

    def windows(self, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = open_tokens(self.path)  # re-opened: see module doc
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


# -- validation windows: the in-training eval (trainer/training/val_loss.py) and trainer.eval score these --
def validation_files(data_dir: Path, seq_len: int, warn: Callable[[str], None]) -> list[tuple[str, Path]]:
    """("mix", val.bin) and, when the data has several sources, (source, val_<source>.bin) for
    each source whose split holds a window of ``seq_len + 1`` tokens (``warn`` names the others)."""
    files = [("mix", data_dir / "val.bin")]
    sources = (read_data_meta(data_dir) or {}).get("val_sources") or []
    if len(sources) > 1:  # with one source its split is val.bin itself
        for entry in sources:
            path = data_dir / entry["file"]
            if not path.is_file() or token_count(path) < seq_len + 1:
                warn(f"warning: validation split {path} is missing or shorter than one window: no val loss for {entry['source']}")
                continue
            files.append((entry["source"], path))
    return files


def validation_starts(n_tokens: int, seq_len: int, eval_tokens: int, seed: int,
                      warn: Optional[Callable[[str], None]] = None) -> np.ndarray:
    """Sorted start offsets of non-overlapping validation windows (``seq_len`` inputs + 1 target)
    chosen with ``seed``: the same text at every eval, on every resume, in trainer.eval. Uses every
    window when ``eval_tokens`` asks for more than the file holds (and says so to ``warn``)."""
    n_chunks = (n_tokens - 1) // seq_len
    if n_chunks < 1:
        raise UserError(f"a validation file holds {n_tokens} tokens, fewer than one window of seq_len {seq_len} + 1; pass a smaller --seq_len (train.seq_len when training) or build more validation data.")
    wanted = max(1, -(-eval_tokens // seq_len))
    if wanted > n_chunks and warn is not None:
        warn(f"asked for {eval_tokens} eval tokens; the file has {n_chunks} windows of {seq_len}: using all of them")
    chosen = np.random.default_rng(seed).choice(n_chunks, size=min(wanted, n_chunks), replace=False)
    return np.sort(chosen) * seq_len


class SampleStream:
    """The global order of training windows: sample number -> start offset in train.bin."""

    def __init__(self, n_tokens: int, seq_len: int, seed: int, sampling: str = "epoch"):
        if sampling not in SAMPLING_MODES:
            raise UserError(f"train.sampling is {sampling!r}; use one of {', '.join(SAMPLING_MODES)}.")
        self.n_tokens, self.seq_len, self.seed, self.sampling = n_tokens, seq_len, seed, sampling
        self.n_windows = (n_tokens - 1) // seq_len
        if self.n_windows < 1:
            raise UserError(f"train.bin holds {n_tokens} tokens, fewer than one window of train.seq_len + 1 = {seq_len + 1}; use more data or a shorter train.seq_len.")
        self._cached_epoch, self._permutation = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """Window numbers in the order epoch ``epoch`` visits them (cached: ~16 MB for 2B tokens)."""
        if epoch != self._cached_epoch:
            self._permutation = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.n_windows)
            self._cached_epoch = epoch
        return self._permutation

    def epoch_of(self, sample: int) -> int:
        return sample // self.n_windows

    def starts(self, first: int, count: int) -> np.ndarray:
        """Start offsets of samples ``first .. first + count - 1``."""
        if self.sampling == "random":
            high = self.n_tokens - self.seq_len
            return np.array([np.random.Generator(np.random.PCG64([self.seed, _RANDOM_STREAM, g])).integers(0, high)
                             for g in range(first, first + count)], dtype=np.int64)
        samples = np.arange(first, first + count, dtype=np.int64)
        epochs = samples // self.n_windows
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):  # a batch can straddle two epochs
            here = epochs == epoch
            out[here] = self.permutation(int(epoch))[samples[here] % self.n_windows] * self.seq_len
        return out


class TrainBatches:
    """Micro-batch ``m`` of step ``s`` on this rank, cut from the global sample stream."""

    def __init__(self, path: Path, seq_len: int, micro_batch_size: int, grad_accum: int, world_size: int, rank: int,
                 seed: int, vocab_size: int, device: torch.device, sampling: str = "epoch", train_sha256: Optional[str] = None):
        self.train_sha256 = train_sha256  # from data_meta.json: a resume checks the data is the same
        self.reader = WindowSampler(path, seq_len, micro_batch_size, seed, rank, vocab_size, device)
        self.stream = SampleStream(self.reader.n_tokens, seq_len, seed, sampling)
        self.micro_batch_size, self.grad_accum, self.world_size, self.rank = micro_batch_size, grad_accum, world_size, rank
        self.global_batch = micro_batch_size * grad_accum * world_size  # sequences per optimizer step

    def first_sample(self, step: int, micro: int) -> int:
        per_rank = self.micro_batch_size * self.grad_accum
        return step * self.global_batch + self.rank * per_rank + micro * self.micro_batch_size

    def starts(self, step: int, micro: int) -> np.ndarray:
        return self.stream.starts(self.first_sample(step, micro), self.micro_batch_size)

    def get(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reader.windows(self.starts(step, micro))

    def epoch(self, step: int) -> float:
        """Epochs completed before step ``step`` (fractional)."""
        return step * self.global_batch / self.stream.n_windows

    def state_dict(self, step: int) -> dict:
        """What data_state.json records: the position, and what a resume must find unchanged."""
        sample = step * self.global_batch
        return {
            "sampling": self.stream.sampling, "seed": self.stream.seed, "seq_len": self.stream.seq_len,
            "train_tokens": self.stream.n_tokens, "train_sha256": self.train_sha256, "n_windows": self.stream.n_windows,
            "global_batch": self.global_batch, "next_step": step, "next_sample": sample,
            "epoch": self.stream.epoch_of(sample), "position_in_epoch": sample % self.stream.n_windows,
            "micro_batch_size": self.micro_batch_size, "grad_accum": self.grad_accum, "world_size": self.world_size,
            "path": str(self.reader.path),
        }
