"""``python -m trainer.train``: train the model (one process, or several under accelerate launch).

The command's code: trainer/training/loop.py (the training room, trainer/training/).
"""
from runcontract.errors import cli_main
from trainer.training.loop import build_parser, exit_process, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    exit_process(cli_main(main))
