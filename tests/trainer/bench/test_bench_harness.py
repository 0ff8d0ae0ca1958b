"""bench/model_vs_hf.py (issue 9): the project's model and HF LlamaForCausalLM, back to back, on CPU."""
from __future__ import annotations

import json

import pytest
import torch
from tests.harness.paths import REPO


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

    sys.path.insert(0, str(REPO))
    from bench.model_vs_hf import compile_check
    from runcontract.config import ModelConfig

    cfg = ModelConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=384, max_seq_len=256)
    check = compile_check(cfg, torch.device("cuda"), 128, 4, seed=0)
    assert check["ok"], check


# -- bench/gpu_report.py (issue 16) ---------------------------------------------------------------
def test_gpu_report_runs_on_cpu_with_the_smoke_model(tmp_path, run_python):
    """The same code a GPU box runs, on the smoke model: compiled vs eager, this model vs HF,
    every lever alone, the memory kept for backward; JSON with an mfu per row, and markdown."""
    out = tmp_path / "report.json"
    result = run_python("bench/gpu_report.py", "--device", "cpu", "--seq_lens", "64", "--micro_batches", "4",
                        "--steps", "1", "--warmup", "1", "--budget_s", "100000", "--output_path", str(out), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["device_type"] == "cpu" and record["device_name"].startswith("cpu") and record["precision"] == "fp32"
    assert record["model_config"]["d_model"] == 128  # the smoke model by default on CPU
    check = record["compile_check"]
    assert check["ok"] and check["loss_rel_diff"] <= 1e-4, check
    rows = record["rows"]
    assert [(r["impl"], r["lever"]) for r in rows] == [
        ("project", "all on"), ("hf_llama", "eager"), ("project", "compile off"), ("project", "plain loss (full fp32 logits)"),
        ("project", "SDPA GQA off (KV heads repeated)"), ("project", "separate q/k/v, gate/up"), ("project", "bf16 parameters")]
    for row in rows:
        assert "skipped" not in row and "oom" not in row, row
        assert row["tokens_per_sec"] > 0 and row["step_time_s"] > 0 and "mfu" in row and row["mfu"] is None  # no peak on CPU
        assert row["speedup_vs_hf"] > 0
    kept = record["loss_memory"]["saved_for_backward_bytes"]
    # The plain loss keeps a [256 tokens, 4096] fp32 log-softmax (4 MiB), the head's [256, 128]
    # input and the int64 targets; the chunked one its [4096, 128] fp32 head gradient (2 MiB)
    # and the [256, 128] hidden gradient instead.
    plain_only = 256 * 4096 * 4 + 256 * 128 * 4 + 256 * 8
    chunked_only = (4096 * 128 + 256 * 128) * 4
    assert kept["plain"] - kept["chunked"] == pytest.approx(plain_only - chunked_only, rel=0.01)
    table = out.with_suffix(".md").read_text()
    assert "| 64 | 4 | hf_llama | eager |" in table and "Compiled vs eager (default)" in table and "ok." in table


def test_gpu_report_records_rows_past_the_budget_as_skipped():
    import sys

    sys.path.insert(0, str(REPO))
    from bench.gpu_report import Report

    report = Report(budget_s=0.0, peak=None)  # already spent
    report.measure({"seq_len": 8, "micro_batch": 1, "impl": "project", "lever": "all on"}, 1.0,
                   lambda: pytest.fail("a row past the budget must not run"), torch.device("cpu"))
    assert report.rows[0]["skipped"].startswith("time budget")


def test_gpu_report_refuses_a_too_long_sequence(tmp_path, run_python):
    result = run_python("bench/gpu_report.py", "--device", "cpu", "--seq_lens", "4096", "--micro_batches", "1",
                        "--output_path", str(tmp_path / "r.json"), timeout=300)
    assert result.returncode == 1 and "max_seq_len 256" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()
