"""The micro-set overfit check, run before the main loop.

It trains a copy of the model on one tiny fixed batch for a few steps and demands that the
loss falls by a factor. A healthy model memorises a few hundred tokens quickly; if it
cannot, the main run would waste money (lr 0, a detached graph, frozen weights, broken data,
a loss that ignores the targets).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from runcontract.config import OverfitCheckConfig
from runcontract.errors import UserError
from trainer.training.precision import autocast


PROGRESS_REPORTS = 10  # progress lines per overfit check


class CheckFailed(UserError):
    """A pre-flight check found the setup broken."""


@dataclass
class OverfitResult:
    initial_loss: float
    final_loss: float
    steps: int
    lr: float

    @property
    def drop_factor(self) -> float:
        return self.initial_loss / self.final_loss if self.final_loss > 0 else math.inf


_CAUSES = (
    "Likely causes: a learning rate of 0 or far too small/large (train.lr, checks.overfit_microset.lr), "
    "a graph detached from the weights (a .detach()/no_grad in the forward pass, parameters with "
    "requires_grad=False), or data that is not what the model expects (all one token, wrong "
    "vocabulary). Fix the setup, or if this model really learns slower, raise "
    "checks.overfit_microset.steps or lower min_drop_factor."
)


def overfit_microset(
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    check: OverfitCheckConfig,
    lr: float,
    make_optimizer: Callable[[torch.nn.Module, float], torch.optim.Optimizer],
    autocast_dtype=None,
    log: Callable[[str], None] = print,
    progress: Optional[Callable[[int, float], None]] = None,
) -> OverfitResult:
    """Train a deep copy of ``model`` on ``batch`` for ``check.steps`` steps at a constant ``lr``.

    Raises CheckFailed (a UserError) giving the initial and final loss when the loss does not
    fall below initial / ``check.min_drop_factor``. ``model`` itself is left untouched.
    ``progress(steps_done, loss)`` is called about every tenth of the steps (a slow CPU takes
    minutes here, and the user should see it move).
    """
    inputs, targets = batch
    probe = copy.deepcopy(model)
    probe.train()
    optimizer = make_optimizer(probe, lr)
    device = inputs.device
    initial = final = float("nan")
    every = max(1, check.steps // PROGRESS_REPORTS)
    for step in range(check.steps):
        with autocast(device, autocast_dtype):
            _, loss = probe(inputs, targets)
        if not loss.requires_grad:
            raise CheckFailed(
                f"overfit check: the loss ({loss.item():.4f}) does not depend on any trainable weight "
                f"(no gradient can flow: the graph is detached or every parameter is frozen). {_CAUSES}"
            )
        value = loss.item()
        if not math.isfinite(value):
            raise CheckFailed(f"overfit check: the loss became {value} at step {step} (initial {initial:.4f}, lr {lr:g}). {_CAUSES}")
        if step == 0:
            initial = value
        final = value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if all(p.grad is None for p in probe.parameters()):
            raise CheckFailed(f"overfit check: backward produced no gradient for any parameter (initial loss {initial:.4f}). {_CAUSES}")
        optimizer.step()
        if progress is not None and ((step + 1) % every == 0 or step + 1 == check.steps):
            progress(step + 1, value)
    with torch.no_grad(), autocast(device, autocast_dtype):  # the loss after the last update
        final = probe(inputs, targets)[1].item()
    del probe, optimizer
    result = OverfitResult(initial_loss=initial, final_loss=final, steps=check.steps, lr=lr)
    if not math.isfinite(final) or final > initial / check.min_drop_factor:
        raise CheckFailed(
            f"overfit check failed: on one fixed batch of {inputs.shape[0]}x{inputs.shape[1]} tokens the loss "
            f"went from {initial:.4f} to {final:.4f} in {check.steps} steps at lr {lr:g} (a drop of "
            f"{result.drop_factor:.2f}x; at least {check.min_drop_factor:g}x is required). {_CAUSES}"
        )
    log(f"overfit check passed: loss {initial:.4f} -> {final:.4f} ({result.drop_factor:.1f}x) in {check.steps} steps at lr {lr:g}")
    return result
