"""Benchmark (not a test): tokenization throughput with 1 worker and with all workers on the
same input in one run, and the peak memory of whole data builds of two sizes.

    python bench/tokenize_throughput.py [--tokenizer_model tokenizer/spm.model] [--input_mb 40]
        [--workers N] [--build_tokens 2000000 8000000]

Input: the offline python_stdlib corpus (repeated up to --input_mb, so no download is needed).
Without --tokenizer_model it trains a 32000-token tokenizer on that corpus first. Targets:
speed-up >= 0.85 x workers over one worker; peak memory (the whole process tree) < 2 GB and
independent of --train_tokens.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.corpus.encode_pool import EncodePool, default_workers  # noqa: E402
from runcontract.errors import cli_main  # noqa: E402
from trainer.corpus.stdlib_corpus import iter_stdlib_documents  # noqa: E402

CHUNK_BYTES = 1 << 20


def load_texts(target_bytes: int) -> list[str]:
    docs = [d for d in iter_stdlib_documents() if d.strip()]
    texts, total = [], 0
    for doc in itertools.cycle(docs):
        texts.append(doc)
        total += len(doc.encode("utf-8"))
        if total >= target_bytes:
            return texts
    return texts


def chunked(texts: list[str]) -> list[list[str]]:
    chunks, current, size = [], [], 0
    for text in texts:
        current.append(text)
        size += len(text)
        if size >= CHUNK_BYTES:
            chunks.append(current)
            current, size = [], 0
    return chunks + ([current] if current else [])


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def throughput(model: Path, chunks: list[list[str]], workers: int) -> dict:
    """Tokens/s of encoding every chunk with ``workers`` processes (start-up excluded from the
    wall time), and the CPU seconds the parent and the workers spent (workers' include start-up)."""
    children_before, self_before = _cpu(resource.RUSAGE_CHILDREN), _cpu(resource.RUSAGE_SELF)
    with EncodePool(model, workers) as pool:
        list(pool.map((None, ["warm up"]) for _ in range(workers)))  # every worker has loaded the model
        started = time.perf_counter()
        tokens = sum(len(flat) for _, flat, _ in pool.map((None, c) for c in chunks))
        seconds = time.perf_counter() - started
    # the pool's processes are joined now, so their CPU time is in RUSAGE_CHILDREN
    return {"tokens": tokens, "seconds": seconds, "rate": tokens / seconds,
            "worker_cpu": _cpu(resource.RUSAGE_CHILDREN) - children_before, "parent_cpu": _cpu(resource.RUSAGE_SELF) - self_before}


class PeakTreeMemory:
    """Peak resident memory of this process plus all its children, sampled every 50 ms."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for proc in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def build_peak_memory(model: Path, texts: list[str], train_tokens: int, workers: int, folder: Path) -> tuple[float, float]:
    """(peak GB, seconds) of a real data build over a local jsonl of ``texts``."""
    from runcontract.config import DataMixConfig, SourceConfig
    from trainer.corpus.memmaps import build_memmaps

    corpus = folder / f"corpus-{train_tokens}.jsonl"
    with open(corpus, "w") as f:
        written = 0
        # ~4 bytes a token; three times that so the sources never run short
        for text in itertools.cycle(texts):
            f.write(json.dumps({"text": text}) + "\n")
            written += len(text)
            if written > train_tokens * 12:
                break
    config = DataMixConfig(sources=[SourceConfig(name="bench", type="json", path=str(corpus))], val_every=100)
    started = time.perf_counter()
    with PeakTreeMemory() as memory:
        build_memmaps(config, model, folder / f"data-{train_tokens}", train_tokens, max(1000, train_tokens // 200), workers, progress=False)
    corpus.unlink()
    return memory.peak / 1e9, time.perf_counter() - started


@cli_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer_model", type=Path, default=None, help="SentencePiece model (default: train a 32000-token one on the stdlib corpus)")
    parser.add_argument("--input_mb", type=float, default=40.0, help="megabytes of text to tokenize in each measurement")
    parser.add_argument("--workers", type=int, default=default_workers(), help="the 'all workers' count")
    parser.add_argument("--build_tokens", type=int, nargs="*", default=[2_000_000, 8_000_000], help="train token counts of the memory measurements")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tok-bench-") as tmp:
        folder = Path(tmp)
        model = args.tokenizer_model
        if model is None:
            from trainer.corpus.smoke_data import SMOKE_MIX
            from trainer.corpus.spm_tokenizer import train_tokenizer

            train_tokenizer(SMOKE_MIX, folder / "tok", 32000, 20_000_000)
            model = folder / "tok" / "spm.model"
        texts = load_texts(int(args.input_mb * 1e6))
        chunks = chunked(texts)
        print(f"input: {sum(len(t.encode()) for t in texts) / 1e6:.1f} MB in {len(chunks)} chunks; tokenizer {model}; cores {default_workers()}; "
              f"load average {os.getloadavg()[0]:.1f} (other processes share the cores: the speed-up is only meaningful on an idle machine)")
        runs = {n: throughput(model, chunks, n) for n in (1, args.workers)}
        assert runs[1]["tokens"] == runs[args.workers]["tokens"]
        for n, run in runs.items():
            print(f"{n:>2} worker(s): {run['rate']:12,.0f} tokens/s  ({run['tokens']:,} tokens in {run['seconds']:.2f} s wall; "
                  f"CPU s: workers {run['worker_cpu']:.2f}, parent {run['parent_cpu']:.2f})")
        ratio = runs[args.workers]["rate"] / runs[1]["rate"]
        target = 0.85 * args.workers
        print(f"speed-up (wall)  : {ratio:.2f}x over 1 worker (target >= {target:.2f}x: {'met' if ratio >= target else 'NOT met'})")
        # on a busy machine the wall clock measures the neighbours; the CPU seconds do not: with
        # N idle cores the run takes about max(worker CPU / N, parent CPU)
        one, many = runs[1], runs[args.workers]
        idle_one = max(one["worker_cpu"], one["parent_cpu"])
        idle_many = max(many["worker_cpu"] / args.workers, many["parent_cpu"])
        print(f"speed-up (CPU-time estimate for {args.workers} idle cores): {idle_one / idle_many:.2f}x "
              f"(workers spend {many['worker_cpu'] / one['worker_cpu']:.2f}x the CPU of one worker in total)")
        for train_tokens in args.build_tokens:
            peak, secs = build_peak_memory(model, texts, train_tokens, args.workers, folder)
            print(f"build --train_tokens {train_tokens:>12,}: peak memory {peak:.2f} GB (all processes), {secs:.1f} s, "
                  f"{train_tokens / secs:,.0f} tokens/s end to end ({'under' if peak < 2 else 'OVER'} 2 GB)")


if __name__ == "__main__":
    main()
