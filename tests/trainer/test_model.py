"""The model against a reference nobody here wrote (transformers' LlamaForCausalLM), plus its
sizes, FLOPs, optimizer groups and KV-cached generation."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from runcontract.config import ModelConfig
from runcontract.configlib import load_config
from trainer.modeling.hf_convert import from_hf_state_dict, to_hf_config, to_hf_state_dict
from trainer.modeling.transformer import Transformer, describe
from tests.harness.paths import REPO


def small_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=160, max_seq_len=48, rope_theta=500.0, norm_eps=1e-6)
    base.update(overrides)
    return ModelConfig(**base)


@pytest.mark.parametrize("overrides", [
    {},  # grouped-query attention, tied head
    {"n_kv_heads": None, "tie_embeddings": False},  # plain multi-head, separate head
    {"n_kv_heads": 1, "n_layers": 3},  # multi-query
])
def test_logits_match_hf_llama(overrides):
    from transformers import LlamaForCausalLM

    cfg = small_config(**overrides)
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    # Perturb the norms so a swapped or ignored norm weight cannot go unnoticed.
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(0.1 * torch.randn_like(param))
    hf = LlamaForCausalLM(to_hf_config(cfg)).eval()
    hf.load_state_dict(to_hf_state_dict(ours), strict=True)
    tokens = torch.randint(0, cfg.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = ours(tokens)
        reference = hf(tokens).logits
    assert logits.shape == reference.shape == (3, 40, cfg.vocab_size)
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    assert ours.num_parameters() == hf.num_parameters()


def test_from_hf_state_dict_round_trip():
    from transformers import LlamaForCausalLM

    cfg = small_config()
    torch.manual_seed(3)
    hf = LlamaForCausalLM(to_hf_config(cfg)).eval()
    ours = Transformer(cfg).eval()
    ours.load_state_dict(from_hf_state_dict(hf.state_dict(), cfg), strict=True)
    assert ours.lm_head.weight.data_ptr() == ours.embed.weight.data_ptr()  # still tied
    tokens = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens)[0], hf(tokens).logits, atol=1e-4, rtol=1e-4)


def test_loss_is_cross_entropy_and_causal():
    cfg = small_config()
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 20))
    targets = torch.roll(tokens, -1, dims=1)
    logits, loss = model(tokens, targets)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, cfg.vocab_size), targets.view(-1))
    torch.testing.assert_close(loss, expected)
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % cfg.vocab_size  # the future changes...
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[0][:, :10], logits[:, :10].detach())  # ...the past does not
        assert not torch.allclose(model(changed)[0][:, 10:], logits[:, 10:].detach())


def greedy_without_cache(model: Transformer, idx: torch.Tensor, steps: int) -> torch.Tensor:
    out = idx
    for _ in range(steps):
        logits, _ = model(out[:, -model.config.max_seq_len:])
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


def test_generate_with_kv_cache_equals_full_recompute():
    cfg = small_config()
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (2, 7))
    generated = model.generate(prompt, 30)
    assert generated.shape == (2, 37)
    assert torch.equal(generated, greedy_without_cache(model, prompt, 30))


def test_generate_past_the_context_keeps_going():
    cfg = small_config()
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 40))
    out = model.generate(prompt, 30)  # 70 tokens > max_seq_len 48: the cache slides
    assert out.shape == (1, 70)
    # Up to the context length the cached result equals the full recompute exactly.
    assert torch.equal(out[:, :48], greedy_without_cache(model, prompt, 8))


def test_sampling_is_reproducible_with_a_generator():
    cfg = small_config()
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (2, 5))
    a = model.generate(prompt, 12, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 12, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompt, 12, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(model.generate(prompt, 12, temperature=1.0, top_k=1), model.generate(prompt, 12))


def test_100m_config_sizes_and_flops():
    cfg = load_config(ModelConfig, REPO / "configs/model_100m.yaml")
    with torch.device("meta"):
        model = Transformer(cfg)
    assert model.num_parameters() == 100_092_672  # 12 x 768, 12 heads / 4 KV heads, SwiGLU 2048, tied, vocab 32000
    embedding = 32000 * 768
    assert model.num_parameters(exclude_embeddings=True) == 100_092_672 - embedding
    with torch.device("meta"):
        mha = Transformer(cfg.model_copy(update={"n_kv_heads": None}))
    assert mha.num_parameters() == 109_529_856  # the 109.5M of the issue
    # 6N (N = non-embedding + LM head matmul) + 12 * layers * d_model * seq_len
    assert model.flops_per_token(1024) == 6 * (model.num_parameters(exclude_embeddings=True) + embedding) + 12 * 12 * 768 * 1024
    assert "100,092,672" in describe(cfg)


def test_optimizer_decays_2d_weights_only():
    cfg = small_config(tie_embeddings=False)
    model = Transformer(cfg)
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, device_type="cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) == 2 * cfg.n_layers + 1  # the RMSNorm weights


def test_model_cli_prints_exact_count():
    result = subprocess.run([sys.executable, "-m", "trainer.model", "--model_config", "configs/model_100m.yaml"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "100,092,672" in result.stdout


def test_model_cli_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_text("d_model: 100\nn_heads: 3\n")
    result = subprocess.run([sys.executable, "-m", "trainer.model", "--model_config", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "divisible by n_heads" in result.stderr and "Traceback" not in result.stderr
