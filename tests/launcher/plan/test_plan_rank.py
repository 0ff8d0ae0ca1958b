"""The plan as a pure function, tested with tables: $ per run, not $ per hour, decides."""
from __future__ import annotations

import math

import pytest

from launcher.plan.memory import GIB, flops_per_token, parameter_count, run_memory_bytes
from launcher.plan.rank import PlanOffer, RunNeeds, plan, setup_hours_from_ledger
from launcher.plan.speed import ESTIMATED, MEASURED, SpeedModel, percentile
from runcontract.config import ModelConfig

FPT = 7.0e8          # FLOPs per token of the 100M model at seq 1024, roughly
HASH = "model100m"


def measured(gpu: str, tps: float, count: int = 1, **extra) -> dict:
    return {"gpu_name": gpu, "gpu_count": count, "tokens_per_second": tps, "model_config_hash": HASH,
            "flops_per_token": FPT, **extra}


def needs(**kw) -> RunNeeds:
    base = dict(run="r", target_tokens=2_000_000_000, memory_bytes=10 * GIB, max_cost=3.0, default_setup_hours=0.5)
    return RunNeeds(**{**base, **kw})


def test_the_cheapest_per_hour_is_not_the_cheapest_per_run():
    offers = [
        PlanOffer("vastai", "1", "RTX 3090", 1, 0.20, 24.0),   # cheapest $/h, slow
        PlanOffer("vastai", "2", "RTX 4090", 1, 0.40, 24.0),
        PlanOffer("runpod", "SECURE/NVIDIA H100 80GB HBM3/1", "H100 80GB HBM3", 1, 2.50, 80.0),
    ]
    ledger = [measured("NVIDIA GeForce RTX 3090", 30_000), measured("NVIDIA GeForce RTX 4090", 92_000),
              measured("NVIDIA H100 80GB HBM3", 330_000)]
    result = plan(offers, needs(), SpeedModel(ledger, FPT, HASH))
    ids = [r.offer_id for r in result.offers]
    assert ids[0] == "2"                       # the 4090 at $0.40/h: 6.0 h + setup
    assert ids.index("1") > ids.index("2")     # the $0.20/h 3090 costs more for the run
    for row in result.offers:
        assert row.total_cost == pytest.approx(row.price_per_hour * (row.train_hours + row.setup_hours), rel=1e-12)
        assert row.train_hours == pytest.approx(2e9 / row.tokens_per_second / 3600)
        assert row.tokens_per_second_source == MEASURED
    assert [r.total_cost for r in result.offers] == sorted(r.total_cost for r in result.offers)
    cheapest_hourly = min(offers, key=lambda o: o.price_per_hour)
    assert result.offers[0].offer_id != cheapest_hourly.offer_id
    assert result.offers[0].within_budget and not [r for r in result.offers if r.offer_id == "1"][0].within_budget


def test_measured_beats_estimated_and_estimates_say_so():
    ledger = [measured("RTX 4090", 50_000, mfu=0.2)]  # a slow measured 4090
    model = SpeedModel(ledger, FPT, HASH, default_mfu=0.5)
    assert model.speed("NVIDIA GeForce RTX 4090", 1).source == MEASURED
    assert model.speed("NVIDIA GeForce RTX 4090", 1).tokens_per_second == 50_000
    # an unmeasured L40S: its peak x the MFU of the nearest measured GPU (the 4090's 0.2), not the default
    l40s = model.speed("L40S", 1)
    assert l40s.source == ESTIMATED and l40s.tokens_per_second == pytest.approx(362e12 * 0.2 / FPT)
    assert "MFU 0.20" in l40s.basis and "RTX 4090" in l40s.basis
    # the same GPU at another count: scaled per GPU, with the multi-GPU efficiency
    two = model.speed("RTX 4090", 2)
    assert two.source == ESTIMATED and two.tokens_per_second == pytest.approx(2 * 50_000 * 0.9)
    # nothing measured at all: the default MFU
    empty = SpeedModel([], FPT, HASH, default_mfu=0.4).speed("RTX 4090", 1)
    assert empty.tokens_per_second == pytest.approx(165.2e12 * 0.4 / FPT) and "default" in empty.basis
    # an unknown GPU with no measurement has no speed: left out, and said so
    result = plan([PlanOffer("vastai", "9", "Mystery GPU", 1, 0.1, 48.0)], needs(), SpeedModel([], FPT, HASH))
    assert result.offers == [] and "Mystery GPU" in result.skipped[0]


def test_another_models_measurement_gives_only_its_mfu():
    ledger = [{"gpu_name": "RTX 4090", "gpu_count": 1, "tokens_per_second": 900_000, "model_config_hash": "tiny",
               "flops_per_token": 1e7, "mfu": 0.3}]
    speed = SpeedModel(ledger, FPT, HASH).speed("RTX 4090", 1)
    assert speed.source == ESTIMATED and speed.tokens_per_second == pytest.approx(165.2e12 * 0.3 / FPT)


def test_p80_total_beside_the_median_when_the_ledger_has_spread():
    ledger = [measured("RTX 4090", tps) for tps in (60_000, 80_000, 90_000, 92_000, 95_000)]
    result = plan([PlanOffer("vastai", "1", "RTX 4090", 1, 0.5, 24.0)], needs(), SpeedModel(ledger, FPT, HASH))
    row = result.offers[0]
    assert row.tokens_per_second == 90_000
    slow = percentile([60_000, 80_000, 90_000, 92_000, 95_000], 20)
    assert slow == pytest.approx(76_000)
    assert row.total_cost_p80 == pytest.approx(0.5 * (2e9 / slow / 3600 + 0.5))
    assert row.total_cost_p80 > row.total_cost
    one = plan([PlanOffer("vastai", "1", "RTX 4090", 1, 0.5, 24.0)], needs(), SpeedModel(ledger[:1], FPT, HASH))
    assert one.offers[0].total_cost_p80 is None


def test_offers_too_small_for_the_run_are_left_out_and_counted():
    offers = [PlanOffer("vastai", "1", "RTX 3060", 1, 0.05, 12.0), PlanOffer("vastai", "2", "RTX 4090", 1, 0.4, 24.0),
              PlanOffer("ssh", "me@gpu:22", "RTX 4090", 1, 0.0, None)]
    result = plan(offers, needs(memory_bytes=16 * GIB), SpeedModel([measured("RTX 3060", 20_000)], FPT, HASH))
    assert [r.offer_id for r in result.offers] == ["me@gpu:22", "2"]  # unknown memory is kept; free box first
    assert result.skipped[0].startswith("1 offer(s) of RTX 3060 (12 GiB)")


def test_setup_hours_from_past_runs_per_provider_else_the_default():
    records = [{"provider": "vastai", "setup_seconds": 1800}, {"provider": "vastai", "setup_seconds": 3600},
               {"provider": "vastai", "setup_seconds": 5400}, {"provider": "runpod", "setup_seconds": None}]
    by_provider = setup_hours_from_ledger(records)
    assert by_provider == {"vastai": 1.0}
    offers = [PlanOffer("vastai", "1", "RTX 4090", 1, 0.4, 24.0), PlanOffer("runpod", "x", "RTX 4090", 1, 0.4, 24.0)]
    result = plan(offers, needs(setup_hours_by_provider=by_provider, default_setup_hours=0.25, tokens_done=1_000_000_000),
                  SpeedModel([measured("RTX 4090", 100_000)], FPT, HASH))
    hours = {r.provider: r.setup_hours for r in result.offers}
    assert hours == {"vastai": 1.0, "runpod": 0.25}
    assert result.remaining_tokens == 1_000_000_000
    assert all(r.train_hours == pytest.approx(1e9 / 100_000 / 3600) for r in result.offers)


def test_memory_and_flops_follow_the_model_shape():
    model = ModelConfig(n_kv_heads=4)  # configs/model_100m.yaml's shape
    assert 99e6 < parameter_count(model) < 101e6
    assert run_memory_bytes(model, 1024, 16) > run_memory_bytes(model, 1024, None)
    assert run_memory_bytes(model, 1024, None) == run_memory_bytes(model, 1024, 1)
    assert math.isclose(flops_per_token(model, 1024), 6 * (parameter_count(model)) + 12 * 12 * 768 * 1024)


@pytest.mark.parametrize("shape", [dict(n_kv_heads=4), dict(d_model=64, n_layers=2, n_heads=4, ffn_hidden=96, vocab_size=512,
                                                            tie_embeddings=False)])
def test_the_torch_free_counts_match_the_trainers_model(shape):
    torch = pytest.importorskip("torch")
    from trainer.modeling.transformer import Transformer

    model = ModelConfig(**shape)
    with torch.device("meta"):
        built = Transformer(model)
    assert parameter_count(model) == built.num_parameters()
    assert flops_per_token(model, 256) == pytest.approx(built.flops_per_token(256))


def test_plan_json_is_documented_field_for_field():
    import re

    from launcher.plan.plan_json import PlanJson, PlanRow
    from tests.harness.paths import REPO

    doc = (REPO / "docs" / "plan-json.md").read_text()
    plan_part, row_part = doc.split("## An offer")
    fields = lambda text: re.findall(r"^\| `([a-z_0-9]+)` \|", text, re.M)  # noqa: E731
    assert fields(plan_part) == list(PlanJson.model_fields)
    assert fields(row_part) == list(PlanRow.model_fields)


@pytest.mark.parametrize("name, canonical", [
    ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("RTX 4090", "RTX 4090"), ("RTX_4090", "RTX 4090"),
    ("NVIDIA H100 80GB HBM3", "H100"), ("H100 PCIe", "H100 PCIe"), ("A100 SXM4", "A100"), ("A10", "A10"),
    ("Mystery  GPU", "Mystery GPU"),
])
def test_one_name_per_gpu_model_whoever_spells_it(name, canonical):
    from runcontract.gpu_specs import canonical_gpu_name

    assert canonical_gpu_name(name) == canonical
