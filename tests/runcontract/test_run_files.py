"""The run folder's JSON files as typed models (runcontract/run_files.py) and the budget
(runcontract/budget.py): what is written is what was always written, old files still read,
a bad file is one clear error naming it, and the docs show the model's own descriptions."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from runcontract.budget import BudgetConfig, spent
from runcontract.config import SECTIONS, TrainConfig
from runcontract.configlib import load_config
from runcontract.errors import UserError
from runcontract.manifest import write_manifest
from runcontract.run_files import (
    CostFile, EvalMetrics, StatusFile, StoreFile, Throughput, TrainMetrics, metrics_line, parse_metrics_line,
)
from runcontract.run_folder import latest_complete_checkpoint
from tests.harness.paths import REPO as ROOT


def test_status_round_trips_keeps_unknown_keys_and_writes_no_nan(tmp_path):
    path = tmp_path / "status.json"
    StatusFile(state="running", phase="training", progress=None, step=3, loss=float("nan"), updated=1.5, pid=42).write(path)
    on_disk = json.loads(path.read_text())
    assert on_disk == {"state": "running", "phase": "training", "progress": None, "step": 3, "loss": None, "updated": 1.5, "pid": 42}
    assert path.read_text() == json.dumps(on_disk, indent=2, sort_keys=True) + "\n"  # the format the writers always used
    old = {"state": "finished", "step": 7, "cost_spent": 0.25, "a_newer_writers_key": [1]}  # an old (or newer) folder's file
    path.write_text(json.dumps(old))
    status = StatusFile.read(path)
    assert (status.state, status.step, status.cost_spent, status.max_steps) == ("finished", 7, 0.25, None)
    assert status.to_json() == old


@pytest.mark.parametrize("content, expected", [
    (None, "does not exist"),
    ("{\"state\": ", "is not valid JSON"),
    ("[1, 2]", "must hold one JSON object"),
    ("{\"state\": \"paused\"}", "key 'state' = 'paused': state must be one of preparing, running"),
    ("{\"state\": \"running\", \"step\": \"many\"}", "key 'step' = 'many'"),
])
def test_a_bad_status_file_is_one_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "status.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as caught:
        StatusFile.read(path)
    assert str(path) in str(caught.value) and expected in str(caught.value), caught.value


def test_metrics_lines_are_the_lines_the_trainer_always_wrote():
    train = TrainMetrics(step=10, tokens_seen=640, loss=float("inf"), lr=3e-4, grad_norm=1.5, tokens_per_sec=900.0, mfu=None,
                         epoch=0.5, elapsed_s=2.0, cost_spent=0.01, time=1.0)
    assert metrics_line(train) == json.dumps({"type": "train", "step": 10, "tokens_seen": 640, "loss": None, "lr": 3e-4, "grad_norm": 1.5,
                                              "tokens_per_sec": 900.0, "mfu": None, "epoch": 0.5, "elapsed_s": 2.0,
                                              "cost_spent": 0.01, "time": 1.0}) + "\n"
    evaluation = EvalMetrics(step=10, tokens_seen=640, val_loss=4.0, val_bpb=1.2, val_sources={"c4": {"loss": 4.1, "bpb": 1.3}}, elapsed_s=2.0, time=1.0)
    assert json.loads(metrics_line(evaluation)) == {"type": "eval", "step": 10, "tokens_seen": 640, "val_loss": 4.0, "val_bpb": 1.2,
                                                    "val_sources": {"c4": {"loss": 4.1, "bpb": 1.3}}, "elapsed_s": 2.0, "time": 1.0}
    assert parse_metrics_line(metrics_line(evaluation)) == evaluation
    assert isinstance(parse_metrics_line('{"type": "train", "step": 1, "loss": NaN}'), TrainMetrics)
    assert parse_metrics_line('{"type": "note", "text": "hi"}') is None  # not a record: kept as it is by readers
    for torn in ('{"type": "train", "st', '[1]', '{"type": "train", "step": "x"}'):
        with pytest.raises(ValueError):
            parse_metrics_line(torn)


def test_throughput_and_cost_read_what_the_benchmark_and_cost_gate_write(tmp_path):
    path = tmp_path / "throughput.json"
    path.write_text(json.dumps({"tokens_per_sec": 1234.5, "micro_batch_size": 4, "device_name": "cpu", "cuda_version": None}))
    throughput = Throughput.read(path)
    assert (throughput.tokens_per_sec, throughput.micro_batch_size, throughput.seq_len) == (1234.5, 4, None)
    for bad in ({"micro_batch_size": 4}, {"tokens_per_sec": 0}, {"tokens_per_sec": "fast"}):
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match="tokens_per_sec"):
            Throughput.read(path)
    cost = CostFile(target_tokens=10, tokens_per_sec=1.0, gpu_count=1, total_tokens_per_sec=1.0, hours=0.1, hourly_rate=2.0,
                    total_cost=0.2, finish_time="2026-01-01T00:00:00+00:00", max_cost=0.1, verdict="over_budget", warnings=[])
    cost.write(tmp_path / "cost.json")
    assert CostFile.read(tmp_path / "cost.json") == cost
    (tmp_path / "cost.json").write_text(json.dumps({**cost.to_json(), "verdict": "maybe"}))
    with pytest.raises(UserError, match="verdict"):
        CostFile.read(tmp_path / "cost.json")


def test_store_file_writes_every_field_and_refuses_unknown_keys(tmp_path):
    store = StoreFile(run_name="r", storage={"url": "file://x"}, budget=BudgetConfig(max_cost=2.0))
    assert json.loads(store.to_text()) == {"run_name": "r", "storage": {"url": "file://x"}, "agent": {},
                                           "budget": {"hourly_rate": 0.0, "max_cost": 2.0, "max_total_cost": None},
                                           "provider": {"kind": None, "instance_id": None}}
    (tmp_path / "store.json").write_text(json.dumps({"run_name": "r", "storage": {}, "budget": {"max_cost": -1}}))
    with pytest.raises(UserError, match="max_cost"):
        StoreFile.read(tmp_path / "store.json")


def test_the_docs_show_the_status_models_own_descriptions():
    doc, health_doc = (ROOT / "docs" / "status-json.md").read_text().split("## The file itself")[1].split("## The store's health")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", doc, re.M))
    assert rows == {name: field.description for name, field in StatusFile.model_fields.items()}
    from runcontract.run_files import StoreHealth

    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", health_doc, re.M))
    assert rows == {name: field.description for name, field in StoreHealth.model_fields.items()}


def test_spent_and_the_budget_rule():
    assert spent(1800.0, 4.0) == pytest.approx(2.0)
    budget = BudgetConfig(hourly_rate=4.0, max_cost=2.0)
    assert budget.reached(2.0) and not budget.reached(1.99)
    assert not BudgetConfig(hourly_rate=0.0, max_cost=2.0).reached(5.0)  # a box you own never runs out


def test_the_budget_travels_to_the_trainer_as_the_same_model():
    budget = BudgetConfig(hourly_rate=0.35, max_cost=12.5)
    train = load_config(TrainConfig, None, budget.overrides("train.budget"), section="train", known_sections=SECTIONS)
    assert train.budget == budget


def test_latest_complete_checkpoint_skips_incomplete_folders_and_final_wins_a_tie(tmp_path):
    def checkpoint(rel: str, step: int, complete: bool = True) -> Path:
        folder = tmp_path / rel
        folder.mkdir(parents=True)
        (folder / "model.bin").write_bytes(b"x" * step)
        if complete:
            write_manifest(folder, meta={"step": step})
        return folder

    assert latest_complete_checkpoint(tmp_path) is None
    checkpoint("checkpoints/step_000002", 2)
    newest = checkpoint("checkpoints/step_000004", 4)
    checkpoint("checkpoints/step_000006", 6, complete=False)  # still being written
    assert latest_complete_checkpoint(tmp_path) == newest
    shutil.copytree(newest, tmp_path / "final")
    assert latest_complete_checkpoint(tmp_path) == tmp_path / "final"
    (tmp_path / "final" / "model.bin").write_bytes(b"short")  # no longer what its manifest says
    assert latest_complete_checkpoint(tmp_path) == newest
