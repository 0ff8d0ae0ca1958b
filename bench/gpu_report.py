"""One command for a GPU box: is the trainer fast, and which lever buys what (issue 16).

    python bench/gpu_report.py                      # CUDA: the 100M model; CPU: the smoke model
    python bench/gpu_report.py --budget_s 420 --output_path bench/results/gpu_report_h100.json

In order, until ``--budget_s`` runs out (rows not reached are listed as skipped, so a device
call of 8 minutes always ends with a report):

1. compiled vs eager: the project model's loss and gradient norm on one batch, compiled
   (``train.speed.compile_mode``) and eager, must agree (fp32: 1e-4, bf16 autocast: 1e-2);
2. at every ``--seq_lens`` x ``--micro_batches``: this project's model as training runs it
   (trainer/training/step.py, compiled, every lever on but bf16 parameters) and Hugging Face's
   ``LlamaForCausalLM`` (SDPA, eager), bf16 autocast on CUDA, fused AdamW on CUDA;
3. each lever off (or on, for bf16 parameters) alone, at the first seq_len and a middle
   micro-batch: compile, fused loss, SDPA GQA, fused projections, bf16 parameters;
4. memory autograd keeps for backward, plain loss vs fused loss (device independent).

Writes JSON (device name, torch/CUDA versions, one row per run with tokens/s, step time,
``mfu`` (None without a known peak, e.g. on CPU), peak memory, the speed-up over HF) and a
markdown table. On CPU the same code runs the smoke model at small sizes (tests/trainer/bench/test_bench_harness.py).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from bench.model_vs_hf import HFAsProject, _int_list, time_training  # noqa: E402
from runcontract.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from trainer.bench.benchmark import is_out_of_memory  # noqa: E402
from trainer.cli_args import add_deprecated_alias  # noqa: E402
from trainer.training.precision import device_description, pick_device  # noqa: E402
from runcontract.config import ModelConfig, TrainConfig  # noqa: E402
from runcontract.configlib import load_config  # noqa: E402
from runcontract.errors import UserError, cli_main  # noqa: E402
from runcontract.gpu_specs import mfu, peak_bf16_flops  # noqa: E402
from trainer.modeling.linear_cross_entropy import saved_bytes_for_backward  # noqa: E402
from trainer.training.step import compile_model, prepare_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {  # what runs without arguments: the real model on CUDA, a seconds-long check on CPU
    "cuda": {"model_config": "configs/model_100m.yaml", "seq_lens": [1024, 2048], "micro_batches": [8, 16, 32, 64], "steps": 10, "warmup": 3},
    "cpu": {"model_config": "configs/model_smoke.yaml", "seq_lens": [64, 128], "micro_batches": [2, 4], "steps": 2, "warmup": 1},
}
# Each lever against the all-on baseline: (label, model-config changes, train-config changes).
ABLATIONS = [
    ("compile off", {}, {"compile": False}),
    ("plain loss (full fp32 logits)", {}, {"speed": {"loss_impl": "plain"}}),
    ("SDPA GQA off (KV heads repeated)", {}, {"speed": {"sdpa_gqa": False}}),
    ("separate q/k/v, gate/up", {"fused_qkv": False, "fused_gate_up": False}, {}),
    ("bf16 parameters", {}, {"speed": {"param_dtype": "bf16"}}),
]
COMPILE_RTOL = {"fp32": 1e-4, "bf16": 1e-2}


def _merge(train_cfg: TrainConfig, changes: dict) -> TrainConfig:
    data = train_cfg.to_dict()
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return TrainConfig(**data)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build_project(cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, seed: int):
    """(model, what to call: compiled when train.compile) as training builds them."""
    from trainer.modeling.transformer import Transformer

    torch.manual_seed(seed)
    model = prepare_model(Transformer(cfg).to(device), train_cfg, device).train()
    return model, compile_model(model, train_cfg)


def build_hf(cfg: ModelConfig, device: torch.device, seed: int):
    from transformers import LlamaForCausalLM

    from trainer.modeling.hf_convert import to_hf_config

    torch.manual_seed(seed)
    return HFAsProject(LlamaForCausalLM(to_hf_config(cfg, attn_implementation="sdpa"))).to(device).train()


def random_batch(cfg: ModelConfig, micro_batch: int, seq_len: int, device: torch.device, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (micro_batch, seq_len + 1), generator=generator).to(device)


def compile_vs_eager(cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, dtype, seq_len: int, micro_batch: int, seed: int) -> dict:
    """Loss and gradient norm of one training forward/backward, compiled and eager, same weights."""
    from trainer.training.precision import autocast

    batch = random_batch(cfg, micro_batch, seq_len, device, seed)
    results = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        model, runnable = build_project(cfg, train_cfg.model_copy(update={"compile": compiled}), device, seed)
        with autocast(device, dtype):
            _, loss = runnable(batch[:, :-1], batch[:, 1:])
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        results[name] = (float(loss.detach()), float(grad_norm))
        del model, runnable
        _free(device)
    rtol = COMPILE_RTOL["bf16" if dtype is not None else "fp32"]
    loss_rel = abs(results["compiled"][0] - results["eager"][0]) / abs(results["eager"][0])
    norm_rel = abs(results["compiled"][1] - results["eager"][1]) / abs(results["eager"][1])
    return {"compile_mode": train_cfg.speed.compile_mode, "loss_eager": results["eager"][0], "loss_compiled": results["compiled"][0],
            "grad_norm_eager": results["eager"][1], "grad_norm_compiled": results["compiled"][1],
            "loss_rel_diff": loss_rel, "grad_norm_rel_diff": norm_rel, "rtol": rtol, "ok": loss_rel <= rtol and norm_rel <= rtol}


def loss_memory(cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, dtype, seq_len: int, micro_batch: int, seed: int) -> dict:
    """Bytes autograd keeps for backward over a whole training forward, plain vs fused loss."""
    from trainer.training.precision import autocast

    batch = random_batch(cfg, micro_batch, seq_len, device, seed)
    kept = {}
    for impl in ("plain", train_cfg.speed.loss_impl):
        model, _ = build_project(cfg, _merge(train_cfg, {"compile": False, "speed": {"loss_impl": impl}}), device, seed)

        def forward(model=model):  # bound now: the loop deletes its name before the next impl
            with autocast(device, dtype):
                return model(batch[:, :-1], batch[:, 1:])[1]

        _, kept[model.loss_impl if impl != "plain" else "plain"] = saved_bytes_for_backward(forward, list(model.parameters()))
        del model
        _free(device)
    return {"seq_len": seq_len, "micro_batch": micro_batch, "saved_for_backward_bytes": kept}


class Report:
    """Rows measured until the time budget runs out; later ones are recorded as skipped."""

    def __init__(self, budget_s: float, peak: Optional[float]):
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.peak = peak
        self.rows: list[dict] = []

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.budget_s

    def measure(self, row: dict, flops_per_token: float, run: Callable[[], dict], device: torch.device) -> None:
        if self.out_of_time():
            row["skipped"] = f"time budget of {self.budget_s:.0f} s spent"
        else:
            try:
                row.update(run())
                row["mfu"] = mfu(flops_per_token, row["tokens_per_sec"], self.peak)
            except Exception as error:  # noqa: BLE001 - out-of-memory is a result here, the rest a bug
                if not is_out_of_memory(error):
                    raise
                row["oom"] = True
            _free(device)
        self.rows.append(row)


def run_report(cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, seq_lens: list[int], micro_batches: list[int],
               steps: int, warmup: int, budget_s: float, seed: int = 0) -> dict:
    from trainer.modeling.transformer import Transformer

    for seq_len in seq_lens:
        if seq_len > cfg.max_seq_len:
            raise UserError(f"--seq_lens {seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}; use shorter sequences or --set model.max_seq_len=N.")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    device_name, device_count = device_description(device)
    peak = peak_bf16_flops(device_name) if device.type == "cuda" else None
    report = Report(budget_s, peak)
    with torch.device("meta"):
        shape = Transformer(cfg)
    flops = {seq_len: shape.flops_per_token(seq_len) for seq_len in seq_lens}
    baseline_cfg = train_cfg.model_copy(update={"compile": True})

    compile_check = compile_vs_eager(cfg, baseline_cfg, device, dtype, seq_lens[0], micro_batches[0], seed)

    def project_run(model_cfg: ModelConfig, run_cfg: TrainConfig, seq_len: int, micro_batch: int):
        def run():
            model, runnable = build_project(model_cfg, run_cfg, device, seed)
            return time_training(model, random_batch(model_cfg, micro_batch, seq_len, device, seed), device, dtype, steps, warmup, runnable)
        return run

    def hf_run(seq_len: int, micro_batch: int):
        return lambda: time_training(build_hf(cfg, device, seed), random_batch(cfg, micro_batch, seq_len, device, seed), device, dtype, steps, warmup)

    def sweep(seq_len: int) -> None:
        for micro_batch in micro_batches:
            base = {"seq_len": seq_len, "micro_batch": micro_batch}
            report.measure({**base, "impl": "project", "lever": "all on"}, flops[seq_len], project_run(cfg, baseline_cfg, seq_len, micro_batch), device)
            report.measure({**base, "impl": "hf_llama", "lever": "eager"}, flops[seq_len], hf_run(seq_len, micro_batch), device)

    for seq_len in seq_lens:  # the targets first: MFU and the speed-up over HF at every size
        sweep(seq_len)
    ablation_mb = micro_batches[len(micro_batches) // 2]
    for label, model_changes, train_changes in ABLATIONS:
        model_cfg = cfg.model_copy(update=model_changes)
        report.measure({"seq_len": seq_lens[0], "micro_batch": ablation_mb, "impl": "project", "lever": label}, flops[seq_lens[0]],
                       project_run(model_cfg, _merge(baseline_cfg, train_changes), seq_lens[0], ablation_mb), device)

    hf_speed = {(r["seq_len"], r["micro_batch"]): r["tokens_per_sec"] for r in report.rows if r["impl"] == "hf_llama" and "tokens_per_sec" in r}
    for row in report.rows:
        reference = hf_speed.get((row["seq_len"], row["micro_batch"]))
        row["speedup_vs_hf"] = row["tokens_per_sec"] / reference if reference and "tokens_per_sec" in row else None
    memory = None if report.out_of_time() else loss_memory(cfg, baseline_cfg, device, dtype, seq_lens[0], micro_batches[0], seed)
    return {
        "device_name": device_name, "device_type": device.type, "device_count": device_count, "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda, "precision": "bf16" if dtype is not None else "fp32", "peak_flops": peak,
        "model_config_hash": cfg.config_hash(), "model_config": cfg.to_dict(), "num_parameters": shape.num_parameters(),
        "speed": baseline_cfg.speed.to_dict(), "steps": steps, "warmup": warmup, "budget_s": budget_s,
        "elapsed_s": time.monotonic() - report.started, "compile_check": compile_check, "rows": report.rows,
        "loss_memory": memory, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def markdown(result: dict) -> str:
    def number(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [
        f"Device: {result['device_name']} x{result['device_count']}, torch {result['torch_version']} / CUDA {result['cuda_version'] or '-'}, "
        f"{result['precision']}, {result['num_parameters']:,} parameters, {result['steps']} timed steps after {result['warmup']} warm-up, "
        f"measured {result['measured_at']} in {result['elapsed_s']:.0f} s.",
        "",
        f"Compiled vs eager ({result['compile_check']['compile_mode']}): loss {result['compile_check']['loss_eager']:.5f} vs "
        f"{result['compile_check']['loss_compiled']:.5f}, grad norm rel. diff {result['compile_check']['grad_norm_rel_diff']:.2e}: "
        f"{'ok' if result['compile_check']['ok'] else 'MISMATCH'}.",
        "",
        "| seq | micro-batch | model | lever | tokens/s | step ms | MFU | peak GiB | vs HF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        head = f"| {row['seq_len']} | {row['micro_batch']} | {row['impl']} | {row['lever']} |"
        if row.get("skipped") or row.get("oom"):
            lines.append(f"{head} {'skipped' if row.get('skipped') else 'OOM'} | - | - | - | - |")
            continue
        peak = row.get("peak_memory_bytes")
        lines.append(f"{head} {row['tokens_per_sec']:,.0f} | {row['step_time_s'] * 1000:.1f} | {number(row['mfu'], '.1%')} | "
                     f"{number(None if peak is None else peak / 2**30, '.2f')} | {number(row['speedup_vs_hf'], '.2f')}x |")
    if result["loss_memory"]:
        kept = ", ".join(f"{impl} {size / 2**20:,.1f} MiB" for impl, size in result["loss_memory"]["saved_for_backward_bytes"].items())
        lines += ["", f"Kept for backward, one training forward at {result['loss_memory']['micro_batch']} x {result['loss_memory']['seq_len']}: {kept}."]
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/gpu_report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    parser.add_argument("--model_config", default=None, help="model YAML (default: configs/model_100m.yaml on CUDA, configs/model_smoke.yaml on CPU)")
    parser.add_argument("--seq_lens", type=_int_list, default=None, help="comma-separated (default 1024,2048 on CUDA, 64,128 on CPU)")
    parser.add_argument("--micro_batches", type=_int_list, default=None, help="comma-separated (default 8,16,32,64 on CUDA, 2,4 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--compile_mode", default="default", choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    parser.add_argument("--budget_s", type=float, default=420.0, help="stop starting rows after this many seconds (default 420: one 8-minute device call)")
    parser.add_argument("--output_path", default="bench/results/gpu_report.json", help="JSON to write")
    add_deprecated_alias(parser, "--output_json", "--output_path")
    parser.add_argument("--output_md", default=None, help="markdown table to write (default: the JSON path with .md)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    defaults = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else defaults[name]  # noqa: E731
    if pick("steps") < 1 or pick("warmup") < 0 or args.budget_s <= 0:
        raise UserError(f"--steps must be at least 1, --warmup at least 0 and --budget_s above 0; got {pick('steps')}, {pick('warmup')} and {args.budget_s}.")
    model_path = Path(pick("model_config"))
    if not model_path.is_absolute() and not model_path.exists():
        model_path = REPO / model_path
    cfg = load_config(ModelConfig, model_path)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    train_cfg = TrainConfig(precision="auto", speed={"compile_mode": args.compile_mode})
    result = run_report(cfg, train_cfg, device, pick("seq_lens"), pick("micro_batches"), pick("steps"), pick("warmup"), args.budget_s)
    output_json = Path(args.output_path)
    output_md = Path(args.output_md) if args.output_md else output_json.with_suffix(".md")
    table = markdown(result)
    atomic_write_text(output_md, table)
    atomic_write_json(output_json, result)  # last: its presence means the report is whole
    print(table)
    print(f"wrote {output_json} and {output_md}")


if __name__ == "__main__":
    main()
