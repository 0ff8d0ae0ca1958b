"""``python -m trainer.plot``: plot train and validation loss against tokens from metrics.jsonl.

The command's code: trainer/evaluation/loss_plot.py (the evaluation room, trainer/evaluation/).
"""
from trainer.evaluation.loss_plot import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    main()
