"""``launcher plan`` (and ``launcher up`` renting its pick) against the strict fake providers over HTTP.

The fakes carry what the published APIs carry: Vast's offers ``gpu_ram`` (MB per GPU) and
``machine_id``, RunPod v2's catalog ``memory`` (GB) and ``maxCount``; RunPod's price per GPU
leaves storage out, so the plan adds the pod's disk and volume at $0.10/GB/month.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from launcher.plan.ledger import append_throughput
from launcher.plan.plan_json import PlanJson
from launcher.store.file import FileStore
from tests.harness.fake_providers import API_KEY, FakeRunPod, FakeVast, default_vast_offers
from tests.launcher.test_up_with_fake_provider import _launcher, _project_copy

HASH_OF_100M = None  # filled by the fixture: the ledger's records are for configs/model_100m.yaml


def vast_offers() -> list[dict]:
    """The default 4090 asks plus a cheaper-per-hour RTX 3090 and a 12 GB card too small for the run."""
    offers = default_vast_offers()
    base = {k: v for k, v in offers[0].items() if k not in ("id", "ask_contract_id", "machine_id")}
    offers.append(dict(base, id=3101, ask_contract_id=3101, machine_id=53101, gpu_name="RTX 3090", gpu_ram=24576,
                       dph_base=0.12, storage_cost=0.1, geolocation="Cheap, US"))
    offers.append(dict(base, id=3102, ask_contract_id=3102, machine_id=53102, gpu_name="RTX 3060", gpu_ram=12288,
                       dph_base=0.05, storage_cost=0.1, geolocation="Small, US"))
    return offers


def write_plan_config(project: Path, vast: FakeVast, runpod: FakeRunPod, key: Path, **box_extra) -> Path:
    config = {
        "box": {"kind": "plan", "identity_file": str(key),
                "candidates": [{"kind": "vastai", "gpu_name": "RTX 4090", "gpu_count": [1, 2]},
                               {"kind": "vastai", "gpu_name": "RTX 3090"},
                               {"kind": "vastai", "gpu_name": "RTX 3060"},
                               {"kind": "runpod", "gpu_name": "NVIDIA GeForce RTX 4090"},
                               {"kind": "ssh", "host": "gpu.example", "user": "me", "hourly_rate": 0.9,
                                "gpu_name": "RTX 4090", "gpu_memory_gb": 24}],
                "vastai": {"api_base": vast.api_base, "disk_gb": 80, "poll_interval_s": 0.05, "terminate_timeout_s": 20},
                "runpod": {"api_base": runpod.rest_base, "poll_interval_s": 0.05, "terminate_timeout_s": 20},
                **box_extra},
        "run": {"name": "llama100m", "model_config": "configs/model_100m.yaml", "train_config": "configs/train_100m.yaml",
                "data_config": "configs/data_c4_wiki.yaml", "tokenizer": {"vocab_size": 32000}},
        "storage": {"url": "file://.launcher/store"},
        "budget": {"hourly_rate": 0, "max_cost": 5.0},
    }
    path = project / "configs" / "plan_test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def model_hash() -> str:
    from runcontract.config import SECTIONS, ModelConfig
    from runcontract.configlib import load_config
    from tests.harness.paths import REPO

    return load_config(ModelConfig, REPO / "configs/model_100m.yaml", [], "model", SECTIONS).config_hash()


def seed_ledger(project: Path) -> None:
    store = FileStore(project / ".launcher" / "store")
    for gpu, tps in (("NVIDIA GeForce RTX 4090", 90_000), ("NVIDIA GeForce RTX 4090", 94_000),
                     ("NVIDIA GeForce RTX 3090", 31_000)):
        append_throughput(store, {"gpu_name": gpu, "gpu_count": 1, "tokens_per_second": tps, "model_config_hash": model_hash(),
                                  "provider": "vastai", "setup_seconds": 1800})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = _project_copy(tmp_path / "project")
    seed_ledger(project)
    (tmp_path / "id_ed25519").write_text("unused\n")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITest test@laptop\n")
    return project


def env_for(tmp_path: Path) -> dict:
    return {"RUNPOD_API_KEY": API_KEY, "VAST_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def test_plan_json_ranks_every_providers_offers_by_dollars_for_the_run(project: Path, tmp_path: Path):
    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519")
        out = _launcher(project, env_for(tmp_path), "plan", "--json", "--config", str(config), timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        result = PlanJson.model_validate_json(out.stdout)
        searches = vast.calls("POST", "/bundles/")
    assert {s.body["limit"] for s in searches} == {1000}  # every offer, not the few `up` shows
    assert {(s.body["gpu_name"]["eq"], s.body["num_gpus"]["eq"]) for s in searches} == {
        ("RTX 4090", 1), ("RTX 4090", 2), ("RTX 3090", 1), ("RTX 3060", 1)}
    rows = result.offers
    assert [r.total_cost for r in rows] == sorted(r.total_cost for r in rows)
    for r in rows:
        assert r.total_cost == pytest.approx(r.price_per_hour * (r.train_hours + r.setup_hours), rel=1e-9)
        assert r.within_budget == (r.total_cost <= 5.0)
    by_id = {r.offer_id: r for r in rows}
    # the 3090 is the cheapest per hour among the fitting asks, not per run: 31k tokens/s against 92k
    cheapest_hourly = min(rows, key=lambda r: r.price_per_hour)
    assert cheapest_hourly.gpu_name == "RTX 3090" and rows[0].offer_id != cheapest_hourly.offer_id
    # first: the $0.15/h two-GPU ask, its speed estimated from the measured 4090 (2 x 92k x 0.9)
    assert rows[0].offer_id == "3007" and rows[0].tokens_per_second_source == "estimated"
    assert rows[0].tokens_per_second == pytest.approx(2 * 92_000 * 0.9)
    single = [r for r in rows if r.gpu_count == 1]
    assert single[0].gpu_name == "RTX 4090" and single[0].tokens_per_second_source == "measured"
    assert single[0].tokens_per_second == 92_000 and single[0].total_cost_p80 > single[0].total_cost
    assert rows.index(by_id["3101"]) > rows.index(single[0])
    assert by_id["3101"].tokens_per_second_source == "measured" and by_id["3101"].total_cost_p80 is None
    # an RTX 3060 fits (the run needs ~3 GiB at micro-batch 1) but has no measurement and no known peak
    assert "3102" not in by_id and any("RTX 3060: no measurement" in s for s in result.skipped)
    # Vast's price includes the 80 GB disk; RunPod's adds 40 GB container disk + 60 GB volume at $0.10/GB/month
    assert by_id["3003"].price_per_hour == pytest.approx(0.34 + 0.10 * 80 / 720, abs=1e-6)
    assert by_id["COMMUNITY/NVIDIA GeForce RTX 4090/1"].price_per_hour == pytest.approx(0.34 + 100 * 0.10 / 730)
    assert by_id["SECURE/NVIDIA GeForce RTX 4090/1"].price_per_hour == pytest.approx(0.69 + 100 * 0.10 / 730)
    assert by_id["me@gpu.example:22"].price_per_hour == 0.9 and by_id["me@gpu.example:22"].setup_hours == 0.5
    assert by_id["3003"].setup_hours == 0.5 and by_id["3003"].gpu_memory_gb == pytest.approx(23.99, abs=0.01)
    assert result.target_tokens == 2_000_000_000 and result.remaining_tokens == 2_000_000_000


def test_plan_leaves_out_gpus_too_small_and_says_so(project: Path, tmp_path: Path):
    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519")
        out = _launcher(project, env_for(tmp_path), "plan", "--json", "--config", str(config),
                        "--set", "run.set=[train.micro_batch_size=64]", timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        result = PlanJson.model_validate_json(out.stdout)
    assert result.memory_needed_gb > 24
    assert not [r for r in result.offers if r.gpu_name in ("RTX 3060", "RTX 4090", "RTX 3090")]
    assert any("RTX 3060 (12 GiB)" in s for s in result.skipped)


def test_plan_table_and_a_provider_that_does_not_answer(project: Path, tmp_path: Path):
    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519")
        env = {**env_for(tmp_path), "RUNPOD_API_KEY": "wrong-key"}
        out = _launcher(project, env, "plan", "--config", str(config), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "RTX 4090" in out.stdout and "(m)" in out.stdout and "(est)" in out.stdout
    assert "left out" in out.stdout and "runpod NVIDIA GeForce RTX 4090 x1: not listed" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr and "wrong-key" not in out.stdout + out.stderr


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_up_rents_the_plans_pick_and_down_goes_by_the_record(project: Path, tmp_path: Path):
    """The cheapest run (the $0.15/h two-GPU ask), said why in one line; its SSH never answers here, so up
    fails saying it still bills; `launcher down` with the candidates config terminates it by the record."""
    env = env_for(tmp_path)
    with FakeVast(offers=vast_offers(), ssh_host="127.0.0.1", ssh_port=closed_port()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519")
        data = yaml.safe_load(config.read_text())
        data["box"]["vastai"]["ready_timeout_s"] = 3
        config.write_text(yaml.safe_dump(data))
        up = _launcher(project, env, "up", "--yes", "--config", str(config), timeout=120)
        out = up.stdout + up.stderr
        assert up.returncode != 0 and "Traceback" not in out, out
        assert [r.path for r in vast.calls("PUT")] == ["/api/v0/asks/3007/"] and not runpod.calls("POST")
        line = next(l for l in up.stdout.splitlines() if l.startswith("Renting vastai 3007"))
        assert "2x RTX 4090" in line and "for the run" in line and "estimated" in line and "tokens/s" in line
        assert "still running and billing" in out and "launcher down" in out
        state = json.loads((project / ".launcher" / "state.json").read_text())
        assert state["instance"]["provider"] == "vastai" and state["instance"]["id"] == "7000001"
        assert state["plan"]["offer_id"] == "3007" and state["plan"]["host"] == "53007"
        assert state["plan"]["tokens_per_second_source"] == "estimated"

        status = _launcher(project, env, "status", "--json", timeout=120)
        assert "box.kind" not in status.stdout + status.stderr  # the candidates config is not refused
        down = _launcher(project, env, "down", "--config", str(config), timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert vast.alive() == [] and "billing stopped" in down.stdout


def test_up_offer_rents_the_row_named_and_refuses_one_not_in_the_plan(project: Path, tmp_path: Path):
    env = env_for(tmp_path)
    with FakeVast(offers=vast_offers(), ssh_host="127.0.0.1", ssh_port=closed_port()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519")
        missing = _launcher(project, env, "up", "--yes", "--offer", "9999", "--config", str(config), timeout=120)
        assert missing.returncode != 0 and "--offer 9999 is not among the plan's offers" in missing.stdout + missing.stderr
        assert not vast.calls("PUT") and not (project / ".launcher" / "state.json").exists()
        data = yaml.safe_load(config.read_text())
        data["box"]["runpod"]["ready_timeout_s"] = 3
        config.write_text(yaml.safe_dump(data))
        up = _launcher(project, env, "up", "--yes", "--offer", "COMMUNITY/NVIDIA GeForce RTX 4090/1", "--config",
                       str(config), timeout=120)
        assert up.returncode != 0, up.stdout + up.stderr
        [create] = runpod.calls("POST", "/v2/pods")
        assert create.body["cloud"] == "COMMUNITY" and create.body["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1, "minCudaVersion": "12.8"}
        assert "Renting runpod COMMUNITY/NVIDIA GeForce RTX 4090/1" in up.stdout and not vast.calls("PUT")
        down = _launcher(project, env, "down", timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert runpod.alive() == []


def test_no_offer_within_budget_rents_nothing_and_says_what_to_change(project: Path, tmp_path: Path):
    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519")
        up = _launcher(project, env_for(tmp_path), "up", "--yes", "--config", str(config), "--set", "budget.max_cost=0.5",
                       timeout=120)
    out = up.stdout + up.stderr
    assert up.returncode != 0 and "no offer runs within budget.max_cost $0.50" in out and "Traceback" not in out
    assert not vast.calls("PUT") and not runpod.calls("POST")


def test_a_resumed_run_is_priced_for_the_tokens_it_has_left(project: Path, tmp_path: Path):
    store = FileStore(project / ".launcher" / "store")
    store.write_bytes("llama100m/status.json", json.dumps({"state": "stopped", "tokens_seen": 1_500_000_000}).encode())
    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, tmp_path / "id_ed25519")
        out = _launcher(project, env_for(tmp_path), "plan", "--json", "--config", str(config), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    result = PlanJson.model_validate_json(out.stdout)
    assert result.remaining_tokens == 500_000_000
    assert all(r.train_hours == pytest.approx(5e8 / r.tokens_per_second / 3600) for r in result.offers)


@pytest.mark.slow
def test_up_takes_an_ssh_host_of_yours_when_it_is_the_cheapest_run(sshd, box_python: Path, remote_workdir: str,
                                                                    project: Path, tmp_path: Path):
    """Free SSH host against rented 4090s: the plan takes the host, up records and bootstraps it over the real
    sshd, run-time commands act on it through the candidates config, and down leaves it running."""
    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        config = write_plan_config(project, vast, runpod, Path(str(sshd.identity_file)), python=str(box_python),
                                   workdir=remote_workdir)
        data = yaml.safe_load(config.read_text())
        data["box"]["candidates"][-1] = {"kind": "ssh", "host": sshd.host, "port": sshd.port, "user": sshd.user,
                                         "hourly_rate": 0.0, "gpu_name": "RTX 4090"}
        config.write_text(yaml.safe_dump(data))
        env = env_for(tmp_path)
        up = _launcher(project, env, "up", "--yes", "--config", str(config))
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Renting ssh {sshd.user}@{sshd.host}:{sshd.port}" in up.stdout and "$0.00 for the run" in up.stdout
        assert not vast.calls("PUT") and not runpod.calls("POST")
        state = json.loads((project / ".launcher" / "state.json").read_text())
        assert state["instance"]["provider"] == "static" and state["box"]["kind"] == "ssh"
        assert state["box"]["port"] == sshd.port and state["plan"]["tokens_per_second_source"] == "measured"
        ssh = _launcher(project, env, "ssh", "--", "echo", "on-the-box")
        assert ssh.returncode == 0 and "on-the-box" in ssh.stdout, ssh.stdout + ssh.stderr
        down = _launcher(project, env, "down", "--config", str(config))
        assert down.returncode == 0 and "keeps running (it is yours)" in down.stdout, down.stdout + down.stderr


def test_provider_offers_carry_gpu_memory_storage_and_host():
    from launcher.config import RunpodConfig, VastaiConfig
    from launcher.providers.runpod import RunpodProvider
    from launcher.providers.vastai import VastaiProvider

    with FakeVast(offers=vast_offers()) as vast, FakeRunPod() as runpod:
        pod = RunpodProvider(RunpodConfig(api_base=runpod.rest_base, container_disk_gb=40, volume_gb=60), API_KEY)
        offers = pod.offers(limit=10)
        assert {o.gpu_memory_gb for o in offers} == {24.0} and {o.cloud for o in offers} == {"SECURE", "COMMUNITY"}
        assert all(o.billed_per_hour == pytest.approx(o.hourly_price + 100 * 0.10 / 730) for o in offers)
        too_many = RunpodProvider(RunpodConfig(api_base=runpod.rest_base, gpu_count=16), API_KEY)
        assert too_many.offers() == []  # maxCount is 8 in both clouds
        [ask] = [o for o in VastaiProvider(VastaiConfig(api_base=vast.api_base), API_KEY).offers(limit=1000)
                 if o.offer_id == "3003"]
        assert ask.gpu_memory_gb == pytest.approx(24564 / 1024) and ask.host == "53003" and ask.storage_per_hour == 0
