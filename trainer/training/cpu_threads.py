"""How many CPU threads torch may use, so that training shares a busy machine well.

torch's intra-op pool starts one thread per core, and its OpenMP threads spin while waiting
for each other. On a machine where other processes already keep cores busy, a thread per core
means threads that wait for a core while the others spin: measured on a 2-core machine with
one other CPU-bound process, the quick start's training fell to a fraction of its idle speed
(docs/performance.md). ``train.cpu_threads`` null (auto) takes the cores this process may run
on minus the ones other processes keep busy (sampled from /proc/stat for a moment at start,
while this process is idle: the load average would still count the benchmark that just ran),
at least 1; a number is used as given.
On CUDA the setting only affects the few CPU-side ops.
"""
from __future__ import annotations

import os
import time
from typing import Optional


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all cores from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(sample_s: float = 1.0) -> tuple[float, str]:
    """Cores kept busy by other processes right now, and how that was measured."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(sample_s)
        busy1, total1 = _cpu_times()
        share = (busy1 - busy0) / max(1, total1 - total0)
        return share * (os.cpu_count() or 1), f"{share:.0%} of the machine busy over {sample_s:g} s"
    except (OSError, ValueError, IndexError):
        try:
            load = os.getloadavg()[0]
            return load, f"load average {load:.2f}"
        except OSError:
            return 0.0, "load unknown"


def auto_threads(cores: int, busy: float) -> int:
    """Cores left free by the load, rounded to the nearest whole core, at least 1."""
    return max(1, min(cores, int(cores - busy + 0.5)))


def apply_cpu_threads(requested: Optional[int]) -> str:
    """Set torch's intra-op thread count; returns a line for train.log saying what and why."""
    import torch

    cores = usable_cores()
    if requested is not None:
        threads, why = requested, "train.cpu_threads"
    else:
        busy, how = busy_cores()
        threads, why = auto_threads(cores, busy), f"auto: {cores} usable cores, {how}"
    torch.set_num_threads(threads)
    return f"CPU threads: {threads} ({why})"
