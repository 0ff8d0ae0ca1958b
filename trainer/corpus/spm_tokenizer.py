"""Train the SentencePiece BPE tokenizer on a sample of the data mix.

    python -m trainer.tokenizer --data_config configs/data_c4_wiki.yaml --output_dir tokenizer \
        --vocab_size 32000 --sample_bytes 200000000

Writes ``spm.model``, ``spm.vocab`` and, last, ``tokenizer_meta.json``. The sample is drawn
from the same weighted mix (train positions only) the memmaps are built from, streamed and
capped at ``--sample_bytes``, so memory stays bounded however large the mix is.

Choices, and why:
- byte fallback: no unknown tokens; any byte sequence round-trips.
- digits split into single digits: numbers tokenize consistently.
- ``remove_extra_whitespaces`` off, identity normalisation, whitespace-only pieces allowed:
  indentation and repeated spaces survive, so code and text decode to exactly what went in.
- ``add_dummy_prefix`` off: no space is invented before a text. transformers' Llama tokenizer
  never adds its prefix space to a text that already starts with whitespace while SentencePiece
  always does, so with a dummy prefix the two disagree on such texts; without one they agree on
  every text. ``load_hf_tokenizer`` builds transformers' ``LlamaTokenizer`` (``LlamaTokenizerFast``
  is the same class in transformers 5) from ``spm.model`` with ``add_prefix_space=False`` and
  ``split_special_tokens=True`` (so a literal "<s>" in text is text, as in SentencePiece);
  ``encode(text, add_special_tokens=False)`` then equals ``spm.encode(text)``, and
  ``save_pretrained`` keeps those settings for ``AutoTokenizer``.
- ids: unk 0, bos 1, eos 2, pad 3.
If the outputs already match the same config, vocab size and sample size, it prints
"up to date" and exits 0 without work.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Iterable, Optional

from runcontract.atomic import atomic_write_json
from trainer.cli_args import add_config_args, parse_configs
from runcontract.config import UINT16_MAX_VOCAB, DataMixConfig
from runcontract.errors import UserError, cli_main
from runcontract.manifest import sha256_file
from runcontract.run_folder import TOKENIZER_META_FILE
from trainer.corpus.prepared_files import read_meta

MODEL_NAME = "spm.model"
VOCAB_NAME = "spm.vocab"
SPECIAL_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3}
MIN_VOCAB = 300  # 256 byte pieces + 4 specials + room for characters and merges
MAX_SENTENCE_CHARS = 4000  # longer lines are cut: SentencePiece drops over-long sentences
INPUT_SENTENCE_SIZE = 20_000_000  # cap on sample lines SentencePiece loads (bounds memory)


HF_USAGE = (
    "LlamaTokenizer.from_pretrained(<folder with spm.model copied as tokenizer.model>, add_prefix_space=False, "
    "pad_token='<pad>', split_special_tokens=True); encode(text, add_special_tokens=False) equals spm.encode(text) "
    "(trainer.corpus.spm_tokenizer.load_hf_tokenizer does this)"
)


def trainer_options(vocab_size: int) -> dict:
    """The SentencePiece trainer settings (recorded in the meta)."""
    return {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "byte_fallback": True,
        "split_digits": True,
        "remove_extra_whitespaces": False,
        "normalization_rule_name": "identity",
        "add_dummy_prefix": False,
        "allow_whitespace_only_pieces": True,
        "character_coverage": 0.9995,
        "max_sentence_length": MAX_SENTENCE_CHARS * 4,  # in bytes
        "input_sentence_size": INPUT_SENTENCE_SIZE,
        "shuffle_input_sentence": True,
        **SPECIAL_IDS,
    }


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size > UINT16_MAX_VOCAB:
        raise UserError(
            f"vocab_size {vocab_size} does not fit the uint16 token files (at most {UINT16_MAX_VOCAB}); "
            "choose a smaller --vocab_size (32000 is the default)."
        )
    if vocab_size < MIN_VOCAB:
        raise UserError(f"vocab_size {vocab_size} is too small: byte fallback alone needs 260 ids; use at least {MIN_VOCAB}.")


def _sample_lines(text: str) -> Iterable[str]:
    """SentencePiece reads one sentence per line: split documents on newlines, cut long lines."""
    for line in text.split("\n"):
        if not line.strip():
            continue
        for start in range(0, len(line), MAX_SENTENCE_CHARS):
            yield line[start : start + MAX_SENTENCE_CHARS]


def write_sample(data_config: DataMixConfig, path: Path, sample_bytes: int) -> list[dict]:
    """Write the training sample to ``path``; return per-source documents and bytes."""
    from trainer.corpus.mix import sample_train_texts
    from trainer.corpus.progress import progress_bar

    stats = [{"name": s.name, "type": s.type, "path": s.path, "config": s.config, "weight": s.weight, "documents": 0, "bytes": 0} for s in data_config.sources]
    with open(path, "w", encoding="utf-8") as out, progress_bar(sample_bytes, "tokenizer sample", unit="B", unit_scale=True) as bar:
        for index, text in sample_train_texts(data_config, sample_bytes):
            size = len(text.encode("utf-8"))
            stats[index]["documents"] += 1
            stats[index]["bytes"] += size
            for line in _sample_lines(text):
                out.write(line + "\n")
            bar.update(size)
    if sum(s["bytes"] for s in stats) == 0:
        raise UserError("the data mix yielded no text for the tokenizer sample; check the sources in the data config.")
    return stats


def _train_spm(sample: Path, prefix: Path, vocab_size: int, threads: int) -> None:
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(input=str(sample), model_prefix=str(prefix), num_threads=threads, minloglevel=2, **trainer_options(vocab_size))
    except RuntimeError as exc:
        raise UserError(
            f"SentencePiece could not train a {vocab_size}-token vocabulary on the sample ({str(exc).strip()[:300]}). "
            "Use a smaller --vocab_size or a larger --sample_bytes."
        ) from None


def train_tokenizer(data_config: DataMixConfig, output_dir: str | os.PathLike, vocab_size: int = 32000, sample_bytes: int = 200_000_000, threads: Optional[int] = None) -> dict:
    """Build ``output_dir``/spm.model, spm.vocab and (last) tokenizer_meta.json; return the meta."""
    import sentencepiece as spm

    check_vocab_size(vocab_size)
    if sample_bytes < 1000:
        raise UserError(f"--sample_bytes {sample_bytes} is too small to train a tokenizer; use at least a few megabytes.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # invalidate first: a crash from here on leaves no meta, so nothing is mistaken for finished
    (output_dir / TOKENIZER_META_FILE).unlink(missing_ok=True)
    sample = output_dir / ".sample.txt.tmp"
    prefix = output_dir / ".spm.tmp"
    started = time.time()
    try:
        sources = write_sample(data_config, sample, sample_bytes)
        _train_spm(sample, prefix, vocab_size, threads or os.cpu_count() or 1)
        os.replace(f"{prefix}.model", output_dir / MODEL_NAME)
        os.replace(f"{prefix}.vocab", output_dir / VOCAB_NAME)
    finally:
        for leftover in (sample, Path(f"{prefix}.model"), Path(f"{prefix}.vocab")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    processor = spm.SentencePieceProcessor(model_file=str(output_dir / MODEL_NAME))
    meta = {
        "vocab_size": processor.get_piece_size(),
        **{name: getattr(processor, name)() for name in SPECIAL_IDS},
        "sources": sources,
        "sample_bytes": sample_bytes,
        "trained_bytes": sum(s["bytes"] for s in sources),
        "data_config": data_config.to_dict(),
        "trainer_options": trainer_options(vocab_size),
        "sentencepiece_version": spm.__version__,
        "sha256": sha256_file(output_dir / MODEL_NAME),
        "model_file": MODEL_NAME,
        "seconds": round(time.time() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hf_usage": HF_USAGE,
        "add_bos": False,  # trainer.data puts EOS between documents and no BOS
    }
    atomic_write_json(output_dir / TOKENIZER_META_FILE, meta)
    return meta


def is_up_to_date(output_dir: str | os.PathLike, data_config: DataMixConfig, vocab_size: int, sample_bytes: int) -> bool:
    """True if ``output_dir`` holds a finished tokenizer built from these exact inputs."""
    meta = read_meta(Path(output_dir) / TOKENIZER_META_FILE)
    model = Path(output_dir) / MODEL_NAME
    if not meta or not model.is_file() or not (Path(output_dir) / VOCAB_NAME).is_file():
        return False
    return (
        meta.get("data_config") == data_config.to_dict()
        and meta.get("vocab_size") == vocab_size
        and meta.get("sample_bytes") == sample_bytes
        and meta.get("sha256") == sha256_file(model)
    )


RUN_TOKENIZER_FIX = "pass --tokenizer_model with the tokenizer/spm.model the run was trained with (written by python -m trainer.tokenizer)"


def load_tokenizer(path: str | os.PathLike, fix: str):
    """The SentencePiece model at ``path``; a missing or unreadable one is a UserError ending with ``fix``."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer model {path} does not exist; {fix}.")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        first_line = str(exc).split("\n")[0][:200]
        raise UserError(f"{path} is not a SentencePiece model ({first_line}); {fix}.") from None


def tokenizer_info(model_path: str | os.PathLike) -> dict:
    """Vocab size, special ids and sha256 of a SentencePiece model (checked to fit uint16)."""
    model_path = Path(model_path)
    processor = load_tokenizer(model_path, f"build it with `python -m trainer.tokenizer --output_dir {model_path.parent}`")
    info = {"vocab_size": processor.get_piece_size(), **{name: getattr(processor, name)() for name in SPECIAL_IDS}, "sha256": sha256_file(model_path)}
    if info["vocab_size"] > UINT16_MAX_VOCAB:
        raise UserError(
            f"tokenizer {model_path} has {info['vocab_size']} tokens, more than the {UINT16_MAX_VOCAB} that uint16 token files hold; "
            f"train one with --vocab_size {UINT16_MAX_VOCAB} or less."
        )
    if info["eos_id"] < 0:
        raise UserError(f"tokenizer {model_path} has no end-of-sequence token; train it with python -m trainer.tokenizer (which sets one).")
    return info


def load_hf_tokenizer(model_path: str | os.PathLike):
    """transformers' LlamaTokenizer for ``spm.model``, encoding the same ids as SentencePiece.

    Needs transformers (the trainer extra) and protobuf (the dev extra). Call ``save_pretrained`` on the result to
    ship it next to an exported model.
    """
    import shutil
    import tempfile

    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(model_path, Path(folder) / "tokenizer.model")  # the file name transformers looks for
        return LlamaTokenizer.from_pretrained(folder, add_prefix_space=False, pad_token="<pad>", split_special_tokens=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.tokenizer", description="Train the SentencePiece BPE tokenizer on a sample of the data mix.")
    add_config_args(parser, data=True, rebuild=True)
    parser.add_argument("--output_dir", default="tokenizer", help="folder for spm.model, spm.vocab, tokenizer_meta.json")
    parser.add_argument("--vocab_size", type=int, default=32000, help="vocabulary size (at most 65535: ids are stored as uint16)")
    parser.add_argument("--sample_bytes", type=int, default=200_000_000, help="bytes of text drawn from the mix to train on (bounds time and memory)")
    parser.add_argument("--threads", type=int, default=None, help="SentencePiece trainer threads (default: all cores)")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    args, _, _, data_config = parse_configs(build_parser(), argv)
    check_vocab_size(args.vocab_size)
    if not args.force and is_up_to_date(args.output_dir, data_config, args.vocab_size, args.sample_bytes):
        print(f"tokenizer: {args.output_dir} is up to date")
        return
    meta = train_tokenizer(data_config, args.output_dir, args.vocab_size, args.sample_bytes, args.threads)
    print(
        f"tokenizer: wrote {Path(args.output_dir) / MODEL_NAME} (vocab {meta['vocab_size']}, trained on "
        f"{meta['trained_bytes'] / 1e6:.1f} MB in {meta['seconds']:.1f} s, sha256 {meta['sha256'][:12]})"
    )
