"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

A pure function of the step, so resuming needs only the step number (no scheduler object whose
state could drift from the optimizer's).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CosineSchedule:
    peak_lr: float
    warmup_steps: int
    max_steps: int
    min_lr_ratio: float

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""
        min_lr = self.peak_lr * self.min_lr_ratio
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if step >= self.max_steps:
            return min_lr
        decay_steps = max(1, self.max_steps - self.warmup_steps)
        progress = (step - self.warmup_steps) / decay_steps
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.peak_lr - min_lr)

    def state_dict(self, step: int) -> dict:
        return {"step": step, **asdict(self)}
