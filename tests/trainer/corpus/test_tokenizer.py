"""The SentencePiece tokenizer: trained from the offline mix, round-trips text and code, encodes
the same ids in transformers, skips work when up to date, refuses what uint16 cannot hold."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sentencepiece as spm

from trainer.corpus import spm_tokenizer as tokenizer
from runcontract.config import DataMixConfig, SourceConfig
from runcontract.manifest import sha256_file
from trainer.corpus.stdlib_corpus import iter_stdlib_documents

OFFLINE_MIX = DataMixConfig(sources=[SourceConfig(name="python_stdlib", type="python_stdlib")], seed=1234, val_every=20)
VOCAB = 1000
SAMPLE_BYTES = 1_500_000

TRICKY_TEXTS = [
    "Hello world",
    "  two  leading spaces\n\tand a tab",
    "def f(x):\n    return x + 12345\n\n\nclass A:  # comment\n        pass\n",
    "ünïcödé, 漢字 and an emoji 😀",
    " leading space",
    "trailing spaces   ",
    "a\n\nb\r\nc",
    "a literal <s> and </s> and <pad> in text",
    "",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.train_tokenizer(OFFLINE_MIX, out, VOCAB, SAMPLE_BYTES)
    return out


@pytest.fixture(scope="module")
def processor(tok_dir) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(tok_dir / "spm.model"))


def test_outputs_and_meta(tok_dir: Path):
    meta = json.loads((tok_dir / "tokenizer_meta.json").read_text())
    assert (tok_dir / "spm.vocab").is_file()
    assert meta["vocab_size"] == VOCAB
    assert (meta["unk_id"], meta["bos_id"], meta["eos_id"], meta["pad_id"]) == (0, 1, 2, 3)
    assert meta["sha256"] == sha256_file(tok_dir / "spm.model")
    assert meta["sentencepiece_version"] == spm.__version__
    assert meta["sources"][0]["name"] == "python_stdlib"
    # the sample is capped and drawn from the mix
    assert 0.9 * SAMPLE_BYTES <= meta["trained_bytes"] <= SAMPLE_BYTES
    assert meta["sources"][0]["bytes"] == meta["trained_bytes"]
    assert not list(tok_dir.glob("*.tmp*")), "temporary files left behind"


def test_text_and_code_round_trip_without_unknown_tokens(processor):
    for text in TRICKY_TEXTS:
        ids = processor.encode(text)
        assert processor.decode(ids) == text, repr(text)
        assert processor.unk_id() not in ids, repr(text)  # byte fallback covers everything


def test_digits_are_split(processor):
    pieces = processor.encode("year 20231101", out_type=str)
    digit_pieces = [p.lstrip("▁") for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces == list("20231101")


def test_whitespace_is_kept(processor):
    # runs of spaces (indentation) must not collapse: the default normaliser would do that
    assert processor.decode(processor.encode("a    b")) == "a    b"
    assert len(processor.encode("x" + " " * 8 + "y")) < len(processor.encode("x y")) + 8


def test_transformers_encodes_the_same_ids(tok_dir, processor, tmp_path):
    from transformers import AutoTokenizer, LlamaTokenizerFast

    hf = tokenizer.load_hf_tokenizer(tok_dir / "spm.model")
    assert isinstance(hf, LlamaTokenizerFast)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (1, 2, 3, 0)
    assert len(hf) == VOCAB
    docs = [doc for _, doc in zip(range(60), iter_stdlib_documents(start=700)) if doc]
    for text in TRICKY_TEXTS + docs:
        expected = processor.encode(text)
        assert hf.encode(text, add_special_tokens=False) == expected, repr(text[:80])
        assert hf.decode(expected) == text, repr(text[:80])
    # what an export ships: saved and reloaded through AutoTokenizer, still the same ids
    hf.save_pretrained(tmp_path / "hf")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in TRICKY_TEXTS:
        assert reloaded.encode(text, add_special_tokens=False) == processor.encode(text), repr(text)


def test_cli_is_idempotent(tmp_path, run_python):
    args = ["-m", "trainer.tokenizer", "--data_config", "configs/data_offline.yaml", "--output_dir", str(tmp_path / "tok"),
            "--vocab_size", "600", "--sample_bytes", "600000"]
    first = run_python(*args, check=True)
    assert "wrote" in first.stdout
    model_mtime = (tmp_path / "tok" / "spm.model").stat().st_mtime_ns
    started = time.time()
    second = run_python(*args, check=True)
    assert "up to date" in second.stdout
    assert time.time() - started < 10
    assert (tmp_path / "tok" / "spm.model").stat().st_mtime_ns == model_mtime
    config = DataMixConfig(sources=[SourceConfig(name="python_stdlib", type="python_stdlib")], seed=1234, val_every=20)
    assert tokenizer.is_up_to_date(tmp_path / "tok", config, 600, 600000)
    assert not tokenizer.is_up_to_date(tmp_path / "tok", config, 700, 600000)
    assert not tokenizer.is_up_to_date(tmp_path / "tok", config.model_copy(update={"seed": 1}), 600, 600000)
    # a changed model file is not up to date
    with open(tmp_path / "tok" / "spm.model", "ab") as f:
        f.write(b"x")
    assert not tokenizer.is_up_to_date(tmp_path / "tok", config, 600, 600000)


@pytest.mark.parametrize("vocab", ["70000", "100"])
def test_vocab_out_of_range_is_a_clear_error(tmp_path, run_python, vocab):
    result = run_python("-m", "trainer.tokenizer", "--data_config", "configs/data_offline.yaml", "--output_dir", str(tmp_path / "tok"), "--vocab_size", vocab)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "vocab_size" in result.stderr
    if vocab == "70000":
        assert "65535" in result.stderr
    assert not (tmp_path / "tok" / "spm.model").exists()


def test_tokenizer_info_rejects_a_missing_model(tmp_path):
    from runcontract.errors import UserError

    with pytest.raises(UserError, match="does not exist"):
        tokenizer.tokenizer_info(tmp_path / "nope.model")


def test_hub_mix_without_network_fails_fast(tmp_path, run_python):
    started = time.time()
    result = run_python("-m", "trainer.tokenizer", "--data_config", "configs/data_c4_wiki.yaml", "--output_dir", str(tmp_path / "tok"),
                        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert time.time() - started < 30
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "source 'c4'" in result.stderr and "HF_ENDPOINT" in result.stderr
    assert not (tmp_path / "tok" / "spm.model").exists()
