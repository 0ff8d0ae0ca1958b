"""`launcher plan` over 10,000 offers: the ranking (launcher/plan/rank.py, pure) against a naive sort
by $/h measured in the same run. Not a test: it prints a table. The target is under a second.

    python bench/plan_bench.py [--offers 10000] [--records 300] [--repeats 5]

Synthetic offers: 24 GPU models (two of them unknown to gpu_specs, so left out), counts 1-8,
prices around each model's market, memory from 12 to 80 GiB; a throughput ledger of
``--records`` measurements over half the models and counts (the rest are estimated). Rows:
- sort by $/h (baseline): ``sorted(offers, key=price)``, what ranking by $/h alone costs;
- plan (rank.plan): memory fit, speed per (GPU, count) with the ledger, $ for the run, sort;
- plan + JSON: the same and ``model_dump_json``, what `launcher plan --json` adds;
- SpeedModel from the ledger: building the speed index, once per plan.
Each figure is the best of ``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher.plan.memory import GIB, flops_per_token, run_memory_bytes  # noqa: E402
from launcher.plan.rank import PlanOffer, RunNeeds, plan  # noqa: E402
from launcher.plan.speed import SpeedModel  # noqa: E402
from runcontract.config import ModelConfig  # noqa: E402

GPUS = [  # name, GiB, typical $/h per GPU
    ("RTX 3090", 24, 0.22), ("RTX 4090", 24, 0.40), ("RTX 5090", 32, 0.70), ("RTX A6000", 48, 0.50),
    ("RTX 6000 Ada", 48, 0.80), ("L40S", 48, 0.90), ("L40", 48, 0.80), ("A40", 48, 0.40), ("A100 PCIe", 80, 1.20),
    ("A100 SXM4", 80, 1.40), ("H100 PCIe", 80, 2.00), ("H100 SXM", 80, 2.50), ("H200", 141, 3.50),
    ("RTX 4080", 16, 0.25), ("RTX 3080", 10, 0.12), ("RTX A5000", 24, 0.25), ("RTX A4000", 16, 0.15),
    ("L4", 24, 0.35), ("A10", 24, 0.30), ("V100", 16, 0.20), ("T4", 16, 0.10), ("RTX 3060", 12, 0.08),
    ("Mystery X1", 32, 0.30), ("Mystery X2", 64, 0.60),
]


def synthetic(n_offers: int, n_records: int, seed: int = 0) -> tuple[list[PlanOffer], list[dict]]:
    rng = random.Random(seed)
    offers = []
    for i in range(n_offers):
        name, gib, price = rng.choice(GPUS)
        count = rng.choice((1, 1, 1, 2, 2, 4, 8))
        offers.append(PlanOffer(rng.choice(("vastai", "runpod")), str(100000 + i), name, count,
                                round(price * count * rng.uniform(0.7, 1.6), 4), float(gib), f"loc{i % 97}"))
    records = []
    for _ in range(n_records):
        name, _, _ = rng.choice(GPUS[: len(GPUS) // 2])
        count = rng.choice((1, 2))
        records.append({"gpu_name": name, "gpu_count": count, "tokens_per_second": rng.uniform(30_000, 400_000) * count,
                        "model_config_hash": "m", "mfu": rng.uniform(0.25, 0.45), "provider": rng.choice(("vastai", "runpod")),
                        "setup_seconds": rng.uniform(600, 3600)})
    return offers, records


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--offers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = ModelConfig(n_kv_heads=4)  # the 100M shape
    offers, records = synthetic(args.offers, args.records)
    fpt = flops_per_token(model, 1024)
    needs = RunNeeds(run="llama100m", target_tokens=2_000_000_000, memory_bytes=run_memory_bytes(model, 1024, 16),
                     max_cost=15.0)

    def ranked():
        return plan(offers, needs, SpeedModel(records, fpt, "m"))

    rows = [
        ("sort by $/h (baseline)", best(lambda: sorted(offers, key=lambda o: o.price_per_hour), args.repeats)),
        ("SpeedModel from the ledger", best(lambda: SpeedModel(records, fpt, "m"), args.repeats)),
        ("plan (rank.plan)", best(ranked, args.repeats)),
        ("plan + JSON", best(lambda: ranked().model_dump_json(), args.repeats)),
    ]
    result = ranked()
    baseline = rows[0][1]
    print(f"{args.offers:,} offers, {args.records} ledger records, {len(result.offers):,} ranked "
          f"({needs.memory_bytes / GIB:.1f} GiB needed), best of {args.repeats}")
    print(f"{'what':<30} {'seconds':>10} {'x baseline':>11}")
    for name, seconds in rows:
        print(f"{name:<30} {seconds:>10.4f} {seconds / baseline:>11.1f}")
    verdict = "under" if rows[2][1] < 1.0 else "OVER"
    print(f"target: plan over {args.offers:,} offers in under 1 s: {verdict} ({rows[2][1]:.3f} s)")


if __name__ == "__main__":
    main()
