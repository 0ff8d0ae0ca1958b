"""In-training validation: loss and bits per byte on fixed windows of the mix and of each
source, and the fixed-prompt sample written at each eval."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from trainer.training.batches import WindowSampler, validation_files, validation_starts
from trainer.evaluation.bits_per_byte import bits_per_byte, count_bytes, starts_with_space, token_byte_lengths
from runcontract.config import TrainConfig
from trainer.modeling.transformer import Transformer
from trainer.training.precision import autocast
from trainer.corpus.prepared_files import open_tokens, read_data_meta, token_count
from trainer.corpus.spm_tokenizer import load_tokenizer


def sample_tokenizer(train_cfg: TrainConfig, vocab_size: int, log: Callable[[str], None]):
    """The run's SentencePiece model (samples, bits per byte), or None (with a warning) when unusable."""
    if not train_cfg.tokenizer_model:
        return None
    path = Path(train_cfg.tokenizer_model)
    if not path.is_file():
        log(f"warning: tokenizer {path} not found: fixed_prompt samples are skipped")
        return None
    tokenizer = load_tokenizer(path, "set train.tokenizer_model to the tokenizer/spm.model the data was built with")
    if tokenizer.get_piece_size() > vocab_size:
        log(f"warning: tokenizer {path} has {tokenizer.get_piece_size()} tokens, more than model.vocab_size {vocab_size}: samples are skipped")
        return None
    return tokenizer


# -- validation sets ---------------------------------------------------------------------------
@dataclass
class ValidationSet:
    """Fixed windows of one validation file: the mix (val.bin) or one source (val_<name>.bin)."""

    name: str
    path: Path
    starts: np.ndarray
    window_bytes: Optional[np.ndarray]  # UTF-8 bytes each window's targets decode to; None without a tokenizer


def validation_sets(data_dir: Path, train_cfg: TrainConfig, tokenizer, log: Callable[[str], None]) -> list[ValidationSet]:
    """The mix and, when the data has several sources, each source apart (data_meta.json's
    val_sources); bytes per window for bits per byte when ``tokenizer`` (sample_tokenizer's) is given."""
    tables = (token_byte_lengths(tokenizer), starts_with_space(tokenizer)) if tokenizer is not None else None
    eos_id = (read_data_meta(data_dir) or {}).get("eos_id")
    sets = []
    for name, path in validation_files(data_dir, train_cfg.seq_len, log):
        starts = validation_starts(token_count(path), train_cfg.seq_len, train_cfg.eval_tokens, train_cfg.seed)
        window_bytes = None
        if tables is not None:
            tokens = open_tokens(path)
            windows = [np.asarray(tokens[s:s + train_cfg.seq_len + 1], dtype=np.int64) for s in starts]
            del tokens
            if max(int(w.max()) for w in windows) >= len(tables[0]):
                log(f"warning: {path} holds token ids beyond the tokenizer {train_cfg.tokenizer_model}: it was built with another one, no bits per byte")
            else:
                window_bytes = np.array([count_bytes(w[1:], w[:-1], tables[0], tables[1], eos_id) for w in windows])
        sets.append(ValidationSet(name, path, starts, window_bytes))
    return sets


# -- eval and samples ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, val_sets: list[ValidationSet], train_cfg: TrainConfig, micro_batch_size: int, accelerator, amp_dtype,
             vocab_size: int) -> dict[str, dict]:
    """{set name: {"loss", "bpb"}} over each set's fixed windows, split across ranks and summed
    over all; "bpb" (bits per byte) is None without a tokenizer."""
    device = accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes
    sums = torch.zeros(len(val_sets), 3, device=device, dtype=torch.float64)  # loss * tokens, tokens, bytes
    model.eval()
    for index, val_set in enumerate(val_sets):
        reader = WindowSampler(val_set.path, train_cfg.seq_len, micro_batch_size, train_cfg.seed, 0, vocab_size, device)
        mine = np.arange(rank, len(val_set.starts), world)
        for first in range(0, len(mine), micro_batch_size):
            chunk = mine[first:first + micro_batch_size]
            inputs, targets = reader.windows(val_set.starts[chunk])
            with autocast(device, amp_dtype):
                loss = model(inputs, targets)[1]
            sums[index, 0] += loss.double() * targets.numel()
            sums[index, 1] += targets.numel()
            if val_set.window_bytes is not None:
                sums[index, 2] += float(val_set.window_bytes[chunk].sum())
    model.train()
    sums = accelerator.reduce(sums, reduction="sum") if world > 1 else sums
    results = {}
    for index, val_set in enumerate(val_sets):
        nats, tokens, n_bytes = sums[index].tolist()
        bpb = bits_per_byte(nats, int(n_bytes)) if val_set.window_bytes is not None and n_bytes > 0 else None
        results[val_set.name] = {"loss": nats / tokens, "bpb": bpb}
    return results


def format_eval(results: dict[str, dict]) -> str:
    """"val loss 3.2100 (1.0234 bits/byte); c4 3.3000 (1.05 bits/byte); wikipedia ..." for the log."""
    parts = []
    for name, result in results.items():
        label = "val loss" if name == "mix" else name
        parts.append(f"{label} {result['loss']:.4f}" + (f" ({result['bpb']:.4f} bits/byte)" if result["bpb"] is not None else ""))
    return "; ".join(parts)


@torch.no_grad()
def fixed_prompt_sample(raw_model: Transformer, tokenizer, train_cfg: TrainConfig, device, amp_dtype, step: int) -> str:
    """Greedy (temperature 0) or seeded continuation of train.fixed_prompt."""
    ids = tokenizer.encode(train_cfg.fixed_prompt) or [0]
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    generator = None
    if train_cfg.sample_temperature > 0:
        generator = torch.Generator(device=device).manual_seed(train_cfg.seed + step)
    raw_model.eval()
    with autocast(device, amp_dtype):
        out = raw_model.generate(idx, train_cfg.sample_tokens, temperature=train_cfg.sample_temperature, top_k=50, generator=generator)
    raw_model.train()
    return tokenizer.decode(out[0, len(ids):].tolist())
