"""The data mix: documents of several sources interleaved by weight with a fixed seed, and
the train/val split by position in that interleaved stream.

Each next document comes from a source drawn with probability proportional to its weight
(among the sources not yet exhausted; an exhausted source drops out and the others share its
weight). Documents shorter than ``min_chars`` (or blank) are skipped before they get a
position. Every ``val_every``-th position is validation, all others train, so the split
depends only on the config and val documents can never reach train. The whole stream
(random state, each source's position) can be saved and restored for resuming.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from runcontract.config import DataMixConfig
from trainer.sources import SourceStream, open_source


@dataclass
class Document:
    source: int  # index into config.sources
    text: str
    position: int  # 0-based position among kept documents of the interleaved stream
    is_val: bool


def is_val_position(position: int, val_every: int) -> bool:
    return position % val_every == val_every - 1


class MixedStream:
    """Iterate ``Document``s of the whole mix; ``state_dict()`` is the position after the last."""

    def __init__(self, config: DataMixConfig, streams: Optional[list[SourceStream]] = None):
        self.config = config
        # opening every source up front makes a bad one fail before any work is done
        self.streams = streams if streams is not None else [open_source(s) for s in config.sources]
        self.weights = np.array([s.weight for s in config.sources], dtype=np.float64)
        self.rng = np.random.default_rng(config.seed)
        self.exhausted = [False] * len(self.streams)
        self.position = 0

    def _draw(self) -> int:
        active = [i for i, done in enumerate(self.exhausted) if not done]
        cumulative = np.cumsum(self.weights[active])
        pick = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return active[min(pick, len(active) - 1)]

    def __iter__(self) -> Iterator[Document]:
        iterators = [iter(stream) for stream in self.streams]
        while not all(self.exhausted):
            index = self._draw()
            text = next(iterators[index], None)
            if text is None:
                self.exhausted[index] = True
                continue
            if len(text) < self.config.min_chars or not text.strip():
                continue
            position = self.position
            self.position += 1
            yield Document(index, text, position, is_val_position(position, self.config.val_every))

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "rng": self.rng.bit_generator.state,
            "exhausted": list(self.exhausted),
            "sources": [stream.state_dict() for stream in self.streams],
        }

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.rng.bit_generator.state = state["rng"]
        self.exhausted = [bool(x) for x in state["exhausted"]]
        for stream, source_state in zip(self.streams, state["sources"]):
            stream.load_state_dict(source_state)


def sample_train_texts(config: DataMixConfig, max_bytes: int) -> Iterator[tuple[int, str]]:
    """(source index, text) of train-position documents until ``max_bytes`` of UTF-8 text:
    the tokenizer's training sample, drawn from the same mix the model trains on."""
    total = 0
    for doc in MixedStream(config):
        if doc.is_val:
            continue
        size = len(doc.text.encode("utf-8"))
        if total + size > max_bytes:
            remaining = max_bytes - total
            if remaining > 0:
                yield doc.source, doc.text.encode("utf-8")[:remaining].decode("utf-8", "ignore")
            return
        total += size
        yield doc.source, doc.text
