"""The project's model against Hugging Face's LlamaForCausalLM: same shape, same weights, same batch.

    python bench/model_vs_hf.py --model_config configs/model_100m.yaml --seq_lens 512,1024 \
        --micro_batches 8,16 [--steps 20] [--warmup 5] [--output_path runs/bench/model_vs_hf.json]
    python bench/model_vs_hf.py --device cpu --model_config configs/model_smoke.yaml   # a quick check

For every (seq_len, micro-batch) both models run training steps back to back through the step
training runs (trainer/training/step.py: forward, backward, clipping at 1.0, AdamW fused on CUDA),
bf16 autocast on CUDA. HF's model runs eager with SDPA and float32 cross-entropy; the
project's model runs with the default ``train.speed`` levers (fused loss, SDPA GQA) and, with
``--compile``, compiled as training compiles it. Prints a table (tokens/s, step
time, MFU, peak memory) and writes JSON. Before timing, both models' losses on the same batch
are compared (they share weights, so they must agree). On CUDA it also checks that the
compiled project model matches eager within bf16 tolerance (skipped on CPU).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from runcontract.atomic import atomic_write_json  # noqa: E402
from trainer.bench.benchmark import is_out_of_memory  # noqa: E402
from trainer.training.precision import device_description, pick_device  # noqa: E402
from runcontract.run_folder import RUNS_DIR  # noqa: E402
from trainer.cli_args import add_config_args, load_configs  # noqa: E402
from runcontract.config import ModelConfig  # noqa: E402
from runcontract.errors import UserError, cli_main  # noqa: E402
from runcontract.gpu_specs import mfu, peak_bf16_flops  # noqa: E402

# Compiled vs eager under bf16 autocast: kernels fuse and round differently, so only loose
# agreement is expected (bf16 keeps ~3 significant digits).
COMPILE_LOSS_RTOL = 1e-2
COMPILE_LOGITS_MEAN_ATOL = 5e-2


class HFAsProject(torch.nn.Module):
    """LlamaForCausalLM behind the project's ``forward(idx, targets) -> (logits, loss)``, with the
    loss computed the same way (float32 cross-entropy over every position)."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model

    def forward(self, idx, targets=None):
        logits = self.hf(input_ids=idx, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


def build_pair(cfg: ModelConfig, device: torch.device, seed: int):
    """(project model, HF model with the same weights), both on ``device`` in float32."""
    from transformers import LlamaForCausalLM

    from trainer.modeling.hf_convert import to_hf_config, to_hf_state_dict
    from trainer.modeling.transformer import Transformer

    from runcontract.config import TrainConfig
    from trainer.training.step import prepare_model

    torch.manual_seed(seed)
    ours = Transformer(cfg)
    hf = LlamaForCausalLM(to_hf_config(cfg, attn_implementation="sdpa"))
    hf.load_state_dict(to_hf_state_dict(ours), strict=True)
    return prepare_model(ours.to(device), TrainConfig(), device).train(), HFAsProject(hf).to(device).train()


def time_training(model, batch: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype], steps: int, warmup: int,
                  runnable: Optional[torch.nn.Module] = None) -> dict:
    """Warm up, then time ``steps`` training steps (trainer.training.step.TrainStep: forward,
    backward, clipping, AdamW) on one fixed batch. ``runnable`` is the model to call (e.g. its
    compiled wrapper); the optimizer holds ``model``'s parameters."""
    from trainer.training.step import TrainStep

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    inputs, targets = batch[:, :-1], batch[:, 1:]
    train_step = TrainStep(runnable if runnable is not None else model, optimizer, device, dtype, grad_clip=1.0)

    def step():
        return train_step([(inputs, targets)], 1).loss

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    tokens = inputs.numel() * steps
    return {
        "tokens_per_sec": tokens / elapsed,
        "step_time_s": elapsed / steps,
        # On CPU the process's peak RSS covers both models and never falls: not comparable.
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
    }


@torch.no_grad()
def initial_losses(ours, hf, batch: torch.Tensor) -> tuple[float, float]:
    """Both models' float32 losses on the same batch, before any step."""
    return float(ours(batch[:, :-1], batch[:, 1:])[1]), float(hf(batch[:, :-1], batch[:, 1:])[1])


@torch.no_grad()
def compile_check(cfg: ModelConfig, device: torch.device, seq_len: int, micro_batch: int, seed: int) -> dict:
    """Compiled vs eager project model under bf16 autocast: loss and logits must agree loosely."""
    if device.type != "cuda":
        return {"skipped": "CUDA only: bf16 compiled kernels are what this checks"}
    from trainer.modeling.transformer import Transformer

    torch.manual_seed(seed)
    model = Transformer(cfg).to(device).eval()
    compiled = torch.compile(model)
    batch = torch.randint(0, cfg.vocab_size, (micro_batch, seq_len + 1), device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager_logits, eager_loss = model(batch[:, :-1], batch[:, 1:])
        compiled_logits, compiled_loss = compiled(batch[:, :-1], batch[:, 1:])
    loss_rel = abs(float(compiled_loss) - float(eager_loss)) / abs(float(eager_loss))
    mean_abs = float((compiled_logits.float() - eager_logits.float()).abs().mean())
    return {
        "loss_eager": float(eager_loss), "loss_compiled": float(compiled_loss), "loss_rel_diff": loss_rel,
        "logits_mean_abs_diff": mean_abs, "logits_max_abs_diff": float((compiled_logits.float() - eager_logits.float()).abs().max()),
        "ok": loss_rel <= COMPILE_LOSS_RTOL and mean_abs <= COMPILE_LOGITS_MEAN_ATOL,
    }


def run(cfg: ModelConfig, device: torch.device, seq_lens: list[int], micro_batches: list[int], steps: int, warmup: int, seed: int,
        compile_mode: Optional[str] = None) -> dict:
    from trainer.modeling.transformer import Transformer

    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    device_name, device_count = device_description(device)
    peak = peak_bf16_flops(device_name) if device.type == "cuda" else None
    rows = []
    for seq_len in seq_lens:
        if seq_len > cfg.max_seq_len:
            raise UserError(f"--seq_lens {seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}.")
        with torch.device("meta"):
            flops_per_token = Transformer(cfg).flops_per_token(seq_len)
        for micro_batch in micro_batches:
            generator = torch.Generator().manual_seed(seed)
            batch = torch.randint(0, cfg.vocab_size, (micro_batch, seq_len + 1), generator=generator).to(device)
            ours, hf = build_pair(cfg, device, seed)
            loss_ours, loss_hf = initial_losses(ours, hf, batch)
            compiled = None
            if compile_mode is not None:
                from runcontract.config import TrainConfig
                from trainer.training.step import compile_model

                compiled = compile_model(ours, TrainConfig(compile=True, speed={"compile_mode": compile_mode}))
            for impl, model, loss in (("project", ours, loss_ours), ("hf_llama", hf, loss_hf)):
                row = {"impl": impl, "seq_len": seq_len, "micro_batch": micro_batch, "initial_loss": loss,
                       "compiled": impl == "project" and compiled is not None}
                try:
                    row.update(time_training(model, batch, device, dtype, steps, warmup, compiled if impl == "project" else None))
                    row["mfu"] = mfu(flops_per_token, row["tokens_per_sec"], peak)
                except Exception as error:  # noqa: BLE001 - out-of-memory is a result here, the rest a bug
                    if not is_out_of_memory(error):
                        raise
                    row["oom"] = True
                rows.append(row)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            del ours, hf
    return {
        "device_name": device_name, "device_count": device_count, "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda, "precision": "bf16" if dtype is not None else "fp32",
        "model_config_hash": cfg.config_hash(), "model_config": cfg.to_dict(), "steps": steps, "warmup": warmup,
        "peak_flops": peak, "rows": rows,
        "compile_check": compile_check(cfg, device, seq_lens[0], micro_batches[0], seed),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"project model vs HF LlamaForCausalLM on {result['device_name']} ({result['precision']})")
    for column in ("seq_len", "micro-batch", "impl", "tokens/s", "step ms", "MFU", "peak GiB", "initial loss"):
        table.add_column(column, justify="right")
    for row in result["rows"]:
        if row.get("oom"):
            table.add_row(str(row["seq_len"]), str(row["micro_batch"]), row["impl"], "OOM", "-", "-", "-", f"{row['initial_loss']:.4f}")
            continue
        table.add_row(
            str(row["seq_len"]), str(row["micro_batch"]), row["impl"], f"{row['tokens_per_sec']:,.0f}", f"{row['step_time_s'] * 1000:.1f}",
            "-" if row["mfu"] is None else f"{row['mfu']:.1%}",
            "-" if row["peak_memory_bytes"] is None else f"{row['peak_memory_bytes'] / 2**30:.2f}", f"{row['initial_loss']:.4f}",
        )
    console = Console()
    console.print(table)
    console.print(f"compile check: {result['compile_check']}")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 512,1024") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} needs at least one integer, each at least 1")
    return values


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/model_vs_hf.py", description=__doc__.split("\n\n")[0])
    add_config_args(parser, model=True)
    parser.add_argument("--seq_lens", type=_int_list, default=[512, 1024], help="comma-separated sequence lengths")
    parser.add_argument("--micro_batches", type=_int_list, default=[8, 16], help="comma-separated micro-batch sizes")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    parser.add_argument("--compile", action="store_true", help="run the project's model compiled, as training does with train.compile")
    parser.add_argument("--compile_mode", default="default", choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                        help="torch.compile mode with --compile")
    parser.add_argument("--output_path", default=f"{RUNS_DIR}/bench/model_vs_hf.json", help="JSON to write")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise UserError(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and {args.warmup}.")
    model_cfg, _, _ = load_configs(args)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    result = run(model_cfg, device, args.seq_lens, args.micro_batches, args.steps, args.warmup, args.seed,
                 args.compile_mode if args.compile else None)
    atomic_write_json(args.output_path, result)
    print_table(result)
    print(f"wrote {args.output_path}")


if __name__ == "__main__":
    main()
