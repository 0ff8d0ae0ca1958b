"""Device and numeric-precision helpers: which autocast to use, and the peak FLOPs for MFU
(the table itself is trainer/gpu_specs.py).

bf16 autocast on CUDA (when the GPU supports it), plain fp32 on CPU.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from runcontract.errors import UserError
from trainer.gpu_specs import peak_bf16_flops

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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"
