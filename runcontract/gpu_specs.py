"""Peak dense bf16 tensor-core FLOP/s of common GPUs, for model FLOP utilisation (MFU).

Figures are the vendor's dense numbers (no 2:4 sparsity), bf16 inputs with fp32 accumulate,
one GPU. A device is matched by a whole-word substring of ``torch.cuda.get_device_name()``
(``A10`` does not match ``A10G`` or ``A100``), first match wins, so the more specific name comes
first (``H100 PCIe`` before ``H100``). An unknown GPU or a CPU gives ``None``: no MFU
is reported rather than a wrong one (``--peak_tflops`` on the benchmark supplies a figure).
No torch here: the trainer (MFU) and the launcher (`launcher plan`'s roofline estimate of a GPU
never measured) both read this one table.
"""
from __future__ import annotations

import functools
import re
from typing import Optional

TFLOPS = 1e12

# (whole-word part of the device name, peak dense bf16 TFLOP/s). First match wins.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    # Hopper / Blackwell data-centre parts
    ("GB200", 2450.0),
    ("B200", 2250.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("H20", 148.0),
    # Ampere / Ada data-centre and workstation parts
    ("A100", 312.0),
    ("A800", 312.0),
    ("A10G", 70.0),  # AWS variant of the A10, lower clocks
    ("A10", 125.0),
    ("A30", 165.0),
    ("A40", 149.7),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 6000 Ada", 364.2),
    ("RTX A6000", 154.8),
    ("RTX A5000", 111.1),
    ("RTX A4000", 76.7),
    # GeForce (bf16 with fp32 accumulate is half the fp16-accumulate figure on these)
    ("RTX 5090", 209.5),
    ("RTX 5080", 112.6),
    ("RTX 4090", 165.2),
    ("RTX 4080", 97.5),
    ("RTX 4070 Ti", 80.2),
    ("RTX 3090 Ti", 80.0),
    ("RTX 3090", 71.0),
    ("RTX 3080 Ti", 68.2),
    ("RTX 3080", 59.5),
    # AMD Instinct (ROCm builds of torch report these names)
    ("MI300X", 1307.4),
    ("MI250X", 383.0),
    # No bf16 tensor cores: fp16 tensor-core peak, the closest meaningful figure
    ("V100", 125.0),
    ("T4", 65.0),
)


# Letters/digits may not touch the match: "A10" must not claim "A100" or "RTX A1000".
_PATTERNS = tuple((re.compile(rf"(?<![A-Za-z0-9]){re.escape(needle)}(?![A-Za-z0-9])", re.IGNORECASE), needle, tflops)
                  for needle, tflops in PEAK_BF16_TFLOPS)


@functools.lru_cache(maxsize=1024)  # the plan asks for the same few names thousands of times
def _match(device_name: Optional[str]) -> Optional[tuple[str, float]]:
    """The table's (name, TFLOP/s) row that ``device_name`` names, or None."""
    if not device_name:
        return None
    name = device_name.replace("_", " ")  # Vast's CLI spells names with underscores
    for pattern, needle, tflops in _PATTERNS:
        if pattern.search(name):
            return needle, tflops
    return None


def peak_bf16_flops(device_name: Optional[str]) -> Optional[float]:
    """Peak dense bf16 FLOP/s for ``device_name``, or None (CPU, unknown GPU, no name)."""
    row = _match(device_name)
    return None if row is None else row[1] * TFLOPS


def canonical_gpu_name(device_name: str) -> str:
    """One name per GPU model, whoever spells it: torch's "NVIDIA GeForce RTX 4090", RunPod's
    "NVIDIA GeForce RTX 4090", Vast's "RTX 4090" (or "RTX_4090") are all "RTX 4090". A GPU
    missing from the table keeps its own name, with spaces collapsed."""
    row = _match(device_name)
    return row[0] if row is not None else " ".join(device_name.replace("_", " ").split())


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: Optional[float]) -> Optional[float]:
    """Model FLOP utilisation: achieved model FLOP/s over the device's peak; None without a peak."""
    if not peak_flops or peak_flops <= 0:
        return None
    return flops_per_token * tokens_per_sec / peak_flops
