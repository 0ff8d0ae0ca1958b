"""The trainer on older torch (issue 22): the model uses no API newer than it needs (torch
2.4, the 2024 images' torch, has no public register_load_state_dict_pre_hook), and the
throughput record says which levers took effect (no SDPA enable_gqa before 2.5). The oldest-torch
CI lane (tests/harness/oldest_lane.py) runs the trainer's own tests on pyproject's torch floor for
real; these run on any torch by taking away what an older one lacks."""
from __future__ import annotations

import torch
import torch.nn as nn

import trainer.modeling.transformer
from runcontract.config import ModelConfig, TrainConfig
from runcontract.configlib import load_config
from tests.harness.paths import REPO
from trainer.bench.benchmark import run_benchmark
from trainer.modeling.transformer import Transformer


def small_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=320, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=160, max_seq_len=48)
    return ModelConfig(**{**base, **overrides})


def test_the_model_builds_and_loads_either_layout_without_torch_2_5s_public_hook(monkeypatch):
    """torch 2.4's nn.Module has no public register_load_state_dict_pre_hook."""
    monkeypatch.delattr(nn.Module, "register_load_state_dict_pre_hook", raising=False)  # absent on 2.4 itself
    torch.manual_seed(0)
    separate = Transformer(small_config(fused_qkv=False, fused_gate_up=False)).eval()
    fused = Transformer(small_config()).eval()
    fused.load_state_dict(separate.state_dict(), strict=True)
    idx = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fused(idx)[0], separate(idx)[0], atol=1e-5, rtol=1e-5)


def _benchmark(tmp_path, model_cfg: ModelConfig) -> dict:
    train_cfg = load_config(TrainConfig, REPO / "configs/train_smoke.yaml")
    train_cfg.runs_dir, train_cfg.seq_len, train_cfg.micro_batch_size = str(tmp_path / "runs"), 32, 2
    assert train_cfg.speed.sdpa_gqa and train_cfg.speed.loss_impl == "auto"  # what the record must not echo blindly
    return run_benchmark(model_cfg, train_cfg, torch.device("cpu"), steps=1, warmup=0)


def _benchmark_speed(tmp_path, model_cfg: ModelConfig) -> dict:
    return _benchmark(tmp_path, model_cfg)["speed"]


def test_throughput_records_sdpa_gqa_off_where_torch_has_no_enable_gqa(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.modeling.transformer, "SDPA_HAS_GQA", False)  # torch < 2.5
    speed = _benchmark_speed(tmp_path, small_config())
    assert speed["sdpa_gqa"] is False
    assert speed["loss_impl"] == "chunked"  # auto, resolved as it ran on CPU


def test_throughput_records_sdpa_gqa_on_only_where_it_acted(tmp_path):
    with_shared_kv = _benchmark_speed(tmp_path, small_config())
    assert with_shared_kv["sdpa_gqa"] is trainer.modeling.transformer.SDPA_HAS_GQA
    assert _benchmark_speed(tmp_path, small_config(n_kv_heads=4))["sdpa_gqa"] is False  # no KV heads to share


def test_a_cuda_build_measured_on_cpu_records_no_cuda(tmp_path, monkeypatch):
    """The registry's torch and the box images' are CUDA builds; on CPU no CUDA ran (found by the oldest lane)."""
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    record = _benchmark(tmp_path, small_config())
    assert record["device_type"] == "cpu" and record["cuda_version"] is None
