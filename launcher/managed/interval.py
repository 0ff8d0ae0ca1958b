"""A checkpoint interval for interruptible boxes: Young's approximation.

    interval = sqrt(2 x checkpoint_cost x MTBF)

(J. W. Young, "A first order approximation to the optimum checkpoint interval", CACM 17(9),
1974): ``checkpoint_cost`` is the seconds one checkpoint takes (the trainer logs it), ``MTBF``
the mean seconds between interruptions (1 / the interruption rate per second).
"""
from __future__ import annotations

import math
import re
from typing import Optional


def young_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    if checkpoint_s <= 0 or mtbf_s <= 0:
        raise ValueError("checkpoint time and MTBF must be positive")
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def interval_steps(checkpoint_s: float, interruptions_per_hour: float, step_s: float) -> int:
    """train.checkpoint_interval (in steps) for a box interrupted ``interruptions_per_hour`` times an hour."""
    if interruptions_per_hour <= 0 or step_s <= 0:
        raise ValueError("interruption rate and step time must be positive")
    return max(1, round(young_interval_s(checkpoint_s, 3600.0 / interruptions_per_hour) / step_s))


CHECKPOINT_LINE = re.compile(r"checkpoint: \S+ \((?P<seconds>[0-9.]+) s\)")


def measured_checkpoint_s(train_log: str) -> Optional[float]:
    """The mean seconds a checkpoint took, from the trainer's log lines ("... checkpoint: FOLDER (12.3 s)")."""
    seconds = [float(m.group("seconds")) for m in CHECKPOINT_LINE.finditer(train_log)]
    return sum(seconds) / len(seconds) if seconds else None


def suggestion(train_log: str, step_s: Optional[float], interruptions_per_hour: Optional[float], current_steps: int) -> Optional[str]:
    """One line suggesting train.checkpoint_interval, or None until the figures it needs are known."""
    checkpoint_s = measured_checkpoint_s(train_log)
    if not checkpoint_s or not step_s or not interruptions_per_hour:
        return None
    checkpoint_s = max(checkpoint_s, 0.1)
    steps = interval_steps(checkpoint_s, interruptions_per_hour, step_s)
    return (f"checkpoints take {checkpoint_s:.1f} s and boxes are interrupted {interruptions_per_hour:.2f}/h: Young's interval "
            f"is {young_interval_s(checkpoint_s, 3600 / interruptions_per_hour):.0f} s = {steps} steps at {step_s:.2f} s/step "
            f"(train.checkpoint_interval is {current_steps})")
