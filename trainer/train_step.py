"""One optimizer step's gradient work, shared by training and the benchmark.

``accumulate`` runs the micro-batches of a step (forward, backward, loss summed). Each
micro-batch's logits and activations are released by its own backward: the forward's logits
are never bound to a name (only the loss is kept, detached), so nothing of micro-batch ``m``
is alive while ``m + 1`` runs, nor during clipping and the optimizer step. Training
(trainer/train.py) and the benchmark (trainer/benchmark.py) call the same function, so the
peak memory the benchmark measures is the peak training reaches.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from trainer.precision import autocast

Batch = tuple[torch.Tensor, torch.Tensor]


def accumulate(model: torch.nn.Module, get_batch: Callable[[int], Batch], grad_accum: int, device: torch.device,
               amp_dtype: Optional[torch.dtype], backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
               no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               after_forward: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Forward and backward ``grad_accum`` micro-batches; returns the sum of their mean losses.

    ``backward`` (accelerator.backward under DDP), ``no_sync`` (DDP's: gradients are all-reduced
    once, on the last micro-batch) and ``after_forward(micro_batch_size)`` (the benchmark's
    memory guard) are the only differences between callers."""
    loss_sum = torch.zeros((), device=device)
    for micro in range(grad_accum):
        inputs, targets = get_batch(micro)
        sync = contextlib.nullcontext() if micro == grad_accum - 1 else no_sync()
        with sync:
            with autocast(device, amp_dtype):
                loss = model(inputs, targets)[1]  # the logits are not kept: backward frees what they hold
            if after_forward is not None:
                after_forward(inputs.size(0))
            backward(loss / grad_accum)
        loss_sum += loss.detach().float()
        del inputs, targets, loss
    return loss_sum
