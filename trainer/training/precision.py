"""Device and numeric-precision helpers: which device, its name, which autocast to use, and
the peak FLOPs for MFU (the table itself is runcontract/gpu_specs.py).

bf16 autocast on CUDA (when the GPU supports it), plain fp32 on CPU.
"""
from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Optional

import torch

from runcontract.errors import UserError
from runcontract.gpu_specs import peak_bf16_flops

def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for a TrainConfig.precision on ``device``; None means plain fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not supported:
            raise UserError(f"train.precision is bf16 but {torch.cuda.get_device_name(device)} has no bf16 support; set train.precision to fp32 (or auto).")
        return torch.bfloat16 if supported else None
    if precision == "bf16":
        return torch.bfloat16  # CPU bf16 autocast works, though rarely faster
    return None  # auto on CPU: fp32


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_fast_matmul(device: torch.device) -> None:
    """TF32 for the fp32 matmuls left outside autocast on Ampere and newer."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def peak_flops(device: torch.device) -> Optional[float]:
    """Peak bf16 FLOP/s of one GPU, or None when unknown (CPU, unlisted GPU): no MFU then."""
    if device.type != "cuda":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested} was asked for, but torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu or run on the GPU box.")
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    """The GPU's name, or "cpu (<processor model>)": the train log's and throughput.json's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"cpu ({name})"


def device_description(device: torch.device) -> tuple[str, int]:
    """(device name, device count) as written to throughput.json."""
    return device_name(device), torch.cuda.device_count() if device.type == "cuda" else 1
