"""After the benchmark: every measurement joins the throughput ledger; a box slower than 0.8 x the
plan's figure is reported, and with box.release_slow_hosts released (confirmed by the strict fake
provider), its host avoided, and the next offer rented within budget.max_cost."""
from __future__ import annotations

import io
import time
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from launcher.box.factory import box_spec, open_box
from launcher.config import load_launcher_config
from launcher.plan.canary import SlowHostReplaced, after_benchmark, slow_verdict
from launcher.plan.ledger import read_throughput
from launcher.plan.slow_hosts import load_avoided
from launcher.run.context import RunContext
from launcher.state import load_state, resolved_config, update_state
from launcher.store.file import FileStore
from runcontract.run_folder import THROUGHPUT_FILE, run_rel
from tests.harness.fake_providers import API_KEY, FakeRunPod, FakeVast
from tests.launcher.plan.test_plan_command import env_for, vast_offers, write_plan_config
from tests.launcher.test_up_with_fake_provider import _project_copy


def throughput(tps: float) -> dict:
    return {"tokens_per_sec": tps, "device_name": "NVIDIA GeForce RTX 4090", "device_type": "cuda", "device_count": 1,
            "model_config_hash": "abc", "flops_per_token": 7e8, "mfu": 0.3, "micro_batch_size": 16, "seq_len": 1024,
            "torch_version": "2.4.0", "measured_at": "2026-12-03T08:00:00Z"}


def context(project: Path, config, console: Console) -> RunContext:
    local = config.model_copy(update={"box": config.box.model_copy(update={"kind": "local"})})
    box = open_box(box_spec(local, project), project)
    return RunContext(config=config, project_root=project, box=box, console=console)


def write_throughput(project: Path, run: str, tps: float) -> None:
    path = project / run_rel(run) / THROUGHPUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(throughput(tps)))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = _project_copy(tmp_path / "project")
    (tmp_path / "id_ed25519").write_text("unused\n")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITest test@laptop\n")
    return project


def test_slow_verdict_compares_per_gpu_against_0_8_of_the_plan():
    promise = {"tokens_per_second": 180_000, "offer_id": "1", "tokens_per_second_source": "estimated"}
    assert slow_verdict(promise, {"tokens_per_second": 80_000, "gpu_count": 1}, box_gpus=2) is None   # 80k >= 0.8 x 90k
    verdict = slow_verdict(promise, {"tokens_per_second": 70_000, "gpu_count": 1}, box_gpus=2)
    assert verdict.startswith("canary: the benchmark measured 70,000 tokens/s per GPU, 78% of the 90,000")
    assert slow_verdict({"offer_id": "1"}, {"tokens_per_second": 1.0, "gpu_count": 1}, box_gpus=1) is None


def test_every_benchmark_joins_the_ledger_and_a_slow_box_is_reported(project: Path):
    config = load_launcher_config(project / "configs" / "quickstart.yaml")
    out = io.StringIO()
    ctx = context(project, config, Console(file=out, width=200))
    write_throughput(project, ctx.run_name, 5_000)
    assert after_benchmark(ctx).startswith("5,000 tokens/s on 1x NVIDIA GeForce RTX 4090 added to the throughput ledger")
    # a box the plan chose, promised 10,000 tokens/s: the canary says it is slow, once
    update_state(project, plan={"offer_id": "3003", "tokens_per_second": 10_000, "tokens_per_second_source": "measured",
                                "host": "53003", "rented_at": time.time() - 1800})
    after_benchmark(ctx)
    assert "canary: the benchmark measured 5,000 tokens/s per GPU, 50% of the 10,000" in out.getvalue()
    assert "training goes on here" in out.getvalue()
    assert load_state(project)["plan"]["canary"].startswith("canary:")
    records = read_throughput(FileStore(project / ".launcher" / "store"))
    assert [r["tokens_per_second"] for r in records] == [5_000, 5_000]
    assert records[0]["gpu_name"] == "NVIDIA GeForce RTX 4090" and records[0]["provider"] == "local"
    assert records[0]["setup_seconds"] is None and records[1]["setup_seconds"] > 0 and records[1]["host"] == "53003"
    out.truncate(0)
    after_benchmark(ctx)  # checked once per box
    assert "canary" not in out.getvalue()


def test_a_slow_rented_box_is_released_its_host_avoided_and_the_next_offer_rented(project: Path, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    for key, value in env_for(tmp_path).items():
        monkeypatch.setenv(key, value)
    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        config_path = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519", release_slow_hosts=True)
        data = yaml.safe_load(config_path.read_text())
        data["box"]["candidates"] = [{"kind": "vastai", "gpu_name": "RTX 4090"}]  # one-GPU 4090 asks only
        config_path.write_text(yaml.safe_dump(data))
        monkeypatch.chdir(project)
        vast.create(3003, {"image": "img", "label": "llm-box-llama100m-abc123", "disk": 80})
        record = {"id": "7000001", "provider": "vastai", "ssh_host": "127.0.0.1", "ssh_port": 22, "ssh_user": "root",
                  "hourly_price": 0.35, "name": "llm-box-llama100m-abc123", "api_base": vast.api_base,
                  "gpu_name": "RTX 4090", "gpu_count": 1}
        update_state(project, config_path=str(config_path), instance=record,
                     plan={"offer_id": "3003", "tokens_per_second": 90_000, "tokens_per_second_source": "estimated",
                           "host": "53003", "rented_at": time.time() - 1800})
        config = resolved_config(load_launcher_config(config_path), load_state(project))
        assert config.box.kind == "vastai"
        out = io.StringIO()
        ctx = context(project, config, Console(file=out, width=200))
        ctx.config_path = str(config_path)
        write_throughput(project, ctx.run_name, 30_000)
        with pytest.raises(SlowHostReplaced) as caught:
            after_benchmark(ctx)
        assert vast.deleted and 7000001 not in vast.alive()                      # released, confirmed gone
        assert "Vast.ai confirmed instance 7000001 is gone: billing stopped" in str(caught.value)
        assert load_avoided(project) == {"53003": load_avoided(project)["53003"]}
        creates = [r.path for r in vast.calls("PUT")]
        assert len(creates) == 1 and creates[0] != "/api/v0/asks/3003/"        # the next offer, not the slow host
        state = load_state(project)
        assert state["instance"]["id"] == "7000002" and state["plan"]["offer_id"] != "3003"
        assert "Run `launcher run` again" in str(caught.value) and "Renting vastai" in out.getvalue()
