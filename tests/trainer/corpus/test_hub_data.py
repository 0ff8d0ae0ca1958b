"""The real hub path of the data step (``datasets.load_dataset(..., streaming=True)``) against a
local stand-in for the Hugging Face Hub (tests/harness/fake_hub.py, reached through HF_ENDPOINT):
it streams, a token reaches a gated dataset, and each failure says what happened: unreachable,
rate-limited or failing (retried, then a message that running again resumes, which it does),
gated without a token or with one that has no access, no such dataset, no such config."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from runcontract.manifest import sha256_file
from tests.harness.fake_hub import FakeHub, hub_env, jsonl_dataset
from trainer.corpus import spm_tokenizer as tokenizer
from trainer.corpus.smoke_data import SMOKE_MIX

WORDS = ["river", "stone", "light", "paper", "winter", "garden", "signal", "engine", "market", "silver", "window", "forest"]
TEXTS = [f"hub document {i}: " + " ".join(random.Random(i).choice(WORDS) for _ in range(40)) for i in range(400)]
# The driver runs the data step's real CLI with the retry waits cut from minutes to moments: ours,
# and datasets' own for streaming reads (20 tries, 20 s apart on a 503, 60 s on a 429).
DRIVER = ("import sys; import datasets.config as c; from trainer.corpus import sources; from trainer import data; sources.HUB_RETRY_DELAYS_S = (0.05, 0.05); "
          "c.STREAMING_READ_MAX_RETRIES = 1; c.STREAMING_READ_RETRY_INTERVAL = c.STREAMING_READ_SERVER_UNAVAILABLE_RETRY_INTERVAL = "
          "c.STREAMING_READ_RATE_LIMIT_RETRY_INTERVAL = 0; data.main(sys.argv[1:])")


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    tokenizer.train_tokenizer(SMOKE_MIX, out, 800, 800_000)
    return out / "spm.model"


@pytest.fixture
def hub(fake_hub: FakeHub) -> FakeHub:
    fake_hub.add(jsonl_dataset("org/web", {"en": TEXTS, "de": TEXTS[:10]}))
    fake_hub.add(jsonl_dataset("org/gated", {"en": TEXTS}, gated=True, allowed_tokens=("hf_granted",)))
    return fake_hub


def build(run_python, tmp_path, tok_model, env, path="org/web", config="en", train=32_000, val=5_000, out="data"):
    mix = tmp_path / f"mix-{path.replace('/', '-')}-{config}.yaml"
    mix.write_text(yaml.safe_dump({"sources": [{"name": "web", "type": "hub", "path": path, "config": config}], "val_every": 5}))
    return run_python("-c", DRIVER, "--data_config", str(mix), "--tokenizer_model", str(tok_model), "--output_dir",
                      str(tmp_path / out), "--train_tokens", str(train), "--val_tokens", str(val), "--workers", "1",
                      "--chunk_bytes", "2000", env=env, timeout=240)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tok_model) -> Path:
    """The data built from org/web with no fault on the way: what a disturbed build must equal."""
    import subprocess
    import sys

    from tests.harness.paths import REPO

    folder = tmp_path_factory.mktemp("clean")
    hub = FakeHub().start()
    try:
        hub.add(jsonl_dataset("org/web", {"en": TEXTS, "de": TEXTS[:10]}))

        def run_python(*args, env, timeout):
            import os

            return subprocess.run([sys.executable, *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env},
                                  capture_output=True, text=True, timeout=timeout)

        result = build(run_python, folder, tok_model, hub_env(hub, folder / "hf"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert all(auth is None for *_, auth in hub.requests)  # no token given, none sent
    finally:
        hub.stop()
    return folder / "data"


def failed_clearly(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr


def test_streams_from_the_hub_and_a_token_opens_a_gated_dataset(run_python, tmp_path, tok_model, hub, clean):
    meta = json.loads((clean / "data_meta.json").read_text())  # streamed through the stand-in, anonymously
    assert meta["sources"][0]["documents"] > 200  # into the second shard
    gated = build(run_python, tmp_path, tok_model, hub_env(hub, tmp_path / "hf", token="hf_granted"), path="org/gated", out="gated")
    assert gated.returncode == 0, gated.stderr[-3000:]
    assert sha256_file(tmp_path / "gated" / "train.bin") == sha256_file(clean / "train.bin")  # the same texts
    assert any("train-00001-of-00002.jsonl" in path for _, path, _ in hub.requests)
    assert {auth for *_, auth in hub.requests} == {"Bearer hf_granted"}


@pytest.mark.parametrize("case", ["unreachable", "503", "429", "gated-no-token", "gated-wrong-token", "no-such-dataset",
                                  "no-such-dataset-with-token", "no-such-config"])
def test_hub_failures_say_what_happened(run_python, tmp_path, tok_model, hub, case):
    env = hub_env(hub, tmp_path / "hf")
    path, config = "org/web", "en"
    if case == "unreachable":
        hub.stop()  # nothing listens there any more: connection refused
    elif case in ("503", "429"):
        hub.fail(int(case), 100, "/api/datasets/org/web")
    elif case.startswith("gated"):
        path = "org/gated"
        env["HF_TOKEN"] = "hf_not_granted" if case == "gated-wrong-token" else ""
    elif case.startswith("no-such-dataset"):
        path = "org/nope"
        env["HF_TOKEN"] = "hf_granted" if case.endswith("token") else ""
    else:
        config = "fr"
    err = failed_clearly(build(run_python, tmp_path, tok_model, env, path=path, config=config))
    expected = {
        "unreachable": [f"cannot reach {env['HF_ENDPOINT']}", "HF_ENDPOINT", "type: json"],
        "503": ["answered 503", "3 time(s)", "Nothing was written yet; running it again starts the build"],
        "429": ["answered 429 (rate limit", "export HF_TOKEN"],
        "gated-no-token": ["is gated", "no HF_TOKEN is set", "export HF_TOKEN"],
        "gated-wrong-token": ["is gated", "answered 403", "the token in HF_TOKEN has no access"],
        "no-such-dataset": ["has no dataset 'org/nope'", "export HF_TOKEN"],
        "no-such-dataset-with-token": ["has no dataset 'org/nope' (404)"],
        "no-such-config": ["has no config 'fr'; its configs are: en, de"],
    }[case]
    for text in expected:
        assert text in err, (text, err[-2000:])
    if case in ("503", "429"):
        assert err.count("trying again in") == 2  # the two patched retries, then the message
    if case != "unreachable":
        assert "With no network" not in err and "could not reach the dataset hub" not in err
    assert not list((tmp_path / "data").glob("*.bin"))


def test_a_refused_read_mid_stream_is_retried_from_where_it_stopped(run_python, tmp_path, tok_model, hub, clean):
    """429s on the second shard past huggingface_hub's own 5 retries: ours reopens the stream at the
    record after the last one read; the bytes equal an undisturbed build's."""
    hub.fail(429, 6, "train-00001-of-00002.jsonl")
    result = build(run_python, tmp_path, tok_model, hub_env(hub, tmp_path / "hf2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the hub answered 429; trying again" in result.stderr
    for name in ("train.bin", "val.bin"):
        assert sha256_file(tmp_path / "data" / name) == sha256_file(clean / name)


@pytest.mark.slow
def test_rate_limited_past_the_retries_then_running_again_resumes(run_python, tmp_path, tok_model, hub, clean):
    hub.fail(429, 1000, "train-00001-of-00002.jsonl")
    err = failed_clearly(build(run_python, tmp_path, tok_model, hub_env(hub, tmp_path / "hf2")))
    assert "answered 429" in err and "Running it again resumes where it stopped" in err, err[-2000:]
    assert (tmp_path / "data" / "data_build_state.json").exists()
    hub.heal()
    again = build(run_python, tmp_path, tok_model, hub_env(hub, tmp_path / "hf2"))
    assert again.returncode == 0, again.stderr[-3000:]
    meta = json.loads((tmp_path / "data" / "data_meta.json").read_text())
    assert meta["resumed"] is True
    for name in ("train.bin", "val.bin"):
        assert sha256_file(tmp_path / "data" / name) == sha256_file(clean / name)
