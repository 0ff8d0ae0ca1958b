"""Issue 16's throughput levers, each checked for equivalence on CPU: fused QKV / gate-up (and
old checkpoints still loading), the chunked linear cross-entropy (loss, gradients, memory kept
for backward), SDPA enable_gqa, bf16 parameters, 0 graph breaks under torch.compile and at most
one recompile between train and eval."""
from __future__ import annotations


import pytest
import torch

from runcontract.config import ModelConfig, TrainConfig
from runcontract.configlib import load_config
from trainer.modeling.hf_convert import to_hf_config, to_hf_state_dict
from trainer.modeling.linear_cross_entropy import linear_cross_entropy, saved_bytes_for_backward
from trainer.modeling.transformer import SDPA_HAS_GQA, Transformer
from trainer.training.step import prepare_model
from tests.harness.paths import REPO


def small_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=160, max_seq_len=48, rope_theta=500.0, norm_eps=1e-6)
    base.update(overrides)
    return ModelConfig(**base)


def tokens(cfg: ModelConfig, batch: int = 3, seq: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


# -- fused projections ------------------------------------------------------------------------
@pytest.mark.parametrize("fused_qkv,fused_gate_up", [(True, True), (False, False), (True, False), (False, True)])
def test_every_layout_matches_hf_llama_exactly_as_before(fused_qkv, fused_gate_up):
    from transformers import LlamaForCausalLM

    cfg = small_config(fused_qkv=fused_qkv, fused_gate_up=fused_gate_up)
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    hf = LlamaForCausalLM(to_hf_config(cfg)).eval()
    hf.load_state_dict(to_hf_state_dict(ours), strict=True)  # HF's own names, every tensor
    idx = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)


def test_checkpoints_of_either_layout_load_into_the_other():
    """A state dict written before the fusion (q/k/v, gate/up) loads into the fused model and
    computes the same function; and back."""
    separate_cfg = small_config(fused_qkv=False, fused_gate_up=False)
    torch.manual_seed(0)
    separate = Transformer(separate_cfg).eval()
    old_state = separate.state_dict()
    assert "layers.0.attn.q_proj.weight" in old_state and "layers.0.mlp.gate_proj.weight" in old_state
    fused = Transformer(small_config()).eval()
    assert "layers.0.attn.qkv_proj.weight" in fused.state_dict()
    fused.load_state_dict(old_state, strict=True)
    idx = tokens(separate_cfg)
    with torch.no_grad():
        torch.testing.assert_close(fused(idx)[0], separate(idx)[0], atol=1e-5, rtol=1e-5)
        again = Transformer(separate_cfg).eval()
        again.load_state_dict(fused.state_dict(), strict=True)
        assert torch.equal(again(idx)[0], separate(idx)[0])


def test_an_old_checkpoint_folder_loads_into_the_fused_model(tmp_path, monkeypatch):
    """Through the project's own checkpoint code: a checkpoint as written before issue 16 (its
    model config has no fused_* keys, its weights separate q/k/v and gate/up names) loads
    into today's fused model and computes the same function."""
    import json

    from trainer.training.checkpoint import load_model_from_checkpoint, save_checkpoint, TrainingState
    from safetensors import safe_open

    cfg = small_config(fused_qkv=False, fused_gate_up=False)
    torch.manual_seed(0)
    old = Transformer(cfg)
    optimizer = old.configure_optimizer(0.1, 1e-3, (0.9, 0.95), 1e-8, "cpu")
    state = TrainingState(step=1, tokens_seen=10, elapsed_s=1.0, cost_spent=0.0, val_loss=None, world_size=1,
                          data_state={}, scheduler_state={}, rng_states=[])
    with monkeypatch.context() as patch:  # the writer of before: no fused_* keys in the config
        to_dict = ModelConfig.to_dict
        patch.setattr(ModelConfig, "to_dict", lambda self: {k: v for k, v in to_dict(self).items() if not k.startswith("fused_")})
        save_checkpoint(tmp_path / "ckpt", old, optimizer, state, {"model": old.config.to_dict()})
    assert "fused_qkv" not in json.loads((tmp_path / "ckpt" / "model_config.json").read_text())
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as saved:
        assert "layers.0.attn.q_proj.weight" in saved.keys()
    model, loaded_cfg = load_model_from_checkpoint(tmp_path / "ckpt")
    assert loaded_cfg.fused_qkv and loaded_cfg.fused_gate_up  # today's default layout
    idx = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], old.eval()(idx)[0], atol=1e-5, rtol=1e-5)


# -- SDPA enable_gqa --------------------------------------------------------------------------
@pytest.mark.skipif(not SDPA_HAS_GQA, reason="torch < 2.5 has no enable_gqa")
@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_sdpa_gqa_equals_repeated_kv_heads(n_kv_heads):
    cfg = small_config(n_kv_heads=n_kv_heads)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    idx = tokens(cfg)
    with torch.no_grad():
        with_gqa = model.configure_speed(sdpa_gqa=True)(idx)[0]
        repeated = model.configure_speed(sdpa_gqa=False)(idx)[0]
        torch.testing.assert_close(with_gqa, repeated, atol=1e-5, rtol=1e-5)
        # the KV-cached path (explicit mask) too
        prompt = idx[:2, :9]
        assert torch.equal(model.configure_speed(sdpa_gqa=True).generate(prompt, 12), model.configure_speed(sdpa_gqa=False).generate(prompt, 12))


# -- chunked linear cross-entropy -------------------------------------------------------------
def _loss_and_grads(model: Transformer, idx, targets, impl: str, chunk: int = 4096, dtype=None):
    model.zero_grad(set_to_none=True)
    model.configure_speed(loss_impl=impl, loss_chunk_tokens=chunk)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        logits, loss = model(idx, targets)
    loss.backward()
    return logits, loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("chunk", [7, 64, 4096])  # uneven chunks, several, one
def test_chunked_loss_and_gradients_equal_the_plain_loss_in_fp32(chunk):
    cfg = small_config()
    torch.manual_seed(0)
    model = Transformer(cfg)
    idx = tokens(cfg)
    targets = torch.roll(idx, -1, dims=1)
    targets[0, :5] = -1  # ignored positions
    plain_logits, plain_loss, plain_grads = _loss_and_grads(model, idx, targets, "plain")
    chunked_logits, chunked_loss, chunked_grads = _loss_and_grads(model, idx, targets, "chunked", chunk)
    assert plain_logits is not None and chunked_logits is None  # the logits are never built
    torch.testing.assert_close(chunked_loss, plain_loss, atol=1e-5, rtol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_chunked_loss_under_bf16_autocast_is_close_to_plain():
    cfg = small_config()
    torch.manual_seed(0)
    model = Transformer(cfg)
    idx = tokens(cfg)
    targets = torch.roll(idx, -1, dims=1)
    _, plain_loss, plain_grads = _loss_and_grads(model, idx, targets, "plain", dtype=torch.bfloat16)
    _, chunked_loss, chunked_grads = _loss_and_grads(model, idx, targets, "chunked", 16, dtype=torch.bfloat16)
    torch.testing.assert_close(chunked_loss, plain_loss, atol=2e-2, rtol=1e-2)
    for name, grad in plain_grads.items():
        scale = grad.abs().max().clamp(min=1e-8)
        assert float((chunked_grads[name] - grad).abs().max() / scale) < 5e-2, name


def test_eval_without_grad_gives_the_same_loss():
    cfg = small_config()
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    idx = tokens(cfg)
    targets = torch.roll(idx, -1, dims=1)
    with torch.no_grad():
        plain = model.configure_speed(loss_impl="plain")(idx, targets)[1]
        chunked = model.configure_speed(loss_impl="chunked", loss_chunk_tokens=10)(idx, targets)[1]
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)


def test_chunked_loss_keeps_no_logits_for_backward():
    """Memory autograd keeps alive until backward: the plain loss holds the [tokens, vocab]
    logits (and their fp32 log-softmax); the chunked one only [tokens, d] + [vocab, d] grads."""
    n, d, vocab = 512, 32, 4096
    hidden = torch.randn(n, d, requires_grad=True)
    weight = torch.randn(vocab, d, requires_grad=True)
    targets = torch.randint(0, vocab, (n,))

    def plain():
        return torch.nn.functional.cross_entropy((hidden @ weight.t()).float(), targets)

    plain_loss, plain_bytes = saved_bytes_for_backward(plain, [weight])
    chunked_loss, chunked_bytes = saved_bytes_for_backward(lambda: linear_cross_entropy(hidden, weight, targets, "chunked", 64), [weight])
    torch.testing.assert_close(chunked_loss, plain_loss, atol=1e-5, rtol=1e-5)
    logits_bytes = n * vocab * 4
    assert plain_bytes >= logits_bytes
    assert chunked_bytes <= (n * d + vocab * d) * 4 + 1024  # the two gradients, nothing of size n x vocab
    print(f"kept for backward: plain {plain_bytes / 2**20:.1f} MiB, chunked {chunked_bytes / 2**20:.1f} MiB")


# -- bf16 parameters --------------------------------------------------------------------------
def test_bf16_parameters_keep_rope_tables_fp32_and_track_fp32():
    cfg = small_config()
    torch.manual_seed(0)
    reference = Transformer(cfg)
    model = Transformer(cfg)
    model.load_state_dict(reference.state_dict())
    train_cfg = TrainConfig(speed={"param_dtype": "bf16", "loss_impl": "chunked"})
    prepare_model(model, train_cfg, torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.rope_cos.dtype == torch.float32 and model.lm_head.weight is model.embed.weight
    idx = tokens(cfg)
    targets = torch.roll(idx, -1, dims=1)
    with torch.no_grad():
        ref_loss = reference(idx, targets)[1]
        loss = model(idx, targets)[1]
    assert abs(float(loss) - float(ref_loss)) < 2e-2 * float(ref_loss)


# -- torch.compile ----------------------------------------------------------------------------
def test_100m_model_compiles_with_no_graph_breaks():
    """torch._dynamo.explain on the 100M model's training forward (chunked loss, SDPA GQA,
    fused projections): one graph, no breaks."""
    cfg = load_config(ModelConfig, REPO / "configs/model_100m.yaml")
    torch.manual_seed(0)
    model = prepare_model(Transformer(cfg), TrainConfig(), torch.device("cpu")).train()
    assert model.loss_impl == "chunked"
    idx = torch.randint(0, cfg.vocab_size, (1, 16))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(idx, torch.roll(idx, -1, dims=1))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_train_then_eval_recompiles_at_most_once():
    """As train.py runs it: the compiled model trains, evaluates under no_grad in eval mode
    (val_loss.evaluate), trains again and evaluates again; graphs are counted at the backend."""
    cfg = small_config()
    torch.manual_seed(0)
    model = prepare_model(Transformer(cfg), TrainConfig(), torch.device("cpu")).train()
    compiled_graphs = []

    def counting_backend(graph_module, example_inputs):
        compiled_graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend)
    idx = tokens(cfg, batch=2, seq=32)
    targets = torch.roll(idx, -1, dims=1)
    for _ in range(2):
        compiled.train()
        _, loss = compiled(idx, targets)
        loss.backward()
        compiled.eval()
        with torch.no_grad():
            compiled(idx, targets)
    assert 1 <= len(compiled_graphs) <= 2, f"{len(compiled_graphs)} compilations"


def test_several_loss_chunks_under_bf16_autocast_compile_without_breaks():
    """As on a GPU: bf16 autocast around the model and the loss in several chunks."""
    cfg = small_config()
    model = prepare_model(Transformer(cfg), TrainConfig(speed={"loss_impl": "chunked", "loss_chunk_tokens": 16}), torch.device("cpu")).train()
    idx = tokens(cfg, batch=2, seq=40)  # 80 tokens: 5 chunks

    def step(inputs, targets):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(inputs, targets)[1]

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(step)(idx, torch.roll(idx, -1, dims=1))
    assert explanation.graph_break_count == 0, explanation.break_reasons
