"""``python -m trainer.benchmark``: measure training throughput and write throughput.json.

The command's code: trainer/bench/benchmark.py (the bench room, trainer/bench/).
"""
from trainer.bench.benchmark import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    from trainer.training.loop import exit_process

    exit_process(main)
