"""A checkpoint interval for interruptible boxes: Young's approximation.

    interval = sqrt(2 x checkpoint_cost x MTBF)

(J. W. Young, "A first order approximation to the optimum checkpoint interval", CACM 17(9),
1974): ``checkpoint_cost`` is the seconds one checkpoint takes (the trainer logs it), ``MTBF``
the mean seconds between interruptions (1 / the interruption rate per second).
"""
from __future__ import annotations

import math


def young_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    if checkpoint_s <= 0 or mtbf_s <= 0:
        raise ValueError("checkpoint time and MTBF must be positive")
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def interval_steps(checkpoint_s: float, interruptions_per_hour: float, step_s: float) -> int:
    """train.checkpoint_interval (in steps) for a box interrupted ``interruptions_per_hour`` times an hour."""
    if interruptions_per_hour <= 0 or step_s <= 0:
        raise ValueError("interruption rate and step time must be positive")
    return max(1, round(young_interval_s(checkpoint_s, 3600.0 / interruptions_per_hour) / step_s))
