"""``python -m trainer.eval``: validation loss, perplexity, bits per byte and samples of a checkpoint.

The command's code: trainer/evaluation/evaluate.py (the evaluation room, trainer/evaluation/).
"""
from trainer.evaluation.evaluate import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    main()
