"""A Llama-style decoder in one readable file.

token embedding -> N x [RMSNorm -> grouped-query attention with rotary embeddings -> residual,
RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head (tied to the embedding by default).

The shape comes from ``runcontract.config.ModelConfig``. The layout matches Hugging Face's
``LlamaForCausalLM`` exactly (rotate_half rotary convention, no biases, the same RMSNorm), so
``trainer.modeling.hf_convert`` maps weights 1:1. The model holds no optimizer state, parallelism or
checkpoint logic; it only owns its optimizer groups, FLOP estimate and ``generate``.

Throughput levers (issue 16): Q, K and V come from one fused matmul (``model.fused_qkv``) and
the SwiGLU gate and up projections from another (``model.fused_gate_up``); checkpoints of either
layout load into either (a load hook splits or joins the tensors) and ``trainer.modeling.hf_convert``
maps both to Hugging Face's separate names. Grouped-query attention uses SDPA's ``enable_gqa``
(torch >= 2.5) instead of repeating the KV heads, and the loss can skip the full logits
(``configure_speed``, trainer/modeling/linear_cross_entropy.py).

    python -m trainer.model --model_config configs/model_100m.yaml   # prints the exact count
"""
from __future__ import annotations

import argparse
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from runcontract.config import ModelConfig
from trainer.modeling.linear_cross_entropy import DEFAULT_CHUNK_TOKENS, linear_cross_entropy

# SDPA's enable_gqa (broadcast KV heads inside the kernel) arrived in torch 2.5.
SDPA_HAS_GQA = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 like HF's LlamaRMSNorm."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_seq_len, head_dim], halves duplicated (HF's non-interleaved layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    positions = torch.arange(max_seq_len, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, T, head_dim]; cos/sin: [T, head_dim]."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Preallocated keys/values for every layer, filled left to right during ``generate``."""

    def __init__(self, config: ModelConfig):
        self.max_len = config.max_seq_len
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.pos = 0  # tokens already stored

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self.keys:  # allocated on first use, in the dtype autocast gives k and v
            B, H, _, D = k.shape
            self.keys[layer] = k.new_zeros(B, H, self.max_len, D)
            self.values[layer] = v.new_zeros(B, H, self.max_len, D)
        end = self.pos + k.size(2)
        self.keys[layer][:, :, self.pos:end] = k
        self.values[layer][:, :, self.pos:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Module):
    FUSED, PARTS = "qkv_proj", ("q_proj", "k_proj", "v_proj")

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.kv_heads
        self.head_dim = config.head_dim
        self.use_sdpa_gqa = SDPA_HAS_GQA  # configure_speed may turn it off
        self.qkv_sizes = (config.n_heads * config.head_dim, config.kv_heads * config.head_dim, config.kv_heads * config.head_dim)
        self.fused = config.fused_qkv
        if self.fused:
            self.qkv_proj = nn.Linear(config.d_model, sum(self.qkv_sizes), bias=False)
        else:
            self.q_proj = nn.Linear(config.d_model, self.qkv_sizes[0], bias=False)
            self.k_proj = nn.Linear(config.d_model, self.qkv_sizes[1], bias=False)
            self.v_proj = nn.Linear(config.d_model, self.qkv_sizes[2], bias=False)
        self.o_proj = nn.Linear(config.n_heads * config.head_dim, config.d_model, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _accept_either_layout(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x, cos, sin, layer: int = 0, cache: Optional[KVCache] = None) -> torch.Tensor:
        B, T, _ = x.shape
        if self.fused:
            q, k, v = self.qkv_proj(x).split(self.qkv_sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        mask, causal = None, True
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)
            if start > 0:  # new queries sit at positions start..start+T-1 and see every key up to themselves
                causal = False
                if T > 1:
                    q_pos = torch.arange(start, start + T, device=x.device)[:, None]
                    mask = torch.arange(k.size(2), device=x.device)[None, :] <= q_pos
        # Grouped-query attention: each KV head serves n_heads / n_kv_heads query heads
        # (head j uses KV head j // n_rep, as HF's repeat_kv does).
        # With enable_gqa SDPA does that mapping itself, without copying K and V n_rep times.
        n_rep = self.n_heads // self.n_kv_heads
        gqa = {}
        if n_rep > 1 and self.use_sdpa_gqa:
            gqa = {"enable_gqa": True}
        elif n_rep > 1:
            k = k.repeat_interleave(n_rep, dim=1)
            v = v.repeat_interleave(n_rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, **gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class SwiGLU(nn.Module):
    FUSED, PARTS = "gate_up_proj", ("gate_proj", "up_proj")

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fused = config.fused_gate_up
        if self.fused:
            self.gate_up_proj = nn.Linear(config.d_model, 2 * config.ffn_hidden, bias=False)  # gate rows, then up rows
        else:
            self.gate_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
            self.up_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(config.ffn_hidden, config.d_model, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _accept_either_layout(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


def _accept_either_layout(module: nn.Module, state_dict: dict, prefix: str) -> None:
    """Let a module with a fused projection (``module.FUSED``) or separate ones (``module.PARTS``)
    load either layout: separate weights are concatenated (rows, in order) into a fused module,
    a fused weight is split for a separate one. So checkpoints written before the fusion (issue
    16) still load. Called from ``_load_from_state_dict``, the override point every supported
    torch has (``register_load_state_dict_pre_hook`` is public only from torch 2.5)."""
    fused_key = f"{prefix}{module.FUSED}.weight"
    part_keys = [f"{prefix}{part}.weight" for part in module.PARTS]
    if module.fused and fused_key not in state_dict and all(key in state_dict for key in part_keys):
        state_dict[fused_key] = torch.cat([state_dict.pop(key) for key in part_keys], dim=0)
    elif not module.fused and fused_key in state_dict and not any(key in state_dict for key in part_keys):
        sizes = [getattr(module, part).weight.size(0) for part in module.PARTS]
        for key, tensor in zip(part_keys, state_dict.pop(fused_key).split(sizes, dim=0)):
            state_dict[key] = tensor


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x, cos, sin, layer: int = 0, cache: Optional[KVCache] = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, layer, cache)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.loss_impl, self.loss_chunk_tokens = "plain", DEFAULT_CHUNK_TOKENS  # see configure_speed
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        # Not persistent: rebuilt from the config, so checkpoints hold weights only.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # Residual output projections scaled down by depth (GPT-2 / nanoGPT).
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    # -- forward ---------------------------------------------------------------------------
    def _trunk(self, idx: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        T = idx.size(1)
        start = cache.pos if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len {self.config.max_seq_len}")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        x = self.embed(idx)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, i, cache)
        if cache is not None:
            cache.pos += T
        return self.norm(x)

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """idx [B, T] -> logits [B, T, vocab] and, given targets [B, T], the mean cross-entropy
        (targets of -1 are ignored). With targets and a fused loss (``configure_speed``) the
        logits are never built and None is returned in their place."""
        hidden = self._trunk(idx)
        if targets is not None and self.loss_impl != "plain":
            return None, linear_cross_entropy(hidden, self.lm_head.weight, targets, self.loss_impl, self.loss_chunk_tokens)
        logits = self.lm_head(hidden)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # -- throughput levers -----------------------------------------------------------------
    def configure_speed(self, loss_impl: str = "plain", loss_chunk_tokens: int = DEFAULT_CHUNK_TOKENS, sdpa_gqa: bool = True) -> "Transformer":
        """Runtime choices that change speed and memory, not the function computed:
        ``loss_impl`` plain / chunked / liger (trainer/modeling/linear_cross_entropy.py) and SDPA's
        ``enable_gqa`` (ignored where torch lacks it)."""
        self.loss_impl, self.loss_chunk_tokens = loss_impl, loss_chunk_tokens
        for layer in self.layers:
            layer.attn.use_sdpa_gqa = sdpa_gqa and SDPA_HAS_GQA
        return self

    def speed_in_effect(self) -> dict:
        """The levers as they act in this model (what a record must say): the loss resolved
        from ``auto``, and SDPA GQA only where torch has ``enable_gqa`` and there are KV heads
        to share."""
        attn = self.layers[0].attn
        return {"loss_impl": self.loss_impl, "loss_chunk_tokens": self.loss_chunk_tokens,
                "sdpa_gqa": attn.use_sdpa_gqa and attn.n_heads > attn.n_kv_heads}

    def cast_parameters(self, dtype: torch.dtype) -> "Transformer":
        """Parameters (and so the residual stream) in ``dtype``; the rotary tables stay float32."""
        cos, sin = self.rope_cos, self.rope_sin
        self.to(dtype)
        self.rope_cos, self.rope_sin = cos, sin
        return self

    # -- sizes -----------------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied head counts once). ``exclude_embeddings`` leaves out the
        token embedding and the LM head: the "non-embedding" count of the scaling-law papers."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        if exclude_embeddings:
            total -= self.embed.weight.numel()
            if not self.config.tie_embeddings:
                total -= self.lm_head.weight.numel()
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B / nanoGPT style:

            6 * N  +  12 * n_layers * d_model * seq_len

        N counts the weights taking part in matmuls: the non-embedding parameters plus the LM
        head (vocab * d_model; the embedding lookup itself is free). The second term is the
        attention score and value products (QK^T and AV: 2 matmuls, x2 FLOPs per MAC, x3 for
        forward + backward) with the full, non-causal, context counted, as PaLM does.
        """
        cfg = self.config
        n_matmul = self.num_parameters(exclude_embeddings=True) + cfg.vocab_size * cfg.d_model
        return 6.0 * n_matmul + 12.0 * cfg.n_layers * cfg.d_model * seq_len

    # -- optimizer -------------------------------------------------------------------------
    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float], eps: float, device_type: str) -> torch.optim.AdamW:
        """AdamW with weight decay on 2-D weights (matmuls, embedding) only; norms get none.
        Fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **extra)

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens to idx [B, T]. temperature 0 is greedy; above 0
        samples (optionally from the top_k logits) with ``generator`` for reproducibility.
        Keys and values are cached; when the context fills, the cache restarts from the last
        half of the context (a sliding window)."""
        max_len = self.config.max_seq_len
        out = idx
        cache: Optional[KVCache] = None
        for _ in range(max_new_tokens):
            if cache is None or cache.pos >= max_len:
                window = max_len if cache is None else max_len // 2
                cache = KVCache(self.config)
                hidden = self._trunk(out[:, -window:], cache)
            else:
                hidden = self._trunk(out[:, -1:], cache)
            logits = self.lm_head(hidden[:, -1, :]).float()
            if temperature <= 0:
                next_token = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_token = torch.multinomial(probs, num_samples=1, generator=generator)
            out = torch.cat((out, next_token), dim=1)
        return out


def describe(config: ModelConfig) -> str:
    """One paragraph with the exact parameter counts and FLOPs of a config (built on 'meta',
    so even a large model costs no memory)."""
    with torch.device("meta"):
        model = Transformer(config)
    total = model.num_parameters()
    body = model.num_parameters(exclude_embeddings=True)
    seq = config.max_seq_len
    return (
        f"parameters: {total:,} ({total / 1e6:.1f}M; non-embedding {body:,}); "
        f"d_model {config.d_model}, {config.n_layers} layers, {config.n_heads} heads / {config.kv_heads} KV heads, "
        f"SwiGLU {config.ffn_hidden}, vocab {config.vocab_size}, tied head: {config.tie_embeddings}; "
        f"training FLOPs per token at seq_len {seq}: {model.flops_per_token(seq):.4g}"
    )


def main(argv: Optional[list[str]] = None) -> None:
    from trainer.cli_args import add_config_args, load_configs

    parser = argparse.ArgumentParser(description="Print the exact parameter count of a model config.")
    add_config_args(parser, model=True)
    args = parser.parse_args(argv)
    model_cfg, _, _ = load_configs(args)
    print(describe(model_cfg))
