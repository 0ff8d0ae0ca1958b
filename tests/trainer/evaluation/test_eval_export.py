"""Evaluation (loss, perplexity, bits per byte, samples), loss-curve plot and export to
transformers (issue 5), on a real tiny checkpoint, a SentencePiece model trained in the test
and a val.bin made with it."""
from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.evaluation.bits_per_byte import count_bytes, starts_with_space, token_byte_lengths
from trainer.training.checkpoint import TrainingState, save_checkpoint
from runcontract.config import ModelConfig
from runcontract.errors import UserError
from trainer.training.batches import validation_starts
from trainer.evaluation.evaluate import evaluate_checkpoint
from trainer.modeling.transformer import Transformer
from trainer.evaluation.loss_plot import plot_loss_curve, read_loss_series

VOCAB = 512
EOS = 2
WORDS = ("the of and a to in is was for on that with as by at from his her it an are were which this be or has had "
         "not but river city town history began function returns value number café naïve über 東京 1905").split()
TRICKY_TEXTS = ["The river  city\nbegan in 1905, café 東京 🙂", "  leading and trailing spaces  ", "ﬁ ligature ＡＢＣ\ttab", "", "Zebra?!"]


def _documents(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40))).capitalize() + "." for _ in range(count)]


def _train_spm(folder: Path, vocab_size: int, name: str = "spm") -> Path:
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / f"{name}_corpus.txt"
    corpus.write_text("\n".join(_documents(2000, seed=vocab_size) + TRICKY_TEXTS * 3))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / name), vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=EOS, pad_id=3,  # as trainer.tokenizer assigns them
        minloglevel=2, num_threads=1,
    )
    return folder / f"{name}.model"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """tokenizer/spm.model (+ tokenizer_meta.json), data/val.bin + data_meta.json, and
    runs/demo/final with a metrics.jsonl beside it."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("world")
    spm_path = _train_spm(root / "tokenizer", VOCAB)
    (root / "tokenizer" / "tokenizer_meta.json").write_text(json.dumps({"vocab_size": VOCAB, "unk_id": 0, "bos_id": 1, "eos_id": EOS, "pad_id": 3}))
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    docs = _documents(300, seed=7)
    stream = []
    for doc in docs:
        stream += sp.encode(doc) + [EOS]  # documents end with EOS, as trainer.data writes them
    data = root / "data"
    data.mkdir()
    np.asarray(stream, dtype=np.uint16).tofile(data / "val.bin")
    (data / "data_meta.json").write_text(json.dumps({"vocab_size": VOCAB, "eos_id": EOS}))

    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=128, max_seq_len=64)
    torch.manual_seed(0)
    model = Transformer(cfg)
    # A few steps on the val text so the model is not uniform: samples and losses mean something.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.tensor(stream[: 8 * 33], dtype=torch.long).view(8, 33)
    for _ in range(20):
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    run = root / "runs" / "demo"
    state = TrainingState(step=20, tokens_seen=20 * 256, elapsed_s=1.0, cost_spent=0.0, val_loss=None, world_size=1,
                          data_state={}, scheduler_state={}, rng_states=[{}])
    resolved = {"model": cfg.to_dict(), "train": {"data_dir": str(data), "seq_len": 32, "eval_tokens": 2048, "seed": 5}}
    save_checkpoint(run / "final", model, None, state, resolved)
    lines = [json.dumps({"type": "train", "step": s, "tokens_seen": s * 256, "loss": 6.0 - 0.1 * s}) for s in range(1, 21)]
    lines += [json.dumps({"type": "eval", "step": 10, "tokens_seen": 2560, "val_loss": 5.5}), '{"type": "train", "st']
    (run / "metrics.jsonl").write_text("\n".join(lines))
    return {"root": root, "spm": spm_path, "sp": sp, "data": data, "stream": stream, "docs": docs, "cfg": cfg,
            "model": model, "final": run / "final", "run": run}


# -- bits per byte ---------------------------------------------------------------------------
def test_byte_counts_equal_the_decoded_documents(world):
    sp, docs = world["sp"], world["docs"][:50]
    stream = [EOS]
    for doc in docs:
        stream += sp.encode(doc) + [EOS]
    stream = np.asarray(stream)
    counted = count_bytes(stream[1:], stream[:-1], token_byte_lengths(sp), starts_with_space(sp), EOS)
    assert counted == sum(len(sp.decode(sp.encode(doc)).encode("utf-8")) for doc in docs)
    multibyte = sp.encode("東京 🙂")  # byte-fallback pieces count one byte each
    assert token_byte_lengths(sp)[multibyte].sum() == len(" 東京 🙂".encode("utf-8"))


def test_windows_are_fixed_by_the_seed():
    a, b, c = validation_starts(10_000, 32, 1000, seed=1), validation_starts(10_000, 32, 1000, seed=1), validation_starts(10_000, 32, 1000, seed=2)
    assert len(a) == math.ceil(1000 / 32) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) >= 32) and a.max() + 33 <= 10_000  # non-overlapping, inside the file
    with pytest.raises(UserError, match="smaller --seq_len"):
        validation_starts(20, 32, 100, seed=0)
    warned = []  # asking for more than the file holds takes every window, and says so
    assert len(validation_starts(100, 32, 10_000, seed=0, warn=warned.append)) == 3 and "using all of them" in warned[0]
    assert validation_starts(10_000, 32, 1000, seed=1, warn=warned.append) is not None and len(warned) == 1


def test_validation_files_are_the_mix_and_each_usable_source(tmp_path):
    """The files both evals score: val.bin, and with several sources each val_<source>.bin that
    holds a window (the others are named in a warning and left out)."""
    from trainer.training.batches import validation_files

    np.zeros(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    np.zeros(40, dtype=np.uint16).tofile(tmp_path / "val_c4.bin")
    np.zeros(10, dtype=np.uint16).tofile(tmp_path / "val_wikipedia.bin")
    sources = [{"source": "c4", "file": "val_c4.bin", "tokens": 40}, {"source": "wikipedia", "file": "val_wikipedia.bin", "tokens": 10},
               {"source": "books", "file": "val_books.bin", "tokens": 50}]
    (tmp_path / "data_meta.json").write_text(json.dumps({"val_sources": sources}))
    warned = []
    assert validation_files(tmp_path, 32, warned.append) == [("mix", tmp_path / "val.bin"), ("c4", tmp_path / "val_c4.bin")]
    assert len(warned) == 2 and "wikipedia" in warned[0] and "books" in warned[1]
    (tmp_path / "data_meta.json").write_text(json.dumps({"val_sources": sources[:1]}))  # one source: its split is val.bin
    assert validation_files(tmp_path, 32, warned.append) == [("mix", tmp_path / "val.bin")]


# -- evaluation ------------------------------------------------------------------------------
def test_eval_scores_samples_and_redraws_the_curve(world):
    result = evaluate_checkpoint(world["final"], world["spm"], prompts=("The river", "History began"), max_new_tokens=8)
    written = json.loads((world["final"] / "eval.json").read_text())
    assert written["val_loss"] == pytest.approx(result["val_loss"])
    assert written["seq_len"] == 32 and written["seed"] == 5 and written["step"] == 20  # defaults from the checkpoint
    assert written["tokens"] == 64 * 32 and written["windows"] == 64

    # The same figures computed here, independently, from the same windows.
    stream = np.asarray(world["stream"])
    starts = validation_starts(len(stream), 32, 2048, seed=5)
    windows = torch.tensor(np.stack([stream[s:s + 33] for s in starts]), dtype=torch.long)
    with torch.no_grad():
        logits, _ = world["model"](windows[:, :-1])
    nats = torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), windows[:, 1:].reshape(-1), reduction="sum").item()
    assert written["val_loss"] == pytest.approx(nats / windows[:, 1:].numel(), rel=1e-5)
    assert written["perplexity"] == pytest.approx(math.exp(written["val_loss"]), rel=1e-6)
    sp = world["sp"]
    text_bytes = 0
    for window in windows.numpy():  # decode each document piece of each window's targets
        pieces = np.split(window[1:], np.flatnonzero(window[1:] == EOS) + 1)
        previous_is_eos = window[0] == EOS
        for piece in pieces:
            ids = [int(t) for t in piece if t != EOS]
            decoded = sp.decode(ids).encode("utf-8")
            if not previous_is_eos and ids and sp.id_to_piece(ids[0]).startswith("\u2581"):
                decoded = b" " + decoded  # mid-document: the leading space is real text
            text_bytes += len(decoded)
            previous_is_eos = True
    assert written["bytes"] == text_bytes
    assert written["bits_per_byte"] == pytest.approx(nats / math.log(2) / text_bytes, rel=1e-5)
    assert written["val_loss"] < math.log(VOCAB)  # the short training did something

    assert [s["prompt"] for s in written["samples"]] == ["The river", "History began"]
    assert all(isinstance(s["completion"], str) for s in written["samples"])
    png = world["run"] / "loss_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_command(world, run_python):
    result = run_python("-m", "trainer.eval", "--checkpoint", str(world["final"]), "--tokenizer_model", str(world["spm"]),
                        "--eval_tokens", "256", "--seed", "3", "--seq_len", "16", "--prompt", "The city", "--max_new_tokens", "4",
                        timeout=120)
    assert result.returncode == 0, result.stderr
    written = json.loads((world["final"] / "eval.json").read_text())
    assert written["tokens"] == 256 and written["seed"] == 3 and len(written["samples"]) == 1
    assert "bits/byte" in result.stdout


def test_eval_refuses_a_checkpoint_without_manifest(world, tmp_path, run_python):
    broken = tmp_path / "runs" / "x" / "final"
    shutil.copytree(world["final"], broken)
    (broken / "manifest.json").unlink()
    (broken / "eval.json").unlink(missing_ok=True)  # left by an earlier test's evaluation
    result = run_python("-m", "trainer.eval", "--checkpoint", str(broken), "--tokenizer_model", str(world["spm"]), timeout=120)
    assert result.returncode == 1
    assert "manifest.json" in result.stderr and "incomplete" in result.stderr and "Traceback" not in result.stderr
    assert not (broken / "eval.json").exists()


def test_eval_refuses_a_tokenizer_of_another_vocab(world, tmp_path):
    other = _train_spm(tmp_path / "other", 600)
    with pytest.raises(UserError, match="600 pieces.*vocab_size 512"):
        evaluate_checkpoint(world["final"], other, write=False)


def test_eval_refuses_data_of_another_vocab(world, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(world["data"] / "val.bin", data / "val.bin")
    (data / "data_meta.json").write_text(json.dumps({"vocab_size": 32000, "eos_id": EOS}))
    with pytest.raises(UserError, match="vocab_size 32000"):
        evaluate_checkpoint(world["final"], world["spm"], data_dir=data, write=False)
    with pytest.raises(UserError, match="val.bin does not exist"):
        evaluate_checkpoint(world["final"], world["spm"], data_dir=tmp_path / "nowhere", write=False)


# -- plot ------------------------------------------------------------------------------------
def test_plot_reads_train_and_eval_lines_and_skips_a_torn_one(world, tmp_path):
    series = read_loss_series(world["run"] / "metrics.jsonl")
    assert len(series.train_loss) == 20 and series.val_loss == [5.5] and series.skipped_lines == 1
    out = plot_loss_curve(world["run"] / "metrics.jsonl", tmp_path / "curve.png")
    assert out.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_plot_command_errors(tmp_path, run_python):
    empty = tmp_path / "metrics.jsonl"
    empty.write_text('{"type": "other"}\n')
    result = run_python("-m", "trainer.plot", "--metrics", str(empty), "--output_path", str(tmp_path / "x.png"), timeout=60)
    assert result.returncode == 1 and "no train or eval loss" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


# -- export ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(world):
    from trainer.modeling.hf_export import export_checkpoint

    return export_checkpoint(world["final"], world["spm"], world["root"] / "runs" / "demo" / "final_hf")


def test_export_loads_in_transformers_with_equal_logits(world, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(exported).eval()
    assert isinstance(hf_model, LlamaForCausalLM)
    tokens = torch.tensor([world["stream"][:48], world["stream"][100:148]])
    with torch.no_grad():
        ours, _ = world["model"](tokens)
        theirs = hf_model(input_ids=tokens).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # greedy continuation agrees too
        ours_gen = world["model"].generate(tokens[:1, :10], 8)
        theirs_gen = hf_model.generate(tokens[:1, :10], max_new_tokens=8, do_sample=False, pad_token_id=EOS)
    assert ours_gen.tolist() == theirs_gen.tolist()

    tokenizer = AutoTokenizer.from_pretrained(exported)
    sp = world["sp"]
    for text in TRICKY_TEXTS + world["docs"][:20]:
        assert tokenizer.encode(text) == sp.encode(text), text
        assert tokenizer.decode(sp.encode(text)) == sp.decode(sp.encode(text))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, EOS, 3)
    assert json.loads((exported / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (hf_model.config.bos_token_id, hf_model.config.eos_token_id, hf_model.config.pad_token_id) == (1, EOS, 3)
    info = json.loads((exported / "export_info.json").read_text())
    assert info["step"] == 20 and info["max_abs_logit_difference"] < 1e-4
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_export_refusals_leave_nothing(world, tmp_path, run_python):
    other = _train_spm(tmp_path / "other", 600)
    out = tmp_path / "hf"
    mismatch = run_python("-m", "trainer.export", "--checkpoint", str(world["final"]), "--tokenizer_model", str(other),
                          "--output_dir", str(out), timeout=120)
    assert mismatch.returncode == 1 and "do not belong together" in mismatch.stderr and "Traceback" not in mismatch.stderr

    broken = tmp_path / "final"
    shutil.copytree(world["final"], broken)
    (broken / "manifest.json").unlink()
    no_manifest = run_python("-m", "trainer.export", "--checkpoint", str(broken), "--tokenizer_model", str(world["spm"]),
                             "--output_dir", str(out), timeout=120)
    assert no_manifest.returncode == 1 and "manifest.json" in no_manifest.stderr and "Traceback" not in no_manifest.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".hf")]


def test_export_in_bfloat16_is_close(world, tmp_path):
    from transformers import AutoModelForCausalLM

    from trainer.modeling.hf_export import export_checkpoint

    out = export_checkpoint(world["final"], world["spm"], tmp_path / "hf_bf16", dtype="bfloat16")
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    assert hf_model.dtype == torch.bfloat16
    tokens = torch.tensor([world["stream"][:32]])
    with torch.no_grad():
        ours, _ = world["model"](tokens)
        theirs = hf_model.float()(input_ids=tokens).logits
    assert (theirs - ours).abs().max() < 0.5 and json.loads((out / "export_info.json").read_text())["dtype"] == "bfloat16"


def test_hf_tokenizer_encodes_like_sentencepiece_on_random_text(world, tmp_path):
    from trainer.modeling.hf_tokenizer import build_hf_tokenizer, read_spm_model

    spm_model = read_spm_model(world["spm"])
    assert len(spm_model.pieces) == VOCAB and spm_model.byte_fallback and spm_model.remove_extra_whitespaces
    tokenizer, sp = build_hf_tokenizer(world["spm"], 1, EOS), world["sp"]
    rng = random.Random(3)
    alphabet = list("the of and a 01 é東🙂\n\t  ,.ﬁＡ") + ["   ", "river ", "\u00a0"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tokenizer.encode(text) == sp.encode(text), repr(text)
        assert tokenizer.decode(sp.encode(text)) == sp.decode(sp.encode(text)), repr(text)

    not_a_model = tmp_path / "spm.model"
    not_a_model.write_bytes(b"\xff\xff\xff hello")
    with pytest.raises(UserError, match="not a readable SentencePiece model"):
        read_spm_model(not_a_model)


BLOCK_TRANSFORMERS = """
import runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'transformers':
            raise ModuleNotFoundError("No module named 'transformers'")
sys.meta_path.insert(0, Blocker())
sys.argv = ['trainer.export', '--checkpoint', 'x', '--tokenizer_model', 'y', '--output_dir', 'z']
runpy.run_module('trainer.export', run_name='__main__')
"""


def test_export_without_transformers_says_how_to_install_it(tmp_path, run_python):
    """A venv bootstrapped before transformers joined the trainer extra (issue 22)."""
    result = run_python("-c", BLOCK_TRANSFORMERS, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "export needs transformers" in result.stderr and "pip install -e '.[trainer]'" in result.stderr
    assert not (tmp_path / "z").exists()
