"""Throughput benchmark: real training steps of the configured model, timed after a warm-up.

    python -m trainer.benchmark --model_config configs/model_100m.yaml --train_config configs/train_100m.yaml \
        --output_path runs/llama100m/throughput.json [--micro_batch_size N] [--steps 20] [--warmup 5]

Each step is what training does, through the same code (``trainer.training.step``): the
micro-batches of gradient accumulation (forward, backward), gradient clipping, AdamW step, with
the configured precision (bf16 autocast on CUDA for ``auto``), ``train.speed`` levers and
``torch.compile`` setting and mode, on random tokens (speed does not depend on their values).
Accumulation is capped at ``BENCH_GRAD_ACCUM`` micro-batches per step: each micro-batch frees
its activations in its own backward, so the peak of a step with 2 micro-batches (gradients held
while the next one runs) is the peak of one with 32, measured in a fraction of the time.
Reports tokens/s, step time, MFU
(model FLOPs per token x tokens/s / the GPU's peak dense bf16 FLOP/s; none on CPU) and peak
memory, and writes ``throughput.json``, which ``trainer.cost`` projects the price from and
``trainer.train`` takes the micro-batch from.

Under ``accelerate launch`` with several processes (the launcher's benchmark stage when
``run.gpu_count`` > 1) every rank runs the same step on its own GPU with the model in
DistributedDataParallel, as training does, so the gradient all-reduce is in the time; the
slowest rank's time counts, ``tokens_per_sec`` is per GPU, and throughput.json records
``gpu_count`` (the processes) and the NCCL environment. Rank 0 writes it.

Without a micro-batch (neither ``--micro_batch_size`` nor ``train.micro_batch_size``) it finds
the largest that fits: start at ``--max_micro_batch`` and halve on CUDA out-of-memory, each
candidate run with the same (compiled, when configured) step as training.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, TypeVar

import torch

from trainer.cli_args import add_config_args, parse_configs
from runcontract.config import ModelConfig, TrainConfig
from runcontract.errors import UserError, cli_main
from runcontract.run_files import Throughput
from runcontract.run_folder import THROUGHPUT_FILE
from runcontract.gpu_specs import mfu as compute_mfu
from runcontract.gpu_specs import peak_bf16_flops
from trainer.training.precision import autocast_dtype, device_description, pick_device
from trainer.training.step import TrainStep, prepare_model
from trainer.training.step import compile_model as compile_step_model

log = logging.getLogger("trainer.benchmark")

R = TypeVar("R")
# Called with the micro-batch after each forward pass; raising torch.cuda.OutOfMemoryError
# there acts like a smaller device. Lets the halving search be tested on a CPU.
MemoryGuard = Callable[[int], None]

DEFAULT_MAX_MICRO_BATCH_CUDA = 64
DEFAULT_MICRO_BATCH_CPU = 8
# On CUDA a micro-batch whose peak memory exceeds this share of the device counts as not
# fitting: training also evaluates, samples and fragments memory over hours.
CUDA_MEMORY_HEADROOM = 0.92
BENCH_GRAD_ACCUM = 2  # see the module doc: the second micro-batch runs on top of held gradients
PROGRESS_REPORTS = 5  # progress lines per timed loop


# -- device and precision ------------------------------------------------------------------
def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """Peak memory and what it measures: tensors allocated on the GPU, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"  # Linux reports KiB


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError)


# -- the micro-batch search ----------------------------------------------------------------
def largest_fitting(attempt: Callable[[int], R], start: int, on_oom: Callable[[], None] = lambda: None) -> tuple[int, R]:
    """Call ``attempt(micro_batch)`` from ``start``, halving on out-of-memory; return the first
    micro-batch that fits and its result. Raises UserError when even 1 does not fit."""
    if start < 1:
        raise UserError(f"the largest micro-batch to try must be at least 1, got {start}.")
    micro_batch = start
    while True:
        try:
            return micro_batch, attempt(micro_batch)
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(error):
                raise
        # Leave the except block first so the traceback (and the tensors it pins) is released.
        on_oom()
        if micro_batch == 1:
            raise UserError(
                "even a micro-batch of 1 sequence runs out of GPU memory: use a shorter train.seq_len, "
                "a smaller model, or a GPU with more memory."
            )
        log.info("micro-batch %d does not fit; trying %d", micro_batch, micro_batch // 2)
        micro_batch //= 2


# -- one training step, as training runs it ------------------------------------------------
@dataclass
class StepRunner:
    """The training step (trainer.training.step.TrainStep) and a fixed random batch; ``step()`` is
    one optimizer step of ``grad_accum`` micro-batches."""

    train_step: TrainStep
    inputs: torch.Tensor
    targets: torch.Tensor
    grad_accum: int = 1

    def step(self) -> torch.Tensor:
        return self.train_step([(self.inputs, self.targets)] * self.grad_accum, self.grad_accum).loss


def build_runner(model_cfg: ModelConfig, train_cfg: TrainConfig, micro_batch: int, device: torch.device,
                 compile_model: bool, memory_guard: Optional[MemoryGuard] = None, grad_accum: int = 1) -> StepRunner:
    from trainer.modeling.transformer import Transformer

    torch.manual_seed(train_cfg.seed)
    model = prepare_model(Transformer(model_cfg).to(device), train_cfg, device)
    model.train()
    optimizer = model.configure_optimizer(train_cfg.weight_decay, train_cfg.lr, (train_cfg.beta1, train_cfg.beta2), train_cfg.eps, device.type)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    tokens = torch.randint(0, model_cfg.vocab_size, (micro_batch, train_cfg.seq_len + 1), generator=generator).to(device)
    no_sync = None
    if world_size() > 1:  # as training wraps it (accelerator.prepare): gradients all-reduced on the last micro-batch
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        no_sync = model.no_sync
    runnable = compile_step_model(model, train_cfg.model_copy(update={"compile": compile_model}))
    step = TrainStep(runnable, optimizer, device, autocast_dtype(train_cfg.precision, device), train_cfg.grad_clip,
                     no_sync=no_sync, memory_guard=memory_guard)
    return StepRunner(step, tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), grad_accum)


def bench_grad_accum(train_cfg: TrainConfig, micro_batch: int) -> int:
    """Micro-batches per benchmark step: training's accumulation (on this many processes), capped at BENCH_GRAD_ACCUM."""
    from trainer.training.loop import plan_batches

    return min(BENCH_GRAD_ACCUM, plan_batches(train_cfg, micro_batch, world_size()).grad_accum)


def world_size() -> int:
    """Processes measuring together (1 without a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    import torch.distributed as dist

    return world_size() == 1 or dist.get_rank() == 0


def slowest(seconds: float, device: torch.device) -> float:
    """The longest of the ranks' times (the step's time: every rank waits in the all-reduce for the last)."""
    if world_size() == 1:
        return seconds
    import torch.distributed as dist

    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    micro_batch_size: int
    tokens_per_sec: float
    step_time_s: float
    peak_memory_bytes: int
    peak_memory_kind: str
    final_loss: float


def measure(model_cfg: ModelConfig, train_cfg: TrainConfig, micro_batch: int, device: torch.device,
            steps: int, warmup: int, compile_model: bool, memory_guard: Optional[MemoryGuard] = None) -> Measurement:
    """Warm up (compilation, allocator, cuDNN choices), then time ``steps`` training steps."""
    _free_memory(device)
    _reset_peak_memory(device)
    grad_accum = bench_grad_accum(train_cfg, micro_batch)
    runner = build_runner(model_cfg, train_cfg, micro_batch, device, compile_model, memory_guard, grad_accum)
    try:
        what = f"benchmark: micro-batch {micro_batch}"
        t0 = time.perf_counter()
        for done in range(1, warmup + 1):
            runner.step()
            if warmup > 1 and _report_now(done, warmup):
                progress_line(f"{what}: warm-up {done}/{warmup} ({time.perf_counter() - t0:.1f} s)")
        _synchronize(device)
        start = time.perf_counter()
        for done in range(1, steps + 1):
            loss = runner.step()
            if steps > 1 and _report_now(done, steps):
                progress_line(f"{what}: step {done}/{steps} ({time.perf_counter() - start:.1f} s)")
        _synchronize(device)
        elapsed = slowest(time.perf_counter() - start, device)
        peak, kind = peak_memory_bytes(device)
        tokens = micro_batch * train_cfg.seq_len * grad_accum * steps
        return Measurement(micro_batch, tokens / elapsed, elapsed / steps, peak, kind, float(loss))
    finally:
        del runner


def _report_now(done: int, total: int) -> bool:
    """About PROGRESS_REPORTS lines per loop: a slow CPU takes minutes here, and the user should see it move."""
    return done == total or done % max(1, total // PROGRESS_REPORTS) == 0


def progress_line(text: str) -> None:
    """One plain line on stdout (the launcher shows it and keeps it in train.log); rank 0's only."""
    if is_main_process():
        print(text, flush=True)


def fits_with_headroom(device: torch.device, guard: Optional[MemoryGuard]) -> Optional[MemoryGuard]:
    """On CUDA, wrap ``guard`` so that a step using more than the headroom share of the device
    counts as out of memory (it would fit the benchmark but not hours of training)."""
    if device.type != "cuda":
        return guard
    total = torch.cuda.get_device_properties(device).total_memory

    def check(micro_batch: int) -> None:
        if guard is not None:
            guard(micro_batch)
        used = torch.cuda.max_memory_allocated(device)
        if used > CUDA_MEMORY_HEADROOM * total:
            raise torch.cuda.OutOfMemoryError(f"micro-batch {micro_batch} peaks at {used / 2**30:.1f} GiB, over {CUDA_MEMORY_HEADROOM:.0%} of {total / 2**30:.1f} GiB")

    return check


def run_benchmark(model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, steps: int = 20, warmup: int = 5,
                  micro_batch_size: Optional[int] = None, max_micro_batch: Optional[int] = None,
                  memory_guard: Optional[MemoryGuard] = None, peak_flops: Optional[float] = None) -> dict:
    """Measure training throughput; returns the throughput.json record.

    ``micro_batch_size`` (else ``train_cfg.micro_batch_size``) is used as given; without one,
    the search starts at ``max_micro_batch`` and halves on out-of-memory.
    """
    from trainer.modeling.transformer import Transformer

    if train_cfg.seq_len > model_cfg.max_seq_len:
        raise UserError(f"train.seq_len {train_cfg.seq_len} exceeds model.max_seq_len {model_cfg.max_seq_len}; lower one or raise the other.")
    if steps < 1 or warmup < 0:
        raise UserError(f"--steps must be at least 1 and --warmup at least 0, got {steps} and {warmup}.")
    given = micro_batch_size or train_cfg.micro_batch_size
    if max_micro_batch is None:
        max_micro_batch = DEFAULT_MAX_MICRO_BATCH_CUDA if device.type == "cuda" else DEFAULT_MICRO_BATCH_CPU
    # No point in a micro-batch larger than one optimizer step's worth of sequences.
    max_micro_batch = max(1, min(max_micro_batch, train_cfg.tokens_per_step // train_cfg.seq_len or 1))
    guard = fits_with_headroom(device, memory_guard)

    if given:
        try:
            result = measure(model_cfg, train_cfg, given, device, steps, warmup, train_cfg.compile, memory_guard)
        except Exception as error:  # noqa: BLE001 - only out-of-memory becomes a UserError
            if not is_out_of_memory(error):
                raise
            raise UserError(
                f"micro-batch {given} (x seq_len {train_cfg.seq_len}) runs out of memory on {device_description(device)[0]}: "
                "pass a smaller --micro_batch_size, or set train.micro_batch_size to null so the benchmark searches for the largest that fits."
            ) from None
        searched = False
    else:
        # Every candidate runs the step training runs (compiled when configured: its memory
        # differs from eager), so the size found is the size that fits in training.
        _, result = largest_fitting(
            lambda mb: measure(model_cfg, train_cfg, mb, device, steps, warmup, train_cfg.compile, guard),
            max_micro_batch, on_oom=lambda: _free_memory(device))
        searched = True

    with torch.device("meta"):
        shape_only = Transformer(model_cfg)
    flops_per_token = shape_only.flops_per_token(train_cfg.seq_len)
    in_effect = prepare_model(shape_only, train_cfg, device).speed_in_effect()  # not the config's wish: torch < 2.5 has no SDPA GQA
    device_name, device_count = device_description(device)
    peak = peak_flops if peak_flops is not None else (peak_bf16_flops(device_name) if device.type == "cuda" else None)
    dtype = autocast_dtype(train_cfg.precision, device)
    return {
        "device_name": device_name,
        "device_type": device.type,
        "device_count": device_count,
        "gpu_count": world_size(),
        "nccl_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")},
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,  # a CUDA build measured on CPU ran no CUDA
        "model_config_hash": model_cfg.config_hash(),
        "num_parameters": shape_only.num_parameters(),
        "flops_per_token": flops_per_token,
        "micro_batch_size": result.micro_batch_size,
        "micro_batch_searched": searched,
        "grad_accum": bench_grad_accum(train_cfg, result.micro_batch_size),  # micro-batches per timed step
        "seq_len": train_cfg.seq_len,
        "tokens_per_sec": result.tokens_per_sec,
        "step_time_s": result.step_time_s,
        "mfu": compute_mfu(flops_per_token, result.tokens_per_sec, peak),
        "peak_flops": peak,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": result.peak_memory_kind,
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        "compile": train_cfg.compile,
        "compile_mode": train_cfg.speed.compile_mode if train_cfg.compile else None,
        "speed": {**train_cfg.speed.to_dict(), **in_effect},
        "steps": steps,
        "warmup": warmup,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def format_table(record: dict):
    from rich.table import Table

    table = Table(title="Training throughput", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    mfu = record["mfu"]
    rows = [
        ("device", f"{record['device_name']} x{record['device_count']}"),
        ("processes (DDP)", str(record.get("gpu_count") or 1)),
        ("torch / CUDA", f"{record['torch_version']} / {record['cuda_version'] or '-'}"),
        ("parameters", f"{record['num_parameters']:,}"),
        ("precision / compile", f"{record['precision']} / {record['compile']}"),
        ("micro-batch x seq_len", f"{record['micro_batch_size']} x {record['seq_len']}" + (" (searched)" if record["micro_batch_searched"] else "")),
        ("tokens/s per process", f"{record['tokens_per_sec']:,.0f}"),
        ("step time", f"{record['step_time_s'] * 1000:,.1f} ms"),
        ("MFU", "-" if mfu is None else f"{mfu:.1%}"),
        ("peak memory", f"{record['peak_memory_bytes'] / 2**30:.2f} GiB ({record['peak_memory_kind']})"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.benchmark", description="Measure training throughput and write throughput.json.")
    add_config_args(parser, model=True, train=True)
    parser.add_argument("--output_path", default=None, help="throughput.json to write (default: <runs_dir>/<run_name>/throughput.json)")
    parser.add_argument("--micro_batch_size", type=int, default=None, help="use this micro-batch instead of train.micro_batch_size or the search")
    parser.add_argument("--max_micro_batch", type=int, default=None, help=f"where the search starts (default {DEFAULT_MAX_MICRO_BATCH_CUDA} on CUDA, {DEFAULT_MICRO_BATCH_CPU} on CPU)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's peak dense bf16 TFLOP/s, for a GPU missing from runcontract/gpu_specs.py")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, model_cfg, train_cfg, _ = parse_configs(build_parser(), argv)
    if args.micro_batch_size is not None and args.micro_batch_size < 1:
        raise UserError(f"--micro_batch_size must be at least 1, got {args.micro_batch_size}.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under accelerate launch: this rank's device, the process group joined
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        device = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device
    else:
        device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as training does: fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    output = Path(args.output_path) if args.output_path else Path(train_cfg.runs_dir) / train_cfg.run_name / THROUGHPUT_FILE
    record = run_benchmark(
        model_cfg, train_cfg, device, steps=args.steps, warmup=args.warmup, micro_batch_size=args.micro_batch_size,
        max_micro_batch=args.max_micro_batch, peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None,
    )
    if not is_main_process():
        return
    if record["mfu"] is None and device.type == "cuda":
        log.warning("no peak FLOP/s known for %s: MFU not reported (pass --peak_tflops)", record["device_name"])
    Throughput.model_validate(record).write(output)
    from rich.console import Console

    Console().print(format_table(record))
    print(f"wrote {output}")
