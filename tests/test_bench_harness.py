"""bench/model_vs_hf.py (issue 9): the project's model and HF LlamaForCausalLM, back to back, on CPU."""
from __future__ import annotations

import json

import pytest
import torch


def test_model_vs_hf_runs_on_cpu(tmp_path, run_python):
    out = tmp_path / "bench.json"
    result = run_python("bench/model_vs_hf.py", "--device", "cpu", "--model_config", "configs/model_smoke.yaml",
                        "--seq_lens", "16,32", "--micro_batches", "2", "--steps", "2", "--warmup", "1",
                        "--output_path", str(out), timeout=180)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    rows = record["rows"]
    assert [(r["impl"], r["seq_len"]) for r in rows] == [("project", 16), ("hf_llama", 16), ("project", 32), ("hf_llama", 32)]
    for row in rows:
        assert row["tokens_per_sec"] > 0 and row["step_time_s"] > 0 and row["mfu"] is None
    for ours, hf in zip(rows[::2], rows[1::2]):  # same weights, same batch: same loss
        assert ours["initial_loss"] == pytest.approx(hf["initial_loss"], rel=1e-5)
    assert "skipped" in record["compile_check"] and record["precision"] == "fp32"
    assert "hf_llama" in result.stdout


def test_model_vs_hf_rejects_bad_lists(run_python, tmp_path):
    result = run_python("bench/model_vs_hf.py", "--device", "cpu", "--model_config", "configs/model_smoke.yaml",
                        "--seq_lens", "1024", "--micro_batches", "1", "--output_path", str(tmp_path / "x.json"), timeout=120)
    assert result.returncode == 1 and "max_seq_len 256" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_model_matches_eager_on_cuda():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.model_vs_hf import compile_check
    from trainer.config import ModelConfig

    cfg = ModelConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=384, max_seq_len=256)
    check = compile_check(cfg, torch.device("cuda"), 128, 4, seed=0)
    assert check["ok"], check
