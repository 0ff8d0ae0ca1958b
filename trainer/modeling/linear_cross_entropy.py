"""LM head + cross-entropy without the full [tokens, vocab] float32 logits (issue 16, lever 2).

The plain loss keeps the whole logits tensor (and its float32 copy) alive until backward:
8 x 1024 tokens x 32k vocab is 1 GiB in fp32 per micro-batch. Here the tokens are taken in
chunks; each chunk's logits are made, turned into its loss and its gradients (with respect to
the hidden states and the head weight) right away, and dropped. Only the gradients are kept
for backward, which merely scales them. This is Liger-Kernel's fused-linear-cross-entropy
scheme (linkedin/Liger-Kernel, src/liger_kernel/ops/fused_linear_cross_entropy.py: gradients
computed in the forward pass, chunk by chunk) in plain PyTorch, so torch.compile can trace it;
litgpt's ``chunked_cross_entropy`` (Lightning-AI/litgpt, litgpt/utils.py) chunks the same way
but keeps every chunk's logits for backward.

``impl``: "plain" (full logits), "chunked" (this file) or "liger" (Liger's Triton kernel,
``LigerFusedLinearCrossEntropyLoss()(lin_weight, _input, target)``, only when installed).
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch
import torch.nn.functional as F

IMPLS = ("auto", "plain", "chunked", "liger")
DEFAULT_CHUNK_TOKENS = 4096  # 4096 x 32k fp32 logits = 512 MiB at most alive at once


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def resolve_impl(impl: str, device_type: str) -> str:
    """'auto' -> Liger's kernel on CUDA where installed, else the chunked loss."""
    if impl == "auto":
        return "liger" if device_type == "cuda" and liger_available() else "chunked"
    if impl == "liger" and not liger_available():
        raise ValueError("train.speed.loss_impl is 'liger' but liger_kernel is not installed (pip install liger-kernel); use 'auto' or 'chunked'.")
    return impl


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (-1 ignored); the
    gradients are computed in forward, chunk by chunk, in float32."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int, compute_dtype: torch.dtype):
        n = hidden.size(0)
        valid = targets != -1
        count = valid.sum().clamp(min=1).float()
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(compute_dtype)
        for start in range(0, n, chunk):
            h = hidden[start:start + chunk].to(compute_dtype)
            t = targets[start:start + chunk]
            keep = valid[start:start + chunk]
            logits = (h @ w.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            safe_t = t.clamp(min=0)
            picked = logits.gather(1, safe_t[:, None]).squeeze(1)
            loss = loss + torch.where(keep, lse - picked, 0.0).sum()
            # d loss / d logits = (softmax - onehot) / count, zero on ignored rows.
            grad_logits = torch.exp(logits - lse[:, None])
            grad_logits.scatter_add_(1, safe_t[:, None], torch.full_like(picked[:, None], -1.0))
            grad_logits = grad_logits * (keep.float() / count)[:, None]
            g = grad_logits.to(compute_dtype)
            grad_hidden[start:start + chunk] = (g @ w).float()
            grad_weight += (g.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        return loss / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_loss).to(ctx.hidden_dtype), (grad_weight * grad_loss).to(ctx.weight_dtype), None, None, None


def _chunked_loss_only(hidden, weight, targets, chunk: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """The same loss without gradients (evaluation)."""
    valid = targets != -1
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    w = weight.to(compute_dtype)
    for start in range(0, hidden.size(0), chunk):
        logits = (hidden[start:start + chunk].to(compute_dtype) @ w.t()).float()
        total = total + F.cross_entropy(logits, targets[start:start + chunk], ignore_index=-1, reduction="sum")
    return total / valid.sum().clamp(min=1).float()


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, impl: str = "chunked",
                         chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of the LM head on ``hidden`` [..., d] against ``targets`` [...] (-1
    ignored), without keeping [tokens, vocab] logits. Matmuls run in the autocast dtype when
    autocast is on (as ``nn.Linear`` would), softmax and sums in float32."""
    hidden = hidden.reshape(-1, hidden.size(-1))
    targets = targets.reshape(-1)
    device_type = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    if impl == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(ignore_index=-1)(weight.to(compute_dtype), hidden.to(compute_dtype), targets)
    if impl != "chunked":
        raise ValueError(f"unknown loss implementation {impl!r}; one of {', '.join(IMPLS)}")
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        with torch.autocast(device_type, enabled=False):  # dtypes are chosen explicitly inside
            return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens, compute_dtype)
    return _chunked_loss_only(hidden, weight, targets, chunk_tokens, compute_dtype)


def saved_bytes_for_backward(fn, parameters=()) -> tuple[object, int]:
    """Run ``fn()`` and count the bytes autograd keeps for backward (tensors saved by the
    graph, each storage once), leaving out the storages of ``parameters`` (they live anyway;
    autograd saves views of them). A device-independent stand-in for activation memory."""
    skip = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() in skip:
            return tensor
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return result, sum(seen.values())


def peak_cuda_bytes(fn, device: torch.device) -> tuple[object, Optional[int]]:
    """Run ``fn()`` and return the CUDA peak allocation during it (None off CUDA)."""
    if device.type != "cuda":
        return fn(), None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    return result, int(torch.cuda.max_memory_allocated(device))
