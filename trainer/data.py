"""``python -m trainer.data``: tokenize the data mix into the uint16 memmaps train.bin and val.bin.

The command's code: trainer/corpus/memmaps.py (the corpus room, trainer/corpus/).
"""
from trainer.corpus.memmaps import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    main()
