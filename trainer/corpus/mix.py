"""The data mix: documents of several sources interleaved so that each source's share of the
tokens follows its weight, with a fixed seed, and the train/val split by position in that
interleaved stream.

``mix_by: tokens`` (the default): the next document comes from the source furthest behind its
share of the tokens taken so far (taken / weight smallest), with a random offset of up to one
average document so that the order has no period a val position could line up with. A
document's tokens are estimated as its UTF-8 bytes times its source's tokens per byte, measured
by tokenizing every ``CALIBRATE_EVERY``-th document of the source (the first one included) when
a ``count_tokens`` function is given (the data build); without one (the tokenizer's sample,
before a tokenizer exists) the share is of bytes. The estimate decides only the order; data
build records each source's realized token share in data_meta.json.
``mix_by: documents``: each next document comes from a source drawn with probability
proportional to its weight (longer documents then take more than their weight of the tokens).

An exhausted source drops out and the others share its weight. Documents shorter than
``min_chars`` (or blank) are skipped before they get a position. Every ``val_every``-th
position is validation, all others train, so the split depends only on the config and val
documents can never reach train. The whole stream (random state, counters, each source's
position) can be saved and restored for resuming.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from runcontract.config import DataMixConfig
from trainer.corpus.sources import SourceStream, open_source

CALIBRATE_EVERY = 16  # 1 document in 16 is tokenized in this process to learn each source's tokens per byte


@dataclass
class Document:
    source: int  # index into config.sources
    text: str
    position: int  # 0-based position among kept documents of the interleaved stream
    is_val: bool
    nbytes: int = 0  # UTF-8 bytes of text


def is_val_position(position: int, val_every: int) -> bool:
    return position % val_every == val_every - 1


class MixedStream:
    """Iterate ``Document``s of the whole mix; ``state_dict()`` is the position after the last.

    ``count_tokens``: a text's token count (the tokenizer the data is built with), for
    ``mix_by: tokens``; None mixes by bytes."""

    def __init__(self, config: DataMixConfig, streams: Optional[list[SourceStream]] = None,
                 count_tokens: Optional[Callable[[str], int]] = None):
        self.config = config
        # opening every source up front makes a bad one fail before any work is done
        self.streams = streams if streams is not None else [open_source(s) for s in config.sources]
        self.weights = np.array([s.weight for s in config.sources], dtype=np.float64)
        self.count_tokens = count_tokens
        self.rng = np.random.default_rng(config.seed)
        self.exhausted = [False] * len(self.streams)
        self.position = 0
        n = len(self.streams)
        self.taken = [0.0] * n  # estimated tokens (bytes without count_tokens) of kept documents
        self.kept = [0] * n  # kept documents per source
        self.seen = [0] * n  # documents read per source (skipped ones included): which to calibrate on
        self.sample_tokens = [0] * n
        self.sample_bytes = [0] * n

    def _draw(self) -> int:
        active = [i for i, done in enumerate(self.exhausted) if not done]
        if self.config.mix_by == "tokens":
            offsets = self.rng.random(len(active))
            scores = [(self.taken[i] + u * max(1.0, self.taken[i] / max(1, self.kept[i]))) / self.weights[i]
                      for i, u in zip(active, offsets)]
            return active[int(np.argmin(scores))]
        cumulative = np.cumsum(self.weights[active])
        pick = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return active[min(pick, len(active) - 1)]

    def _estimate(self, index: int, text: str, nbytes: int) -> float:
        if self.count_tokens is None or self.config.mix_by != "tokens":  # documents: the estimate is not used
            return float(nbytes)
        if self.seen[index] % CALIBRATE_EVERY == 0:
            self.sample_tokens[index] += self.count_tokens(text)
            self.sample_bytes[index] += nbytes
        # before the first calibrated bytes (a first document that was empty): a typical 4 bytes a token
        return nbytes * (self.sample_tokens[index] / self.sample_bytes[index] if self.sample_bytes[index] else 0.25)

    def __iter__(self) -> Iterator[Document]:
        iterators = [iter(stream) for stream in self.streams]
        while not all(self.exhausted):
            index = self._draw()
            text = next(iterators[index], None)
            if text is None:
                self.exhausted[index] = True
                continue
            nbytes = len(text.encode("utf-8"))
            estimate = self._estimate(index, text, nbytes)
            self.seen[index] += 1
            if len(text) < self.config.min_chars or not text.strip():
                continue
            self.taken[index] += estimate
            self.kept[index] += 1
            position = self.position
            self.position += 1
            yield Document(index, text, position, is_val_position(position, self.config.val_every), nbytes)

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "rng": self.rng.bit_generator.state,
            "exhausted": list(self.exhausted),
            "sources": [stream.state_dict() for stream in self.streams],
            "taken": list(self.taken), "kept": list(self.kept), "seen": list(self.seen),
            "sample_tokens": list(self.sample_tokens), "sample_bytes": list(self.sample_bytes),
        }

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.rng.bit_generator.state = state["rng"]
        self.exhausted = [bool(x) for x in state["exhausted"]]
        for stream, source_state in zip(self.streams, state["sources"]):
            stream.load_state_dict(source_state)
        self.taken = [float(x) for x in state["taken"]]
        for name in ("kept", "seen", "sample_tokens", "sample_bytes"):
            setattr(self, name, [int(x) for x in state[name]])


def sample_train_texts(config: DataMixConfig, max_bytes: int) -> Iterator[tuple[int, str]]:
    """(source index, text) of train-position documents until ``max_bytes`` of UTF-8 text:
    the tokenizer's training sample, drawn from the same mix the model trains on (by bytes:
    there is no tokenizer yet)."""
    total = 0
    for doc in MixedStream(config):
        if doc.is_val:
            continue
        if total + doc.nbytes > max_bytes:
            remaining = max_bytes - total
            if remaining > 0:
                yield doc.source, doc.text.encode("utf-8")[:remaining].decode("utf-8", "ignore")
            return
        total += doc.nbytes
        yield doc.source, doc.text
