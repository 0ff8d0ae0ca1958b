"""Measuring the box before paying for the run (``trainer.benchmark``, ``trainer.cost``, ``trainer.nccl_probe``).

    benchmark.py   real training steps, timed after a warm-up: tokens/s, MFU, memory (throughput.json)
    cost.py        the run's price from that speed, and the budget gate (cost.json)
    nccl_probe.py  can the box's GPUs all-reduce, and how fast (nccl_probe.json)

(The project's own performance benchmarks are the top-level bench/ folder.)
"""
