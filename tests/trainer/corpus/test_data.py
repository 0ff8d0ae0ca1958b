"""The data pipeline: sources (local json/parquet/text, the stdlib corpus, the hub offline), the
seeded mix and its val split, exact-size uint16 memmaps, resume after a kill, idempotence, and
the errors for bad input. Corpora are generated at run time."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from trainer.corpus import memmaps as data, spm_tokenizer as tokenizer
from runcontract.config import DataMixConfig, SourceConfig
from runcontract.errors import UserError
from runcontract.manifest import sha256_file
from trainer.corpus.mix import MixedStream, is_val_position
from trainer.corpus.smoke_data import SMOKE_MIX, ensure_smoke_data
from tests.harness.paths import REPO as ROOT

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pha", "qu", "ish"]


def make_doc(rng: random.Random, marker: str, words: int) -> str:
    body = " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(words))
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return f"{marker} " + "\n".join(lines) + f" {rng.randint(0, 99999)}."


def write_corpus(folder: Path, prefix: str, docs: int, seed: int, words: int = 60) -> list[str]:
    """Three jsonl shards of synthetic documents, each starting with a unique marker."""
    rng = random.Random(seed)
    texts = [make_doc(rng, f"{prefix}{i:06d}", rng.randint(words // 2, words * 2)) for i in range(docs)]
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(3):
        with open(folder / f"{prefix}-{shard}.jsonl", "w") as f:
            for i in range(shard, docs, 3):
                f.write(json.dumps({"id": i, "text": texts[i]}) + "\n")
    return texts


def write_yaml(path: Path, sources: list[dict], val_every: int = 5, seed: int = 7) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"sources": sources, "val_every": val_every, "seed": seed}))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder / "a", "alpha", 1500, seed=1)
    write_corpus(folder / "b", "beta", 600, seed=2)
    return folder


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    tokenizer.train_tokenizer(SMOKE_MIX, out, 800, 800_000)
    return out / "spm.model"


@pytest.fixture(scope="module")
def mix_yaml(corpus, tmp_path_factory) -> Path:
    return write_yaml(
        tmp_path_factory.mktemp("cfg") / "mix.yaml",
        [
            {"name": "alpha", "type": "json", "path": str(corpus / "a" / "*.jsonl"), "weight": 3.0},
            {"name": "beta", "type": "json", "path": str(corpus / "b" / "*.jsonl"), "weight": 1.0},
        ],
    )


def load_mix(path: Path) -> DataMixConfig:
    from runcontract.configlib import load_config

    return load_config(DataMixConfig, path)


def split_docs(tokens: np.ndarray, eos: int) -> list[np.ndarray]:
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e] for s, e in zip(starts, ends)]


def run_data_cli(run_python, mix: Path, tok: Path, out: Path, train: int, val: int, *extra: str, env=None):
    return run_python("-m", "trainer.data", "--data_config", str(mix), "--tokenizer_model", str(tok), "--output_dir", str(out),
                      "--train_tokens", str(train), "--val_tokens", str(val), *extra, env=env)


def test_memmaps_hold_exactly_the_mix_in_order(tmp_path, run_python, mix_yaml, tok_model):
    train_n, val_n = 60_000, 9_000
    result = run_data_cli(run_python, mix_yaml, tok_model, tmp_path / "data", train_n, val_n, "--workers", "2")
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "data" / "data_meta.json").read_text())
    for key, value in {"train_tokens": train_n, "val_tokens": val_n, "dtype": "uint16", "vocab_size": 800, "eos_id": 2, "bos_id": 1,
                       "tokenizer_sha256": sha256_file(tok_model)}.items():
        assert meta[key] == value, key
    assert meta["created"] and [s["name"] for s in meta["sources"]] == ["alpha", "beta"]
    assert sum(s["tokens"] for s in meta["sources"]) == train_n + val_n
    assert sum(s["train_tokens"] for s in meta["sources"]) == train_n
    assert all(s["documents"] > 0 and s["bytes"] > 0 for s in meta["sources"])
    assert (tmp_path / "data" / "train.bin").stat().st_size == 2 * train_n
    assert (tmp_path / "data" / "val.bin").stat().st_size == 2 * val_n
    assert not list((tmp_path / "data").glob("*.tmp")) and not (tmp_path / "data" / data.STATE_NAME).exists()

    # every document, in mix order, followed by EOS; the val split is every 5th position
    processor = spm.SentencePieceProcessor(model_file=str(tok_model))
    expected = {"train": [], "val": []}
    for doc in data.open_mix(load_mix(mix_yaml), tok_model):
        expected["val" if doc.is_val else "train"].append(doc.text)
        if len(expected["val"]) > 400 and len(expected["train"]) > 1600:
            break
    markers = {}
    for split in ("train", "val"):
        tokens = data.load_memmap(tmp_path / "data", split)
        docs = split_docs(np.asarray(tokens), eos=2)
        assert len(docs) > 10
        for got, text in zip(docs, expected[split]):
            assert processor.decode(got.tolist()) == text
        tail = tokens[len(np.concatenate(docs)) + len(docs):].tolist()  # the cut last document
        assert processor.encode(expected[split][len(docs)])[: len(tail)] == tail
        markers[split] = {processor.decode(d.tolist()).split(" ", 1)[0] for d in docs}
    assert not markers["train"] & markers["val"], "a val document reached train"
    # each source's validation split apart: exactly its val documents, in order, summing to val.bin
    assert [(v["source"], v["file"]) for v in meta["val_sources"]] == [("alpha", "val_alpha.bin"), ("beta", "val_beta.bin")]
    assert sum(v["tokens"] for v in meta["val_sources"]) == val_n
    assert [v["tokens"] for v in meta["val_sources"]] == [s["val_tokens"] for s in meta["sources"]]
    by_source = {0: [], 1: []}
    for doc in data.open_mix(load_mix(mix_yaml), tok_model):
        if doc.is_val:
            by_source[doc.source].append(doc.text)
        if min(len(v) for v in by_source.values()) > 200:
            break
    for index, entry in enumerate(meta["val_sources"]):
        tokens = np.fromfile(tmp_path / "data" / entry["file"], dtype=np.uint16)
        assert len(tokens) == entry["tokens"] and sha256_file(tmp_path / "data" / entry["file"]) == entry["sha256"]
        docs = split_docs(tokens, eos=2)
        assert len(docs) > 5
        assert [processor.decode(d.tolist()) for d in docs] == by_source[index][:len(docs)]
    # weights 3:1 -> roughly three alpha documents per beta document
    alpha, beta = (s["documents"] for s in meta["sources"])
    assert 2.0 < alpha / beta < 4.5


def test_mix_is_seeded_and_val_by_position(mix_yaml):
    config = load_mix(mix_yaml)
    first = [(d.source, d.text[:12], d.is_val) for _, d in zip(range(300), MixedStream(config))]
    again = [(d.source, d.text[:12], d.is_val) for _, d in zip(range(300), MixedStream(config))]
    other = [(d.source, d.text[:12], d.is_val) for _, d in zip(range(300), MixedStream(config.model_copy(update={"seed": 8})))]
    assert first == again and first != other
    assert [v for *_, v in first] == [is_val_position(i, 5) for i in range(300)]
    assert sum(v for *_, v in first) == 60


@pytest.mark.parametrize("mix_by, tokens", [("tokens", True), ("tokens", False), ("documents", False)])
def test_mix_state_resumes_mid_stream(mix_yaml, tok_model, mix_by, tokens):
    config = load_mix(mix_yaml).model_copy(update={"mix_by": mix_by})
    processor = spm.SentencePieceProcessor(model_file=str(tok_model))
    count = (lambda text: len(processor.encode(text))) if tokens else None
    stream = MixedStream(config, count_tokens=count)
    iterator = iter(stream)
    head = [next(iterator).text for _ in range(777)]
    state = json.loads(json.dumps(stream.state_dict()))  # it goes through a JSON file
    rest = [next(iterator).text for _ in range(500)]
    resumed = MixedStream(config, count_tokens=count)
    resumed.load_state_dict(state)
    assert [d.text for _, d in zip(range(500), resumed)] == rest
    assert head[-1] not in rest


@pytest.fixture(scope="module")
def short_and_long(tmp_path_factory) -> Path:
    """Two sources whose documents differ tenfold in length, weighted 0.8 (short) / 0.2 (long)."""
    folder = tmp_path_factory.mktemp("lengths")
    write_corpus(folder / "short", "short", 1500, seed=4, words=30)
    write_corpus(folder / "long", "long", 300, seed=5, words=300)
    return write_yaml(folder / "mix.yaml", [
        {"name": "web", "type": "json", "path": str(folder / "short" / "*.jsonl"), "weight": 0.8},
        {"name": "articles", "type": "json", "path": str(folder / "long" / "*.jsonl"), "weight": 0.2},
    ], val_every=10)


@pytest.mark.parametrize("mix_by", ["tokens", "documents"])
def test_weights_are_token_shares(tmp_path, short_and_long, tok_model, mix_by):
    """Weights 0.8/0.2 are the sources' shares of the written tokens (data_meta.json records the
    realized shares), however long each source's documents are; mix_by: documents keeps the old
    meaning, where the source with long documents takes far more than its weight."""
    config = load_mix(short_and_long).model_copy(update={"mix_by": mix_by})
    meta = data.build_memmaps(config, tok_model, tmp_path / "out", 200_000, 20_000, workers=0, progress=False)
    web, articles = meta["sources"]
    assert web["token_share"] == round(web["tokens"] / 220_000, 4) and articles["token_share"] == round(articles["tokens"] / 220_000, 4)
    if mix_by == "tokens":
        assert abs(web["token_share"] - 0.8) < 0.02 and abs(articles["token_share"] - 0.2) < 0.02, meta["sources"]
        assert articles["val_tokens"] > 0  # val holds every source (its share is noisier: few long documents)
    else:
        assert web["documents"] / (web["documents"] + articles["documents"]) == pytest.approx(0.8, abs=0.05)
        assert articles["token_share"] > 0.5, meta["sources"]


@pytest.mark.parametrize("kind", ["json", "parquet", "text"])
def test_local_file_types_share_one_code_path(tmp_path, kind, tok_model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(3)
    texts = [make_doc(rng, f"doc{i}", 30) for i in range(40)]
    if kind == "json":
        path = tmp_path / "c.jsonl"
        path.write_text("".join(json.dumps({"content": t}) + "\n" for t in texts))
    elif kind == "parquet":
        path = tmp_path / "c.parquet"
        pq.write_table(pa.table({"content": texts}), path)
    else:
        path = tmp_path / "c.txt"
        texts = [t.replace("\n", " ") for t in texts]  # a blank line ends a document
        path.write_text("\n\n".join(texts) + "\n")
    field = "text" if kind == "text" else "content"
    config = DataMixConfig(sources=[SourceConfig(name="local", type=kind, path=str(path), text_field=field)], val_every=4)
    got = [d.text.strip() for d in MixedStream(config)]
    assert got == texts
    meta = data.build_memmaps(config, tok_model, tmp_path / "out", 2000, 300, workers=1, progress=False)
    assert meta["sources"][0]["documents"] > 5


def test_up_to_date_is_quick_and_exact(tmp_path, run_python, mix_yaml, tok_model):
    out = tmp_path / "data"
    assert run_data_cli(run_python, mix_yaml, tok_model, out, 5000, 500).returncode == 0
    mtime = (out / "train.bin").stat().st_mtime_ns
    started = time.time()
    again = run_data_cli(run_python, mix_yaml, tok_model, out, 5000, 500)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert time.time() - started < 15
    assert (out / "train.bin").stat().st_mtime_ns == mtime
    config = load_mix(mix_yaml)
    assert data.is_up_to_date(out, config, tok_model, 5000, 500)
    assert not data.is_up_to_date(out, config, tok_model, 5001, 500)
    assert not data.is_up_to_date(out, config.model_copy(update={"seed": 99}), tok_model, 5000, 500)
    (out / "val_beta.bin").rename(out / "moved.bin")  # a missing per-source split is not up to date
    assert not data.is_up_to_date(out, config, tok_model, 5000, 500)
    (out / "moved.bin").rename(out / "val_beta.bin")
    with open(out / "val.bin", "ab") as f:  # a damaged file is not up to date
        f.write(b"\0\0")
    assert not data.is_up_to_date(out, config, tok_model, 5000, 500)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_build_resumes_to_the_same_bytes(tmp_path, mix_yaml, tok_model, run_python, how):
    train_n, val_n = 150_000, 20_000
    reference = tmp_path / "reference"
    assert run_data_cli(run_python, mix_yaml, tok_model, reference, train_n, val_n, "--workers", "1").returncode == 0

    out = tmp_path / "data"
    argv = [sys.executable, "-m", "trainer.data", "--data_config", str(mix_yaml), "--tokenizer_model", str(tok_model), "--output_dir", str(out),
            "--train_tokens", str(train_n), "--val_tokens", str(val_n), "--workers", "1", "--chunk_bytes", "4000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    state = out / data.STATE_NAME
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["written"]["train"] > 20_000:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    os.killpg(proc.pid, how)  # the whole group, as Ctrl-C or a dying box would
    _, stderr = proc.communicate(timeout=60)
    if how == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    # nothing looks finished
    assert not (out / "train.bin").exists() and not (out / "data_meta.json").exists()
    assert (out / "train.bin.tmp").exists() and state.exists()
    assert not data.is_up_to_date(out, load_mix(mix_yaml), tok_model, train_n, val_n)

    second = run_data_cli(run_python, mix_yaml, tok_model, out, train_n, val_n, "--workers", "2", "--chunk_bytes", "4000")
    assert second.returncode == 0, second.stderr
    assert "resuming at" in second.stderr
    assert json.loads((out / "data_meta.json").read_text())["resumed"] is True
    for split in ("train", "val"):
        assert sha256_file(out / f"{split}.bin") == sha256_file(reference / f"{split}.bin")
    for name in ("val_alpha.bin", "val_beta.bin"):  # the per-source splits resume too
        assert sha256_file(out / name) == sha256_file(reference / name)
    ref_meta = json.loads((reference / "data_meta.json").read_text())
    assert json.loads((out / "data_meta.json").read_text())["sources"] == ref_meta["sources"]


def test_changed_inputs_start_over_cleanly(tmp_path, mix_yaml, tok_model):
    config = load_mix(mix_yaml)
    out = tmp_path / "data"
    # a leftover from another build: a resume point for different inputs and junk tmp files
    out.mkdir()
    (out / "train.bin.tmp").write_bytes(b"\1\0" * 999)
    (out / "val.bin.tmp").write_bytes(b"\1\0" * 99)
    (out / data.STATE_NAME).write_text(json.dumps({"fingerprint": {"other": 1}, "written": {"train": 999, "val": 99}, "sources": [], "mix": {}}))
    meta = data.build_memmaps(config, tok_model, out, 3000, 400, workers=1, progress=False)
    assert meta["resumed"] is False
    fresh = data.build_memmaps(config, tok_model, tmp_path / "fresh", 3000, 400, workers=1, progress=False)
    assert meta["files"] == fresh["files"]


def test_more_tokens_than_the_sources_hold(tmp_path, run_python, mix_yaml, tok_model):
    result = run_data_cli(run_python, mix_yaml, tok_model, tmp_path / "data", 50_000_000, 1000)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "ran out of documents" in result.stderr and "--train_tokens 50000000" in result.stderr
    assert not list((tmp_path / "data").glob("*.bin*")) and not (tmp_path / "data" / data.STATE_NAME).exists()


def test_missing_text_field(tmp_path, run_python, corpus, tok_model):
    mix = write_yaml(tmp_path / "m.yaml", [{"name": "alpha", "type": "json", "path": str(corpus / "a" / "*.jsonl"), "text_field": "body"}])
    result = run_data_cli(run_python, mix, tok_model, tmp_path / "data", 1000, 100)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no field 'body'" in result.stderr and "id, text" in result.stderr
    assert not list((tmp_path / "data").glob("*.bin*"))


@pytest.mark.parametrize("source", [
    {"name": "bad", "type": "ftp", "path": "x"},
    {"name": "bad", "type": "json", "path": "/nonexistent/*.jsonl"},
])
def test_unknown_source(tmp_path, run_python, tok_model, source):
    result = run_data_cli(run_python, write_yaml(tmp_path / "m.yaml", [source]), tok_model, tmp_path / "data", 1000, 100)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert ("type" in result.stderr and "ftp" in result.stderr) if source["type"] == "ftp" else "no file matches" in result.stderr


@pytest.mark.parametrize("offline_env", [True, False])
def test_hub_source_without_network_fails_fast(tmp_path, run_python, tok_model, offline_env):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"} if offline_env else {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
    started = time.time()
    result = run_data_cli(run_python, ROOT / "configs" / "data_c4_wiki.yaml", tok_model, tmp_path / "data", 1000, 100, env=env)
    assert time.time() - started < 30
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "source 'c4'" in result.stderr and "allenai/c4" in result.stderr
    assert "type: json" in result.stderr and "HF_ENDPOINT" in result.stderr


def test_tokenizer_too_large_for_uint16(tmp_path, run_python, mix_yaml, tok_model):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(tok_model.read_bytes())
    while len(proto.pieces) <= 65535:
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = f"extra{len(proto.pieces)}", -1e4, model_pb2.ModelProto.SentencePiece.USER_DEFINED
    big = tmp_path / "big.model"
    big.write_bytes(proto.SerializeToString())
    assert spm.SentencePieceProcessor(model_file=str(big)).get_piece_size() == 65536
    result = run_data_cli(run_python, mix_yaml, big, tmp_path / "data", 1000, 100)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "65535" in result.stderr and "uint16" in result.stderr


def test_bad_token_counts(tmp_path, mix_yaml, tok_model):
    with pytest.raises(UserError, match="at least 1"):
        data.build_memmaps(load_mix(mix_yaml), tok_model, tmp_path, 0, 10)


def test_smoke_data_builds_once(tmp_path):
    started = time.time()
    ensure_smoke_data(tmp_path / "data", tmp_path / "tok", vocab_size=512, train_tokens=20_000, val_tokens=2_000)
    assert time.time() - started < 60
    meta = json.loads((tmp_path / "data" / "data_meta.json").read_text())
    assert (meta["vocab_size"], meta["train_tokens"], meta["val_tokens"]) == (512, 20_000, 2_000)
    assert (tmp_path / "tok" / "spm.model").is_file()
    stamp = (tmp_path / "data" / "train.bin").stat().st_mtime_ns
    started = time.time()
    ensure_smoke_data(tmp_path / "data", tmp_path / "tok", vocab_size=512, train_tokens=20_000, val_tokens=2_000)
    assert time.time() - started < 5
    assert (tmp_path / "data" / "train.bin").stat().st_mtime_ns == stamp


def test_a_dead_worker_is_an_error_not_a_hang(tmp_path, mix_yaml, tok_model):
    import psutil

    out = tmp_path / "data"
    argv = [sys.executable, "-m", "trainer.data", "--data_config", str(mix_yaml), "--tokenizer_model", str(tok_model), "--output_dir", str(out),
            "--train_tokens", "150000", "--val_tokens", "20000", "--workers", "1", "--chunk_bytes", "4000"]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not (out / data.STATE_NAME).exists():
        time.sleep(0.01)
    workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
    assert proc.poll() is None and workers, "the build finished before a worker could be killed"
    workers[0].kill()  # as the OOM killer would
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in stderr
    assert "worker process died" in stderr
    assert (out / data.STATE_NAME).exists() and not (out / "train.bin").exists()  # resumable, not finished


@pytest.mark.parametrize("module, required, old, new", [
    ("trainer.data", ["--train_tokens", "1", "--val_tokens", "1"], "--out_dir", "--output_dir"),
    ("trainer.export", ["--checkpoint", "c"], "--out_dir", "--output_dir"),
    ("trainer.plot", ["--metrics", "m"], "--out", "--output_path"),
])
def test_old_output_flags_are_deprecated_aliases(module, required, old, new, capsys):
    """Folders are --output_dir and files --output_path in every trainer CLI; the old names work
    for one release, hidden from --help and with a one-line warning."""
    import importlib

    parser = importlib.import_module(module).build_parser()
    dest = new.lstrip("-")
    assert getattr(parser.parse_args(required + [new, "new"]), dest) == "new"
    assert capsys.readouterr().err == ""
    assert getattr(parser.parse_args(required + [old, "old"]), dest) == "old"
    warning = capsys.readouterr().err
    assert f"{old} is deprecated" in warning and new in warning and warning.count("\n") == 1
    assert f"{old} " not in parser.format_help() and new in parser.format_help()


def test_prepared_files_read_meta_and_count_tokens(tmp_path):
    """A builder takes an unreadable meta for "not built" (None); a step that needs it gets a
    clear error. Token counts come from the file size in TOKEN_DTYPE items."""
    from trainer.corpus.prepared_files import open_tokens, read_data_meta, read_meta, token_count

    meta = tmp_path / "data_meta.json"
    assert read_meta(meta) is None and read_data_meta(tmp_path) is None  # absent
    meta.write_text('{"vocab_size": 5')
    assert read_meta(meta) is None
    with pytest.raises(UserError, match=r"data_meta.json is not valid JSON .*python -m trainer.data"):
        read_data_meta(tmp_path)
    meta.write_text('{"vocab_size": 5}')
    assert read_data_meta(tmp_path) == {"vocab_size": 5}

    tokens = tmp_path / "val.bin"
    np.arange(7, dtype=np.uint16).tofile(tokens)
    assert token_count(tokens) == 7 and open_tokens(tokens).tolist() == list(range(7)) and open_tokens(tokens, 3).tolist() == [0, 1, 2]
