"""Tokens per second of the run on a GPU type and count: measured beats estimated. No I/O.

In order:
1. **measured**: throughput-ledger records of this model (same ``model_config_hash``, else the
   same FLOPs per token within 1%) on this GPU model and count. The figure is their median;
   with two or more, the 20th percentile (a slow host's speed) prices the pessimistic P80 total.
2. **estimated from the same GPU at another count**: its median per GPU x the count, times
   ``multi_gpu_efficiency`` when scaling up (DDP's all-reduce is not free).
3. **estimated, roofline**: the GPU's peak bf16 FLOP/s (runcontract/gpu_specs.py) x the MFU
   measured on the nearest measured GPU (closest peak FLOP/s, any model: MFU carries across
   models of this size far better than tokens/s), else ``default_mfu``; / FLOPs per token; x count
   (x ``multi_gpu_efficiency`` above one GPU).
A GPU with no measurement and no known peak has no speed: the plan leaves its offers out, saying so.

GPU names are compared through ``canonical_gpu_name`` ("NVIDIA GeForce RTX 4090" = "RTX 4090").
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from runcontract.gpu_specs import canonical_gpu_name, peak_bf16_flops

MEASURED, ESTIMATED = "measured", "estimated"


@dataclass(frozen=True)
class Speed:
    tokens_per_second: float
    source: str                                    # MEASURED | ESTIMATED
    basis: str                                     # where the figure came from, in words
    pessimistic_tokens_per_second: Optional[float] = None  # the 20th percentile of >= 2 measurements


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _positive(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


class SpeedModel:
    """Speeds for one model (its FLOPs per token and config hash) from the ledger's records."""

    def __init__(self, records: Iterable[dict[str, Any]], flops_per_token: float, model_hash: Optional[str] = None,
                 default_mfu: float = 0.35, multi_gpu_efficiency: float = 0.9):
        self.flops_per_token = flops_per_token
        self.model_hash = model_hash
        self.default_mfu = default_mfu
        self.efficiency = multi_gpu_efficiency
        self.same_model: dict[tuple[str, int], list[float]] = {}   # (gpu, count) -> box tokens/s of this model
        self.mfus: dict[str, list[float]] = {}                      # gpu -> MFUs of any model
        for r in records:
            tps, count = _positive(r.get("tokens_per_second")), r.get("gpu_count")
            name = r.get("gpu_name")
            if tps is None or not isinstance(count, int) or count < 1 or not isinstance(name, str):
                continue  # a record this version cannot read is left out, never fatal
            gpu = canonical_gpu_name(name)
            if self._is_this_model(r):
                self.same_model.setdefault((gpu, count), []).append(tps)
            mfu = _positive(r.get("mfu"))
            if mfu is None:
                peak, fpt = peak_bf16_flops(name), _positive(r.get("flops_per_token"))
                mfu = fpt * tps / (peak * count) if peak and fpt else None
            if mfu is not None and mfu < 1:
                self.mfus.setdefault(gpu, []).append(mfu)
        self._cache: dict[tuple[str, int], Optional[Speed]] = {}  # by the name as offered: one lookup per kind of offer

    def _is_this_model(self, record: dict[str, Any]) -> bool:
        if self.model_hash and record.get("model_config_hash"):
            return record["model_config_hash"] == self.model_hash
        fpt = _positive(record.get("flops_per_token"))
        return fpt is not None and abs(fpt - self.flops_per_token) <= 0.01 * self.flops_per_token

    def speed(self, gpu_name: str, gpu_count: int) -> Optional[Speed]:
        """The speed of the run on ``gpu_count`` x ``gpu_name`` (None: nothing to go on)."""
        key = (gpu_name, gpu_count)
        if key not in self._cache:
            self._cache[key] = self._speed(canonical_gpu_name(gpu_name), gpu_count)
        return self._cache[key]

    def _speed(self, gpu: str, count: int) -> Optional[Speed]:
        measured = self.same_model.get((gpu, count))
        if measured:
            return Speed(statistics.median(measured), MEASURED, f"median of {len(measured)} measurement(s) of {count}x {gpu}",
                         percentile(measured, 20) if len(measured) >= 2 else None)
        other_counts = sorted(c for g, c in self.same_model if g == gpu)
        if other_counts:
            nearest = min(other_counts, key=lambda c: abs(c - count))
            per_gpu = statistics.median(self.same_model[(gpu, nearest)]) / nearest
            scale = self.efficiency if count > nearest else 1.0
            return Speed(per_gpu * count * scale, ESTIMATED,
                         f"{nearest}x {gpu} measured, scaled to {count}" + (f" at {scale:.0%} efficiency" if scale < 1 else ""))
        peak = peak_bf16_flops(gpu)
        if peak is None:
            return None
        mfu, basis = self._nearest_mfu(peak)
        scale = self.efficiency if count > 1 else 1.0
        tps = peak * mfu / self.flops_per_token * count * scale
        return Speed(tps, ESTIMATED, f"roofline: {peak / 1e12:,.0f} TFLOP/s x MFU {mfu:.2f} ({basis})")

    def _nearest_mfu(self, peak: float) -> tuple[float, str]:
        known = [(g, peak_bf16_flops(g)) for g in self.mfus]
        known = [(g, p) for g, p in known if p]
        if not known:
            return self.default_mfu, "default"
        gpu, _ = min(known, key=lambda gp: abs(math.log(gp[1] / peak)))
        return statistics.median(self.mfus[gpu]), f"measured on {gpu}"
