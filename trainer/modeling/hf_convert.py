"""Map between ``trainer.modeling.transformer.Transformer`` and Hugging Face's ``LlamaForCausalLM``.

The two share one layout (same rotary convention, no biases, same norms), so conversion is a
renaming of tensors, plus splitting the fused projections (``qkv_proj`` into HF's q/k/v,
``gate_up_proj`` into gate/up; issue 16) and joining them again on the way back. Used by the
parity test (tests/trainer/test_model.py) and the export step.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from runcontract.config import ModelConfig

if TYPE_CHECKING:  # transformers is imported only when a conversion is asked for
    from transformers import LlamaConfig

# ours -> HF, per layer ("{i}" is the layer index)
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def to_hf_config(cfg: ModelConfig, **extra) -> "LlamaConfig":
    """A ``LlamaConfig`` describing the same network; ``extra`` (e.g. bos/eos ids) is passed on."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        **extra,
    )


def _ours_to_hf_name(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    match = _LAYER_RE.match(name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    raise KeyError(f"no Hugging Face name for parameter {name!r}")


# fused name -> the separate names it holds, in row order
_FUSED = {
    "attn.qkv_proj.weight": ("attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight"),
    "mlp.gate_up_proj.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
}


def _fused_sizes(fused: str, cfg: ModelConfig) -> tuple[int, ...]:
    if fused.startswith("attn."):
        return (cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim)
    return (cfg.ffn_hidden, cfg.ffn_hidden)


def unfuse_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict with every fused projection split into its separate tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _LAYER_RE.match(name)
        if match and match.group(2) in _FUSED:
            parts = _FUSED[match.group(2)]
            for part, piece in zip(parts, tensor.split(_fused_sizes(match.group(2), cfg), dim=0)):
                out[f"layers.{match.group(1)}.{part}"] = piece
        else:
            out[name] = tensor
    return out


def fuse_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The reverse, for the projections that ``cfg`` fuses."""
    wanted = {fused: parts for fused, parts in _FUSED.items()
              if (cfg.fused_qkv if fused.startswith("attn.") else cfg.fused_gate_up)}
    out = dict(state)
    for layer in range(cfg.n_layers):
        for fused, parts in wanted.items():
            keys = [f"layers.{layer}.{part}" for part in parts]
            if all(key in out for key in keys):
                out[f"layers.{layer}.{fused}"] = torch.cat([out.pop(key) for key in keys], dim=0)
    return out


def to_hf_state_dict(model) -> dict[str, torch.Tensor]:
    """State dict with ``LlamaForCausalLM`` names. With tied embeddings ``lm_head.weight`` is
    the same tensor as ``model.embed_tokens.weight`` (HF's own state_dict lists both)."""
    state = unfuse_state_dict(model.state_dict(), model.config)  # rope tables are non-persistent, so weights only
    return {_ours_to_hf_name(name): tensor.contiguous() for name, tensor in state.items()}


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The reverse: a ``LlamaForCausalLM`` state dict -> a state dict for ``Transformer(cfg)``.
    A tied checkpoint may lack ``lm_head.weight``; it is then taken from the embedding."""
    reverse_layer = {hf: ours for ours, hf in _LAYER_NAMES.items()}
    reverse_top = {hf: ours for ours, hf in _TOP_NAMES.items()}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in hf_state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # derived from the config
        if name in reverse_top:
            state[reverse_top[name]] = tensor
            continue
        match = _HF_LAYER_RE.match(name)
        if not match or match.group(2) not in reverse_layer:
            raise KeyError(f"unexpected tensor {name!r} in a LlamaForCausalLM state dict")
        state[f"layers.{match.group(1)}.{reverse_layer[match.group(2)]}"] = tensor
    if "lm_head.weight" not in state and cfg.tie_embeddings and "embed.weight" in state:
        state["lm_head.weight"] = state["embed.weight"]
    return fuse_state_dict(state, cfg)
