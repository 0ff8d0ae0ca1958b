"""``python -m trainer.tokenizer``: train the SentencePiece BPE tokenizer on a sample of the data mix.

The command's code: trainer/corpus/spm_tokenizer.py (the corpus room, trainer/corpus/).
"""
from trainer.corpus.spm_tokenizer import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    main()
