"""Tokenize the data mix into ``train.bin`` and ``val.bin``: uint16 memmaps of exactly the
requested token counts, and ``data_meta.json`` written last. ``val_<source>.bin`` holds each
source's part of val.bin apart (C4 and Wikipedia each on their own), so training and
trainer.eval report the loss on each source as well as on the mix.

    python -m trainer.data --data_config configs/data_c4_wiki.yaml \
        --tokenizer_model tokenizer/spm.model --output_dir data --train_tokens N --val_tokens M

Documents stream from the sources (``trainer.corpus.mix``), are tokenized in worker processes
(``trainer.corpus.encode_pool``, all cores by default), EOS goes after every document, and the ids
are appended in chunks to ``train.bin.tmp``/``val.bin.tmp``: memory stays bounded whatever the
token budget. Every chunk ends with a resume point (``data_build_state.json``: the mix's
position and the byte counts written), so a run that was interrupted (Ctrl-C, kill, a lost
box) resumes there when started again with the same inputs, or starts over cleanly if they
changed. Only a finished build renames the ``.tmp`` files and then writes the meta, so a
half-written file is never taken for a finished one. The last document of each split is cut
to hit the count exactly. If the outputs already match the same inputs, it prints
"up to date" and exits 0 at once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from runcontract.atomic import atomic_write_json
from trainer.cli_args import add_config_args, add_deprecated_alias, parse_configs
from runcontract.config import TOKEN_DTYPE, DataMixConfig
from runcontract.errors import UserError, cli_main
from runcontract.manifest import sha256_file
from runcontract.run_folder import DATA_META_FILE
from trainer.corpus.prepared_files import TOKEN_BYTES, open_tokens, read_meta
from trainer.corpus.sources import HubUnavailable
from trainer.corpus.spm_tokenizer import load_tokenizer, tokenizer_info

STATE_NAME = "data_build_state.json"
SPLITS = ("train", "val")
CHUNK_BYTES = 1 << 20  # text per chunk handed to a worker: big enough to amortise the hand-off
CHUNK_DOCS = 2048


def val_source_file(source_name: str) -> str:
    """The file holding one source's validation tokens (its part of val.bin, in order)."""
    return f"val_{source_name}.bin"


def fingerprint(data_config: DataMixConfig, tokenizer_sha256: str, train_tokens: int, val_tokens: int) -> dict:
    """What makes two builds the same: equal fingerprints, equal bytes."""
    return {"data_config": data_config.to_dict(), "tokenizer_sha256": tokenizer_sha256, "train_tokens": train_tokens, "val_tokens": val_tokens, "dtype": TOKEN_DTYPE}


def is_up_to_date(out_dir: str | os.PathLike, data_config: DataMixConfig, tokenizer_model: str | os.PathLike, train_tokens: int, val_tokens: int) -> bool:
    """True if ``out_dir`` holds finished memmaps built from exactly these inputs (the meta
    matches and both files have the recorded size; no hashing of the big files)."""
    meta = read_meta(Path(out_dir) / DATA_META_FILE)
    if meta is None or not Path(tokenizer_model).is_file():
        return False
    expected = fingerprint(data_config, sha256_file(tokenizer_model), train_tokens, val_tokens)
    if {key: meta.get(key) for key in expected} != expected:
        return False
    files = [(f"{split}.bin", count) for split, count in (("train", train_tokens), ("val", val_tokens))]
    if not isinstance(meta.get("val_sources"), list):  # built before the per-source split
        return False
    files += [(entry["file"], entry["tokens"]) for entry in meta["val_sources"]]
    for name, count in files:
        path = Path(out_dir) / name
        if not path.is_file() or path.stat().st_size != count * TOKEN_BYTES:
            return False
    return True


def _empty_counts(data_config: DataMixConfig) -> list[dict]:
    return [
        {"name": s.name, "type": s.type, "path": s.path, "config": s.config, "split": s.split, "weight": s.weight,
         "documents": 0, "bytes": 0, "tokens": 0, "train_tokens": 0, "val_tokens": 0}
        for s in data_config.sources
    ]


class _Build:
    """One run of the build: the temporary files, the counters and the resume point."""

    def __init__(self, out_dir: Path, fp: dict, data_config: DataMixConfig):
        self.out_dir = out_dir
        self.fp = fp
        self.targets = {"train": fp["train_tokens"], "val": fp["val_tokens"]}
        self.written = {"train": 0, "val": 0}
        self.sources = _empty_counts(data_config)
        self.mix_state: Optional[dict] = None
        self.files: dict = {}
        self.source_files: dict = {}  # source index -> its val_<name>.bin.tmp

    def tmp_path(self, split: str) -> Path:
        return self.out_dir / f"{split}.bin.tmp"

    def source_tmp_path(self, source: int) -> Path:
        return self.out_dir / (val_source_file(self.sources[source]["name"]) + ".tmp")

    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_NAME

    def discard(self) -> None:
        for path in (*(self.tmp_path(s) for s in SPLITS), *(self.source_tmp_path(i) for i in range(len(self.sources))), self.state_path):
            path.unlink(missing_ok=True)

    def open(self) -> bool:
        """Open the temporary files, at the saved resume point if it is valid; True if resumed."""
        resumed = False
        try:
            state = json.loads(self.state_path.read_text())
            sizes_ok = all(self.tmp_path(s).is_file() and self.tmp_path(s).stat().st_size >= state["written"][s] * TOKEN_BYTES for s in SPLITS)
            sizes_ok = sizes_ok and all(
                self.source_tmp_path(i).is_file() and self.source_tmp_path(i).stat().st_size >= counts["val_tokens"] * TOKEN_BYTES
                for i, counts in enumerate(state["sources"]))
            if state["fingerprint"] == self.fp and sizes_ok:
                self.written, self.sources, self.mix_state = dict(state["written"]), state["sources"], state["mix"]
                resumed = True
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not resumed:
            self.discard()
        for split in SPLITS:
            f = open(self.tmp_path(split), "r+b" if resumed else "wb")
            # anything after the resume point was written after it was saved: drop it
            f.truncate(self.written[split] * TOKEN_BYTES)
            f.seek(0, os.SEEK_END)
            self.files[split] = f
        for index, counts in enumerate(self.sources):
            f = open(self.source_tmp_path(index), "r+b" if resumed else "wb")
            f.truncate(counts["val_tokens"] * TOKEN_BYTES)
            f.seek(0, os.SEEK_END)
            self.source_files[index] = f
        return resumed

    def full(self, split: str) -> bool:
        return self.written[split] >= self.targets[split]

    def done(self) -> bool:
        return all(self.full(s) for s in SPLITS)

    def add_chunk(self, docs: list[tuple[int, bool, int]], flat: np.ndarray, lengths: np.ndarray) -> int:
        """Append a tokenized chunk (cutting at the targets); return the tokens written."""
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        source_parts: dict[int, list[np.ndarray]] = {}
        before = sum(self.written.values())
        offset = 0
        for (source, is_val, nbytes), length in zip(docs, lengths.tolist()):
            split = "val" if is_val else "train"
            take = min(length, self.targets[split] - self.written[split])
            if take > 0:
                parts[split].append(flat[offset : offset + take])
                if is_val:
                    source_parts.setdefault(source, []).append(flat[offset : offset + take])
                self.written[split] += take
                counts = self.sources[source]
                counts["documents"] += 1
                counts["bytes"] += nbytes
                counts["tokens"] += take
                counts[f"{split}_tokens"] += take
            offset += length
        for split in SPLITS:
            if parts[split]:
                self.files[split].write(np.concatenate(parts[split]).tobytes())
        for source, pieces in source_parts.items():
            self.source_files[source].write(np.concatenate(pieces).tobytes())
        return sum(self.written.values()) - before

    def save_resume_point(self, mix_state: dict) -> None:
        for f in (*self.files.values(), *self.source_files.values()):
            f.flush()  # the OS has the bytes before the state says they exist
        atomic_write_json(self.state_path, {"fingerprint": self.fp, "written": self.written, "sources": self.sources, "mix": mix_state})

    def close(self) -> None:
        for f in (*self.files.values(), *self.source_files.values()):
            if f.closed:
                continue
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self.files, self.source_files = {}, {}


def _chunks(mix, build: _Build, chunk_bytes: int) -> Iterator[tuple[tuple[list, dict], list[str]]]:
    """Group the mix's documents into chunks; each carries the mix's state after its last doc.

    Documents of a split that is already full are dropped here rather than tokenized: the
    writer would discard them anyway, so the output is the same.
    """
    docs: list[tuple[int, bool, int]] = []
    texts: list[str] = []
    size = 0
    for doc in mix:
        if build.full("val" if doc.is_val else "train"):
            if build.done():
                break
            continue
        docs.append((doc.source, doc.is_val, doc.nbytes))
        texts.append(doc.text)
        size += doc.nbytes
        if size >= chunk_bytes or len(docs) >= CHUNK_DOCS:
            yield (docs, mix.state_dict()), texts
            docs, texts, size = [], [], 0
    if docs:
        yield (docs, mix.state_dict()), texts


def open_mix(data_config: DataMixConfig, tokenizer_model: str | os.PathLike):
    """The mix as the build reads it: shares measured with the tokenizer the data is built with."""
    from trainer.corpus.mix import MixedStream

    processor = load_tokenizer(tokenizer_model, "train it first with python -m trainer.tokenizer")
    return MixedStream(data_config, count_tokens=lambda text: len(processor.encode(text)) + 1)  # + EOS, as written


def _with_rerun_note(exc: HubUnavailable, build: "_Build") -> HubUnavailable:
    """The hub's failure, saying what running again will do: the saved resume point decides."""
    try:
        state = json.loads(build.state_path.read_text())
        written = state["written"] if state["fingerprint"] == build.fp else None
    except (OSError, ValueError, KeyError, TypeError):
        written = None
    if written:
        note = (f"Running it again resumes where it stopped ({written['train']} train and {written['val']} val tokens "
                "are kept).")
    else:
        note = "Nothing was written yet; running it again starts the build."
    return HubUnavailable(f"{exc} {note}")


class _Shortfall(UserError):
    """The sources ran out before the requested token counts."""


def _shortfall_error(build: _Build, data_config: DataMixConfig) -> UserError:
    held = ", ".join(f"{s['name']}: {s['documents']} documents" for s in build.sources)
    return _Shortfall(
        f"the data mix ran out of documents after {build.written['train']} train and {build.written['val']} val tokens, "
        f"but --train_tokens {build.targets['train']} and --val_tokens {build.targets['val']} were asked for ({held}; every "
        f"{data_config.val_every}th document goes to val). Ask for fewer tokens or add sources to the data config."
    )


def build_memmaps(
    data_config: DataMixConfig,
    tokenizer_model: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_tokens: int,
    val_tokens: int,
    workers: Optional[int] = None,
    progress: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """Build ``out_dir``/train.bin, val.bin and (last) data_meta.json; return the meta.

    ``workers``: tokenizer processes (None: all cores; 0: in this process, for small builds).
    """
    from trainer.corpus.encode_pool import EncodePool
    from trainer.corpus.progress import progress_bar

    if train_tokens < 1 or val_tokens < 1:
        raise UserError(f"--train_tokens ({train_tokens}) and --val_tokens ({val_tokens}) must both be at least 1.")
    info = tokenizer_info(tokenizer_model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(data_config, info["sha256"], train_tokens, val_tokens)
    # invalidate first: from here until the new meta, the folder reads as unfinished
    (out_dir / DATA_META_FILE).unlink(missing_ok=True)
    started = time.time()
    build = _Build(out_dir, fp, data_config)
    try:
        mix = open_mix(data_config, tokenizer_model)  # opens every source now: a bad one fails before any work
    except HubUnavailable as exc:
        raise _with_rerun_note(exc, build) from None
    resumed = build.open()
    if resumed:
        mix.load_state_dict(build.mix_state)
    total = train_tokens + val_tokens
    try:
        with EncodePool(tokenizer_model, workers) as pool, progress_bar(
            total, "tokenizing", unit="tok", initial=sum(build.written.values()), disable=not progress, unit_scale=True, smoothing=0.1
        ) as bar:
            if resumed:
                bar.write(f"resuming at {build.written['train']} train / {build.written['val']} val tokens", file=sys.stderr)
            for (docs, mix_state), flat, lengths in pool.map(_chunks(mix, build, chunk_bytes)):
                bar.update(build.add_chunk(docs, flat, lengths))
                if build.done():
                    break
                build.save_resume_point(mix_state)
        if not build.done():
            raise _shortfall_error(build, data_config)
        build.close()
    except BaseException as exc:
        build.close()
        # keep the .tmp files and the resume point for the next run (Ctrl-C, a dropped
        # connection); with no resume point yet, or sources too small, there is nothing to keep
        if isinstance(exc, _Shortfall) or not build.state_path.exists():
            build.discard()
        if isinstance(exc, HubUnavailable):
            raise _with_rerun_note(exc, build) from None
        raise
    hashes = {}
    for split in SPLITS:
        final = out_dir / f"{split}.bin"
        os.replace(build.tmp_path(split), final)
        hashes[split] = sha256_file(final)
    val_sources = []
    for index, counts in enumerate(build.sources):
        name = val_source_file(counts["name"])
        os.replace(build.source_tmp_path(index), out_dir / name)
        val_sources.append({"source": counts["name"], "file": name, "tokens": counts["val_tokens"], "sha256": sha256_file(out_dir / name)})
    for counts in build.sources:  # what the weights became on this data (the mix only estimates tokens ahead)
        counts["token_share"] = round(counts["tokens"] / total, 4)
    meta = {
        **fp,
        "vocab_size": info["vocab_size"],
        "bos_id": info["bos_id"],
        "eos_id": info["eos_id"],
        "pad_id": info["pad_id"],
        "unk_id": info["unk_id"],
        "tokenizer_model": str(tokenizer_model),
        "add_bos": False,
        "eos_between_documents": True,
        "sources": build.sources,
        "files": {split: {"name": f"{split}.bin", "tokens": build.targets[split], "sha256": hashes[split]} for split in SPLITS},
        "val_sources": val_sources,
        "seconds": round(time.time() - started, 2),
        "resumed": resumed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out_dir / DATA_META_FILE, meta)
    build.state_path.unlink(missing_ok=True)
    return meta


def load_memmap(out_dir: str | os.PathLike, split: str) -> np.ndarray:
    """Read-only view of a finished split (the meta must exist: unfinished builds have none)."""
    meta = read_meta(Path(out_dir) / DATA_META_FILE)
    if meta is None:
        raise UserError(f"{out_dir} has no {DATA_META_FILE}: the data is missing or unfinished; run python -m trainer.data first.")
    return open_tokens(Path(out_dir) / f"{split}.bin", meta[f"{split}_tokens"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.data", description="Tokenize the data mix into uint16 memmaps (train.bin, val.bin, data_meta.json).")
    add_config_args(parser, data=True, rebuild=True)
    parser.add_argument("--tokenizer_model", default="tokenizer/spm.model", help="SentencePiece model from python -m trainer.tokenizer")
    parser.add_argument("--output_dir", default="data", help="folder for train.bin, val.bin, data_meta.json")
    add_deprecated_alias(parser, "--out_dir", "--output_dir")
    parser.add_argument("--train_tokens", type=int, required=True, help="exact number of train tokens to write")
    parser.add_argument("--val_tokens", type=int, required=True, help="exact number of val tokens to write")
    parser.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores)")
    parser.add_argument("--chunk_bytes", type=int, default=CHUNK_BYTES, help="text per chunk sent to a worker; a resume point follows every chunk")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    args, _, _, data_config = parse_configs(build_parser(), argv)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: use at least 1 (or leave it out for all cores).")
    tokenizer_info(args.tokenizer_model)  # a missing or too-large tokenizer fails before anything else
    if not args.force and is_up_to_date(args.output_dir, data_config, args.tokenizer_model, args.train_tokens, args.val_tokens):
        print(f"data: {args.output_dir} is up to date")
        return
    meta = build_memmaps(data_config, args.tokenizer_model, args.output_dir, args.train_tokens, args.val_tokens, args.workers, chunk_bytes=max(1, args.chunk_bytes))
    per_source = ", ".join(f"{s['name']} {s['tokens']} tokens / {s['documents']} docs" for s in meta["sources"])
    print(f"data: wrote {args.output_dir}/train.bin ({meta['train_tokens']} tokens), val.bin ({meta['val_tokens']} tokens) in {meta['seconds']:.1f} s; {per_source}")
