"""Validation loss on fixed windows, and the fixed-prompt sample written at each eval."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from trainer.batches import WindowSampler, validation_offsets
from trainer.config import TrainConfig
from trainer.model import Transformer
from trainer.precision import autocast


def load_tokenizer(train_cfg: TrainConfig, vocab_size: int, log: Callable[[str], None]):
    """The SentencePiece model for samples, or None (with a warning) when unusable."""
    if not train_cfg.tokenizer_model:
        return None
    path = Path(train_cfg.tokenizer_model)
    if not path.is_file():
        log(f"warning: tokenizer {path} not found: fixed_prompt samples are skipped")
        return None
    import sentencepiece as spm

    tokenizer = spm.SentencePieceProcessor(model_file=str(path))
    if tokenizer.get_piece_size() > vocab_size:
        log(f"warning: tokenizer {path} has {tokenizer.get_piece_size()} tokens, more than model.vocab_size {vocab_size}: samples are skipped")
        return None
    return tokenizer


# -- eval and samples ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, val_path: Path, train_cfg: TrainConfig, micro_batch_size: int, accelerator, amp_dtype, vocab_size: int) -> float:
    """Mean loss over fixed validation windows, split across ranks and averaged over all."""
    device = accelerator.device
    sampler = WindowSampler(val_path, train_cfg.seq_len, micro_batch_size, train_cfg.seed, 0, vocab_size, device)
    n_windows = max(1, train_cfg.eval_tokens // train_cfg.seq_len)
    offsets = validation_offsets(sampler.n_tokens, train_cfg.seq_len, n_windows, train_cfg.seed)
    offsets = offsets[accelerator.process_index::accelerator.num_processes]
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss * tokens, tokens
    model.eval()
    for start in range(0, len(offsets), micro_batch_size):
        inputs, targets = sampler.windows(offsets[start:start + micro_batch_size])
        with autocast(device, amp_dtype):
            _, loss = model(inputs, targets)
        sums[0] += loss.double() * targets.numel()
        sums[1] += targets.numel()
    model.train()
    sums = accelerator.reduce(sums, reduction="sum") if accelerator.num_processes > 1 else sums
    return (sums[0] / sums[1]).item()


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
