"""Tokenize chunks of documents in worker processes, results in submission order.

Each worker loads the SentencePiece model once and turns a list of texts into one flat uint16
array (every document followed by EOS) plus the per-document lengths. At most a few chunks
per worker are in flight, so memory stays bounded however long the input stream is
(``multiprocessing.Pool.imap`` would read the whole input ahead). A process pool executor, not
``multiprocessing.Pool``: if a worker dies (the OOM killer) it raises instead of waiting
forever. Kept free of config and dataset imports so worker processes start fast.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from runcontract.config import TOKEN_DTYPE
from runcontract.errors import UserError

_processor = None  # the worker process's model


def _load(model_path: str):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=model_path)


def _init_worker(model_path: str) -> None:
    global _processor
    import signal

    # Ctrl-C reaches the whole process group: let the parent alone handle it (and stop us)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _processor = _load(model_path)


def encode_texts(texts: list[str], processor=None) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint16 ids with EOS after each text, int64 length of each text's ids incl. EOS)."""
    processor = processor or _processor
    # one thread per worker: the parallelism is the processes
    ids = processor.encode(texts, num_threads=1)
    eos = (processor.eos_id(),)
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(chain(x, eos) for x in ids), dtype=TOKEN_DTYPE, count=int(lengths.sum()))
    return flat, lengths


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class EncodePool:
    """``with EncodePool(model, workers) as pool: for payload, flat, lengths in pool.map(items)``."""

    def __init__(self, model_path: str | os.PathLike, workers: Optional[int] = None, in_flight_per_worker: int = 2):
        """``workers``: processes (None: all cores); 0 encodes in this process, which suits small
        builds (smoke data) and callers whose main module is slow to import (spawned workers
        import it again)."""
        self.workers = default_workers() if workers is None else max(0, workers)
        self.max_in_flight = max(1, self.workers) * in_flight_per_worker + 1
        self._inline = _load(str(model_path)) if self.workers == 0 else None
        # spawn, not fork: the parent may hold threads (datasets, progress bars) that fork would copy mid-lock
        self._pool = None if self.workers == 0 else ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(str(model_path),))

    def map(self, items: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """Encode ``(payload, texts)`` items; yield ``(payload, flat, lengths)`` in input order."""
        if self._pool is None:
            for payload, texts in items:
                yield (payload, *encode_texts(texts, self._inline))
            return
        try:
            yield from self._map_in_order(items)
        except BrokenProcessPool:
            raise UserError(
                "a tokenizer worker process died (killed, or out of memory?). Run the same command again: "
                "it resumes from the last chunk written; use fewer --workers if memory is short."
            ) from None

    def _map_in_order(self, items: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        pending: deque = deque()
        source = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.max_in_flight:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                payload, texts = item
                pending.append((payload, self._pool.submit(encode_texts, texts)))
            if not pending:
                return
            payload, future = pending.popleft()
            flat, lengths = future.result()
            yield payload, flat, lengths

    def close(self) -> None:
        if self._pool is not None:
            # running chunks finish (a second or so each); queued ones are dropped
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "EncodePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
