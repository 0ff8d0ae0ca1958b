"""``python -m trainer.cost``: project the run's price from the measured speed; refuse a run over budget.

The command's code: trainer/bench/cost.py (the bench room, trainer/bench/).
"""
from trainer.bench.cost import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    main()
