"""The training step, in one place for ``trainer.train``, ``trainer.benchmark`` and the bench
scripts, so what is measured is what trains (issue 16).

``prepare_model`` applies the throughput levers of ``train.speed`` to a fresh model (loss
implementation, SDPA GQA, parameter dtype); ``compile_model`` wraps it in ``torch.compile`` with
``train.speed.compile_mode`` when ``train.compile`` is on; ``TrainStep`` runs one optimizer
step (forward and backward over the micro-batches, clipping, AdamW) without reading anything
back from the device, and ``StepMonitor`` gathers what the loop must know (loss, gradient
norm, any non-finite value since the last read) into one host read, taken only at log,
eval and checkpoint steps: every ``.item()`` waits for the GPU to drain its queue.

``accumulate`` runs the micro-batches of a step (forward, backward, loss summed). Each
micro-batch's logits and activations are released by its own backward: the forward's logits
are never bound to a name (only the loss is kept, detached), so nothing of micro-batch ``m``
is alive while ``m + 1`` runs, nor during clipping and the optimizer step (issue 15): the
peak memory the benchmark measures is the peak training reaches.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterable, Optional

import torch

from runcontract.config import TrainConfig
from trainer.modeling.linear_cross_entropy import resolve_impl
from trainer.training.precision import autocast

Batch = tuple[torch.Tensor, torch.Tensor]
PARAM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def prepare_model(model, train_cfg: TrainConfig, device: torch.device):
    """Apply ``train.speed`` to a Transformer in place (call after loading weights, before
    building the optimizer: parameters may change dtype). Returns the model."""
    speed = train_cfg.speed
    model.configure_speed(resolve_impl(speed.loss_impl, device.type), speed.loss_chunk_tokens, speed.sdpa_gqa)
    if speed.param_dtype != "fp32":
        model.cast_parameters(PARAM_DTYPES[speed.param_dtype])
    return model


def compile_model(model: torch.nn.Module, train_cfg: TrainConfig) -> torch.nn.Module:
    """``torch.compile(model)`` in the configured mode when train.compile is on, else the model."""
    if not train_cfg.compile:
        return model
    mode = train_cfg.speed.compile_mode
    return torch.compile(model, mode=None if mode == "default" else mode)


def accumulate(model: torch.nn.Module, get_batch: Callable[[int], Batch], grad_accum: int, device: torch.device,
               amp_dtype: Optional[torch.dtype], backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
               no_sync: Optional[Callable[[], ContextManager]] = None,
               after_forward: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Forward and backward ``grad_accum`` micro-batches; returns the sum of their mean losses
    (on the device, detached).

    ``backward`` (accelerator.backward under DDP), ``no_sync`` (DDP's: gradients are all-reduced
    once, on the last micro-batch) and ``after_forward(micro_batch_size)`` (the benchmark's
    memory guard) are the only differences between callers."""
    loss_sum = torch.zeros((), device=device)
    for micro in range(grad_accum):
        inputs, targets = get_batch(micro)
        last = micro == grad_accum - 1
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            with autocast(device, amp_dtype):
                loss = model(inputs, targets)[1]  # the logits are not kept: backward frees what they hold
            if after_forward is not None:
                after_forward(inputs.size(0))
            backward(loss / grad_accum)
        loss_sum += loss.detach().float()
        del inputs, targets, loss
    return loss_sum


@dataclass
class StepResult:
    loss: torch.Tensor  # mean over the micro-batches, float32, on the device
    grad_norm: torch.Tensor  # before clipping, on the device


@dataclass
class TrainStep:
    """One optimizer step over ``grad_accum`` micro-batches; nothing is read back to the host.

    ``backward``, ``no_sync`` and ``clip_grad_norm`` default to plain PyTorch; training passes
    accelerate's (DDP all-reduces once, on the last micro-batch)."""

    model: torch.nn.Module  # possibly compiled
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    grad_clip: float
    backward: Callable[[torch.Tensor], None] = lambda loss: loss.backward()
    no_sync: Optional[Callable[[], ContextManager]] = None
    clip_grad_norm: Callable = torch.nn.utils.clip_grad_norm_
    memory_guard: Optional[Callable[[int], None]] = None  # see trainer.bench.benchmark.MemoryGuard

    def __call__(self, micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], grad_accum: int) -> StepResult:
        batches = iter(micro_batches)
        loss_sum = accumulate(self.model, lambda micro: next(batches), grad_accum, self.device, self.amp_dtype,
                              backward=self.backward, no_sync=self.no_sync, after_forward=self.memory_guard)
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        grad_norm = self.clip_grad_norm(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_sum / grad_accum, grad_norm.detach().float())


@dataclass
class StepMonitor:
    """Device-side bookkeeping between host reads: remembers whether any step's loss or
    gradient norm was non-finite, and reads everything at once when asked."""

    device: torch.device
    last: Optional[StepResult] = None
    _non_finite: Optional[torch.Tensor] = field(default=None, repr=False)

    def add(self, result: StepResult) -> None:
        bad = ~(torch.isfinite(result.loss) & torch.isfinite(result.grad_norm))
        self._non_finite = bad if self._non_finite is None else self._non_finite | bad
        self.last = result

    def read(self, host_flags: list[float], reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, world: int = 1) -> list[float]:
        """[mean loss of the last step, its gradient norm, 1.0 if any step since the last read
        was non-finite, *host_flags summed over ranks]: one collective, one host read."""
        assert self.last is not None, "read() before any step"
        values = torch.stack([
            self.last.loss.double(), self.last.grad_norm.double(), self._non_finite.double(),
            *torch.tensor(host_flags, dtype=torch.float64, device=self.device).unbind(),
        ])
        if reduce is not None and world > 1:
            values = reduce(values)
            values[:2] /= world
        self._non_finite = None
        return values.tolist()
