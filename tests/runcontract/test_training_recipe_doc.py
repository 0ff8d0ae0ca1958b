"""docs/training-recipe.md against configs/ and bench/recipe_study.py (issue 23): every number in
it that names a config value (the 100M schedule, its step count and warmup share, the models'
sizes, the study's arms) is the value the configs and the study's code have."""
from __future__ import annotations

import importlib.util
import math
import re

import yaml

from tests.harness.paths import REPO as REPO_ROOT

DOC = (REPO_ROOT / "docs" / "training-recipe.md").read_text()


def config(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "configs" / name).read_text())


TRAIN, MODEL, SMOKE_MODEL, DATA = config("train_100m.yaml"), config("model_100m.yaml"), config("model_smoke.yaml"), config("data_c4_wiki.yaml")
MAX_STEPS = math.ceil(TRAIN["target_tokens"] / TRAIN["tokens_per_step"])  # as trainer/training/loop.py plans it


def section(title: str) -> str:
    return DOC.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def number(text: str) -> float:
    return float(text.replace(",", "").replace("*", "").strip())


def table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return [row for row in rows[1:] if not set(row[0]) <= {"-"}]


def test_the_100m_defaults_table_is_the_config():
    rows = table_rows(section("The 100M defaults and why"))
    assert {row[0].strip("`") for row in rows} == {"lr", "min_lr_ratio", "warmup_steps", "tokens_per_step", "sampling"}
    for key, _before, now, _why in rows:
        value = TRAIN[key.strip("`")]
        shown = now.strip("*")
        assert (shown == value) if isinstance(value, str) else number(shown) == value, (key, now, value)


def test_step_counts_and_warmup_share_follow_from_the_config():
    # thousands of steps: the 100M run's (a study's 120 steps or a suggested 300-step run are not)
    steps = {int(number(n)) for n in re.findall(r"(\d{1,3}(?:,\d{3})+)(?:-step| steps)\b", section("The 100M defaults and why") + section("What only a GPU run of the 100M model can confirm"))}
    other_batch = {int(number(t)): int(number(s)) for t, s in re.findall(r"(\d[\d,]*) tokens per step \((\d[\d,]*) steps\)", DOC)}
    assert other_batch and all(s == math.ceil(TRAIN["target_tokens"] / t) for t, s in other_batch.items()), other_batch
    assert steps - set(other_batch.values()) == {MAX_STEPS}, steps
    shares = re.findall(r"(\d[\d,]*) of (\d[\d,]*) steps \((\d+(?:\.\d+)?)%\)", DOC)
    assert shares, "the warmup share is stated"
    for warmup, total, share in shares:
        assert (int(number(warmup)), int(number(total))) == (TRAIN["warmup_steps"], MAX_STEPS), (warmup, total)
        assert float(share) == round(100 * TRAIN["warmup_steps"] / MAX_STEPS, len(share.partition(".")[2])), share
    # the comparisons made with that share are true
    claim = re.search(r"steps \((\d+(?:\.\d+)?)%\) is more than [^%|]*?(\d+(?:\.\d+)?)% and [^%|]*?(\d+(?:\.\d+)?)%", DOC)
    assert claim and all(float(claim.group(1)) > float(other) for other in claim.groups()[1:]), claim
    # the baseline's warmup: the config's share before the study (it was 200 then too)
    assert re.search(rf"5% warmup\s+\(the config's {TRAIN['warmup_steps']} of {MAX_STEPS:,} steps", DOC)
    assert round(100 * TRAIN["warmup_steps"] / MAX_STEPS) == 5


def test_model_and_data_sizes_are_the_configs():
    wide = re.search(r"(\d+) wide, (\d+)\s+layers", DOC)
    assert wide and (int(wide.group(1)), int(wide.group(2))) == (MODEL["d_model"], MODEL["n_layers"])
    assert f"{MODEL['vocab_size'] // 1000}K tokenizer" in DOC
    billions = {number(n) for n in re.findall(r"(\d+(?:\.\d+)?)B tokens of C4", DOC)}
    assert billions == {TRAIN["target_tokens"] / 1e9}, billions
    batch = re.findall(r"(\d+(?:\.\d+)?)M-token batch", section("What only a GPU run of the 100M model can confirm"))
    assert batch and all(number(b) * 2**20 == TRAIN["tokens_per_step"] for b in batch), batch
    assert {s["name"] for s in DATA["sources"]} == {"c4", "wikipedia"}
    smoke = re.search(r"d_model (\d+), (\d+) layers, GQA (\d+)/(\d+) heads, vocab (\d+)", DOC)
    assert smoke and tuple(map(int, smoke.groups())) == tuple(SMOKE_MODEL[k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size"))


def test_the_study_table_is_the_study_code():
    spec = importlib.util.spec_from_file_location("recipe_study", REPO_ROOT / "bench" / "recipe_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    assert f"`seq_len` {study.SEQ_LEN}" in DOC
    tokens = 120 * study.BASE_BATCH_TOKENS  # the study's default --tokens, "122,880 tokens" in the doc
    assert f"{tokens:,} tokens" in DOC
    rows = table_rows(section("The study"))
    assert {row[0] for row in rows} == set(study.ARMS)
    for name, what, lr, final, warmup, batch, steps, sampling, *_scores in rows:
        arm = study.arm_settings(name, tokens)
        assert what == study.ARMS[name][0], name
        assert (number(lr), number(final.rstrip("%")) / 100, int(warmup), int(batch), int(steps), sampling) == (
            arm["lr"], arm["min_lr_ratio"], arm["warmup_steps"], arm["batch_tokens"], arm["steps"], arm["sampling"]), name
