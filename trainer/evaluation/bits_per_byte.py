"""Bits per byte: validation loss in a unit that does not depend on the tokenizer.

    bits per byte = total nats / ln 2 / total UTF-8 bytes of the evaluated text

Loss per token rewards a tokenizer with long tokens; loss per byte of the text the tokens
decode to does not, so runs with different vocabularies can be compared. The bytes of each
evaluated token come from a table built once per vocabulary: a piece's text with "▁" as a space,
1 for a byte-fallback piece, 0 for control pieces (BOS/EOS/pad). Decoding drops the dummy-prefix
space at the start of each document, so a word-initial token right after EOS counts one byte less.
"""
from __future__ import annotations

import math

import numpy as np

SPACE_MARK = "\u2581"  # SentencePiece's escaped space


def token_byte_lengths(sp) -> np.ndarray:
    """UTF-8 bytes each token id decodes to, for a ``sentencepiece.SentencePieceProcessor``."""
    lengths = np.zeros(sp.get_piece_size(), dtype=np.int64)
    for index in range(sp.get_piece_size()):
        if sp.is_control(index) or sp.is_unused(index):
            continue
        if sp.is_byte(index):
            lengths[index] = 1  # <0xNN>: one raw byte
        elif sp.is_unknown(index):
            lengths[index] = len(sp.decode([index]).encode("utf-8"))
        else:
            lengths[index] = len(sp.id_to_piece(index).replace(SPACE_MARK, " ").encode("utf-8"))
    return lengths


def starts_with_space(sp) -> np.ndarray:
    """True for pieces that begin with the escaped space (word-initial pieces)."""
    return np.array([sp.id_to_piece(i).startswith(SPACE_MARK) and not sp.is_control(i) for i in range(sp.get_piece_size())], dtype=bool)


def count_bytes(targets: np.ndarray, previous: np.ndarray, byte_lengths: np.ndarray, leading_space: np.ndarray,
                eos_id: int | None) -> int:
    """UTF-8 bytes of the text that ``targets`` decode to; ``previous[i]`` is the token before ``targets[i]``."""
    total = int(byte_lengths[targets].sum())
    if eos_id is not None and eos_id >= 0:
        total -= int((leading_space[targets] & (previous == eos_id)).sum())  # the document's dummy prefix
    return total


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    if total_bytes <= 0:
        raise ValueError("bits per byte needs at least one byte of evaluated text")
    return total_nats / math.log(2) / total_bytes
