"""The GPU memory one training process needs, from the model's shape and the micro-batch.

Deliberately simple and on the generous side, so that an offer shown as fitting does fit:

    memory = 16 bytes x parameters                      (bf16 autocast over fp32 weights: fp32 weights 4,
                                                         fp32 grads 4, AdamW's two fp32 moments 8)
           + micro_batch x seq_len x n_layers x 34 x d_model bytes
                                                        (activations kept for backward, Korthikanti et al.
                                                         2022 eq. 1 in 16-bit without the attention-score
                                                         term, which SDPA/flash attention never stores)
           + micro_batch x seq_len x vocab x 6 bytes    (bf16 logits and their fp32 copy for the loss)
           + 1 GiB                                      (CUDA context, allocator slack)

With ``train.micro_batch_size`` unset the benchmark searches down for the largest micro-batch
that fits, so a run can start on any GPU that holds one sequence: the floor is 1.
"""
from __future__ import annotations

from typing import Optional

from runcontract.config import ModelConfig

GIB = 1024 ** 3
STATE_BYTES_PER_PARAM = 16
ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH = 34
LOGIT_BYTES = 6
OVERHEAD_BYTES = 1 * GIB


def parameter_count(model: ModelConfig) -> int:
    """Parameters of the Llama-style model of trainer/modeling/transformer.py (a tied head counts once)."""
    d, kv = model.d_model, model.kv_heads * model.head_dim
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * model.ffn_hidden + 2 * d  # q, k+v, o, SwiGLU, two RMSNorms
    head = 0 if model.tie_embeddings else model.vocab_size * d
    return model.vocab_size * d + model.n_layers * per_layer + d + head


def run_memory_bytes(model: ModelConfig, seq_len: int, micro_batch_size: Optional[int]) -> int:
    """Bytes of GPU memory one process needs (see the module docstring for the formula)."""
    mb = micro_batch_size or 1
    activations = mb * seq_len * model.n_layers * ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH * model.d_model
    logits = mb * seq_len * model.vocab_size * LOGIT_BYTES
    return STATE_BYTES_PER_PARAM * parameter_count(model) + activations + logits + OVERHEAD_BYTES


def fits(gpu_memory_gb: Optional[float], needed_bytes: int) -> bool:
    """Whether a GPU of ``gpu_memory_gb`` holds the run. Providers' "GB" are GiB (RunPod lists an
    RTX 4090 as 24, Vast as 24564 MB). Unknown memory is given the benefit of the doubt (the
    benchmark on the box is the real test)."""
    return gpu_memory_gb is None or gpu_memory_gb * GIB >= needed_bytes


def flops_per_token(model: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, as trainer/modeling/transformer.py's ``flops_per_token`` counts them (6 x the matmul
    weights + the attention products), computed here without torch for the roofline estimate."""
    d = model.d_model
    non_embedding = parameter_count(model) - model.vocab_size * d - (0 if model.tie_embeddings else model.vocab_size * d)
    return 6.0 * (non_embedding + model.vocab_size * d) + 12.0 * model.n_layers * d * seq_len
