"""How several processes (one per GPU, DDP) are started on one box: the ``accelerate launch``
arguments the launcher's train and benchmark stages and ``trainer.nccl_probe`` use. No torch here.

``accelerate launch`` is run as a module (``python -m accelerate.commands.launch``): the same
CLI, independent of PATH. ``--mixed_precision no`` and ``--dynamo_backend no``: precision and
compilation are the train config's business, not accelerate's environment. On a machine without
CUDA, ``ACCELERATE_USE_CPU=1`` in the environment makes the same line start gloo ranks on the
CPU (the tests); ``--cpu`` would silently start one process.
"""
from __future__ import annotations

P2P_OFF = {"NCCL_P2P_DISABLE": "1"}  # the known hang of multi-GPU hosts without working P2P (e.g. several RTX 4090s)


def accelerate_launch_args(num_processes: int, module: str) -> list[str]:
    """The arguments after ``python`` that start ``python -m module`` in ``num_processes`` ranks on this box."""
    return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", module]
