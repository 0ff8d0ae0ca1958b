"""``python -m trainer.nccl_probe``: all-reduce across the box's GPUs before training on several.

The command's code: trainer/bench/nccl_probe.py (the bench room, trainer/bench/).
"""
from trainer.bench.nccl_probe import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    from trainer.training.loop import exit_process

    exit_process(main)
