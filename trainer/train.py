"""Train the model: setup -> (resume) -> checks -> fit -> final checkpoint.

    python -m trainer.train --model_config configs/model_100m.yaml --train_config configs/train_100m.yaml
    accelerate launch -m trainer.train ...            # several GPUs (DDP)
    python -m trainer.train --smoke                   # tiny model, tiny data, seconds on a CPU
    python -m trainer.train ... --launch_screen       # the same, detached in screen (or tmux)

Writes under runs/<run_name>/: config.yaml, train.log, metrics.jsonl, status.json,
fixed_prompt_samples.txt, checkpoints/step_NNNNNN/, final/. A run whose folder holds
checkpoints resumes from the newest one (``--resume PATH`` picks another). SIGTERM or Ctrl-C
stops at the next step boundary with a checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from trainer import checkpoint as ckpt
from runcontract.atomic import atomic_write_text
from trainer.batches import TrainBatches, WindowSampler, check_data, read_data_meta
from trainer.checks import overfit_microset
from trainer.cpu_threads import apply_cpu_threads
from trainer.cli_args import add_config_args, load_configs
from runcontract.config import ModelConfig, TrainConfig
from runcontract.errors import UserError, cli_main
from runcontract.manifest import ManifestError, read_manifest, verify_manifest
from runcontract.budget import spent as budget_spent
from runcontract.run_files import EvalMetrics, Throughput, TrainMetrics
from runcontract.run_folder import (
    CHECKPOINTS_DIR, CONFIG_FILE, FAILED, FINAL_DIR, FINISHED, RANKS_FILE, STATUS_FILE, STOPPED, THROUGHPUT_FILE, TRAIN_LOG,
    recency, step_dir_name, step_of_dir,
)
from trainer.metrics_log import RunLog, train_line
from trainer.model import Transformer
from trainer.precision import autocast_dtype, device_name, enable_fast_matmul, peak_flops
from trainer.run_control import StopSignals, lock_run_dir, share_main_result
from trainer.schedule import CosineSchedule
from trainer.stream_resume import describe_change, keep_stream
from trainer.trackers import accelerator_kwargs as tracker_kwargs
from trainer.trackers import start_trackers
from trainer.train_step import StepMonitor, TrainStep, compile_model, prepare_model
from trainer.validation import evaluate, fixed_prompt_sample, format_eval, load_tokenizer, validation_sets

_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the repository's, wherever the run starts
SMOKE_MODEL_CONFIG = str(_CONFIGS / "model_smoke.yaml")
SMOKE_TRAIN_CONFIG = str(_CONFIGS / "train_smoke.yaml")
DEFAULT_MICRO_BATCH = 8


@dataclass
class Options:
    """Command-line choices that are not part of the configs."""

    smoke: bool = False
    resume: Optional[str] = None  # None: automatic; "latest" or a path: explicit
    allow_over_budget: bool = False
    stop_at_step: Optional[int] = None


@dataclass
class BatchPlan:
    micro_batch_size: int
    grad_accum: int
    world_size: int
    tokens_per_step: int  # effective, over all ranks
    max_steps: int


# -- setup helpers ------------------------------------------------------------------------------
def resolve_micro_batch(train_cfg: TrainConfig, run_dir: Path) -> tuple[int, str]:
    if train_cfg.micro_batch_size is not None:
        return train_cfg.micro_batch_size, "train config"
    throughput = run_dir / THROUGHPUT_FILE
    if throughput.is_file():
        try:
            value = Throughput.read(throughput).micro_batch_size
        except UserError:
            value = None
        if value is not None and value >= 1:
            return value, str(throughput)
    return DEFAULT_MICRO_BATCH, f"default (no {THROUGHPUT_FILE})"


def plan_batches(train_cfg: TrainConfig, micro_batch_size: int, world_size: int) -> BatchPlan:
    """Gradient accumulation that comes closest to train.tokens_per_step (at least one micro-batch)."""
    per_micro = micro_batch_size * train_cfg.seq_len * world_size
    grad_accum = max(1, round(train_cfg.tokens_per_step / per_micro))
    tokens_per_step = grad_accum * per_micro
    max_steps = train_cfg.max_steps or math.ceil(train_cfg.target_tokens / tokens_per_step)
    return BatchPlan(micro_batch_size, grad_accum, world_size, tokens_per_step, max_steps)


def find_resume_point(run_dir: Path, resume: Optional[str]) -> Optional[Path]:
    """The checkpoint to resume from, verified (hashes included), or None for a fresh start.

    Automatically (``resume`` None) the newest checkpoint folder is taken; if it is broken the
    run stops rather than silently falling back and later overwriting it."""
    if resume not in (None, "latest"):
        folder = ckpt.resolve_checkpoint_path(resume)
    else:
        candidates = []
        for folder in (run_dir / CHECKPOINTS_DIR).glob("step_*"):
            step = step_of_dir(folder.name)
            if step is not None:
                candidates.append((step, folder))
        final = run_dir / FINAL_DIR
        if final.is_dir():
            try:
                step = int(read_manifest(final).meta.get("step", 0))
            except ManifestError:
                step = sys.maxsize  # a broken final/ is reported below
            candidates.append((step, final))
        if not candidates:
            if resume == "latest":
                raise UserError(f"--resume was given but {run_dir} has no checkpoints; drop --resume to start a fresh run.")
            return None
        folder = max(candidates, key=lambda found: recency(found[0], found[1].name))[1]
    try:
        verify_manifest(folder, check_hashes=True)
    except ManifestError as exc:
        raise ckpt.CheckpointError(
            f"cannot resume: {exc} Nothing was changed. Delete that folder to resume from an earlier "
            f"checkpoint, or pass --resume runs/<name>/checkpoints/step_NNNNNN explicitly."
        ) from None
    return folder


def check_same_model(folder: Path, model_cfg: ModelConfig) -> None:
    saved = ckpt.read_model_config(folder)
    if saved.to_dict() != model_cfg.to_dict():
        diffs = [f"{k}: checkpoint {v!r}, config {model_cfg.to_dict()[k]!r}" for k, v in saved.to_dict().items() if model_cfg.to_dict()[k] != v]
        raise ckpt.CheckpointError(f"{folder} was written for another model shape ({'; '.join(diffs)}). Resume with the model config it was trained with, or use a new train.run_name.")


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


# -- the run ------------------------------------------------------------------------------------
def train(model_cfg: ModelConfig, train_cfg: TrainConfig, options: Options) -> str:
    """Run (or resume) training; returns the final state: "finished" or "stopped"."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    # Precision and compilation are this config's business, not accelerate's environment.
    threads_line = apply_cpu_threads(train_cfg.cpu_threads)  # before any torch work: a busy CPU must not collapse speed
    accelerator = Accelerator(mixed_precision="no", dynamo_backend="no", **tracker_kwargs(train_cfg))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    run_dir = Path(train_cfg.runs_dir) / train_cfg.run_name
    data_dir = Path(train_cfg.data_dir)

    # 1. Check every input before writing anything (same answer on every rank).
    if train_cfg.seq_len > model_cfg.max_seq_len:
        raise UserError(f"train.seq_len {train_cfg.seq_len} does not fit the model's context (model.max_seq_len {model_cfg.max_seq_len}); lower train.seq_len or raise model.max_seq_len.")
    if options.smoke and not (data_dir / "train.bin").is_file():
        def build_smoke_data():
            from trainer.smoke_data import ensure_smoke_data

            tokenizer_dir = Path(train_cfg.tokenizer_model).parent if train_cfg.tokenizer_model else data_dir / "tokenizer"
            print(f"--smoke: building a tiny dataset in {data_dir} (tokenizer in {tokenizer_dir})", flush=True)
            ensure_smoke_data(data_dir, tokenizer_dir, model_cfg.vocab_size)
        share_main_result(accelerator, build_smoke_data)
    data_facts = check_data(data_dir, model_cfg.vocab_size, train_cfg.seq_len)
    resume_from = find_resume_point(run_dir, options.resume)
    if resume_from is not None:
        check_same_model(resume_from, model_cfg)
    lock = lock_run_dir(run_dir) if is_main else None

    log = RunLog(run_dir, enabled=is_main)
    micro_batch, micro_source = resolve_micro_batch(train_cfg, run_dir)
    train_cfg = train_cfg.model_copy(deep=True)
    train_cfg.micro_batch_size = micro_batch
    plan = plan_batches(train_cfg, micro_batch, world)
    train_sha256 = ((read_data_meta(data_dir) or {}).get("files") or {}).get("train", {}).get("sha256")
    if resume_from is not None:  # keep the checkpoint's global batch and sample stream on this hardware
        saved = ckpt.load_training_state(resume_from)
        current = {"sampling": train_cfg.sampling, "seed": train_cfg.seed, "seq_len": train_cfg.seq_len,
                   "train_tokens": data_facts["train_tokens"], "train_sha256": train_sha256}
        kept_micro, kept_accum = keep_stream(saved.data_state, current, micro_batch, world, saved.step, log.log)
        if kept_accum:
            train_cfg.micro_batch_size = kept_micro
            kept_tokens = kept_micro * kept_accum * world * train_cfg.seq_len
            plan = BatchPlan(kept_micro, kept_accum, world, kept_tokens, train_cfg.max_steps or math.ceil(train_cfg.target_tokens / kept_tokens))
            change = describe_change(saved.data_state, kept_micro, kept_accum, world)
            if change:
                log.log(change)
    amp_dtype = autocast_dtype(train_cfg.precision, device)
    enable_fast_matmul(device)

    log.log(f"run {train_cfg.run_name}: {run_dir.resolve()} (pid {os.getpid()})")
    log.log(f"device {device_name(device)}, world size {world}, precision {amp_dtype or torch.float32}, compile {train_cfg.compile}")
    log.log(threads_line)
    log.log(f"data {data_dir}: {data_facts['train_tokens']:,} train / {data_facts['val_tokens']:,} val tokens")
    log.log(
        f"batch: {plan.micro_batch_size} x {train_cfg.seq_len} tokens per micro-batch ({micro_source}), "
        f"{plan.grad_accum} accumulation steps x {world} ranks = {plan.tokens_per_step:,} tokens per step"
        + (f" (asked for {train_cfg.tokens_per_step:,})" if plan.tokens_per_step != train_cfg.tokens_per_step else "")
        + f"; {plan.max_steps:,} steps"
    )

    # 2. Cost gate: refuses a run projected over budget.max_cost (unless allowed).
    if options.allow_over_budget:
        log.log("--allow_over_budget: the cost gate will not stop this run")
    from trainer import cost

    share_main_result(accelerator, lambda: cost.gate(train_cfg, model_cfg, run_dir, options.allow_over_budget))

    resolved = {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
                "runtime": {"world_size": world, "grad_accum": plan.grad_accum, "tokens_per_step": plan.tokens_per_step, "max_steps": plan.max_steps},
                "data": read_data_meta(data_dir) or {}}
    if is_main:
        atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))

    # 3. Model and optimizer (restored when resuming).
    torch.manual_seed(train_cfg.seed)  # same init on every rank
    raw_model = Transformer(model_cfg)
    log.log(f"model: {raw_model.num_parameters():,} parameters ({raw_model.num_parameters(exclude_embeddings=True):,} non-embedding)")
    start_step, tokens_seen, prior_elapsed, last_val = 0, 0, 0.0, None
    state = None
    if resume_from is not None:
        state = ckpt.load_training_state(resume_from)
        ckpt.load_weights(raw_model, resume_from)
        start_step, tokens_seen, prior_elapsed, last_val = state.step, state.tokens_seen, state.elapsed_s, state.val_loss
        log.log(f"resuming from {resume_from} at step {start_step} ({tokens_seen:,} tokens seen)")
    prepare_model(raw_model.to(device), train_cfg, device)  # train.speed levers
    make_optimizer = lambda m, lr: m.configure_optimizer(train_cfg.weight_decay, lr, (train_cfg.beta1, train_cfg.beta2), train_cfg.eps, device.type)  # noqa: E731
    optimizer = make_optimizer(raw_model, train_cfg.lr)
    if resume_from is not None:
        ckpt.load_optimizer_state(optimizer, resume_from, map_location=device)
        if rank < len(state.rng_states):
            ckpt.restore_rng_state(state.rng_states[rank])
        else:
            log.log(f"warning: the checkpoint has RNG states for {len(state.rng_states)} ranks, this run has {world}; new ranks start from fresh seeds")
    else:
        random.seed(train_cfg.seed + rank)
        np.random.seed(train_cfg.seed + rank)
        torch.manual_seed(train_cfg.seed + rank)

    if resume_from is not None and start_step >= plan.max_steps:
        # A finished run: rewriting status.json would lose its figures; say how to train further.
        log.log(f"nothing to do: run {train_cfg.run_name} is already at step {start_step} of {plan.max_steps}; status.json "
                "is left as it was. Train further with a larger train.max_steps / train.target_tokens, or a new train.run_name.")
        log.close()
        if lock is not None:
            lock.close()
        return FINISHED

    log.phase("setup")  # status.json says the trainer has started (the launcher's stages wrote "preparing")

    # 4. Overfit check on a fresh run (a resumed one passed it already).
    check = train_cfg.checks.overfit_microset
    if check.enabled and resume_from is None:
        def run_check():
            check_seq = min(check.seq_len, train_cfg.seq_len)
            batch = WindowSampler(data_dir / "train.bin", check_seq, check.batch_size, train_cfg.seed, 0, model_cfg.vocab_size, device).get(0, 0)
            lr = check.lr if check.lr is not None else train_cfg.lr
            log.log(f"overfit check: {check.steps} steps on one batch of {check.batch_size}x{check_seq} tokens at lr {lr:g}")
            log.phase("overfit-check", f"0/{check.steps} steps")

            def progress(done: int, loss: float) -> None:
                log.log(f"overfit check: step {done}/{check.steps}, loss {loss:.4f}")
                log.phase("overfit-check", f"{done}/{check.steps} steps, loss {loss:.4f}")
            overfit_microset(raw_model, batch, check, lr, make_optimizer, amp_dtype, log.log, progress=progress)
        try:
            share_main_result(accelerator, run_check)
        except UserError as exc:
            log.error(str(exc))
            log.status(FAILED, step=0, max_steps=plan.max_steps, tokens_seen=0, loss=None, val_loss=None,
                       tokens_per_sec=0.0, elapsed_s=0.0, cost_spent=0.0, world_size=world)
            raise

    # 5. Fit.
    if is_main:
        log.tracker_sink = start_trackers(accelerator, train_cfg, resolved, log.log)
    ddp_model, optimizer = accelerator.prepare(raw_model, optimizer)  # DDP-wrapped when world > 1
    model = ddp_model
    if train_cfg.compile:
        log.log(f"compiling the model (torch.compile, mode {train_cfg.speed.compile_mode}): the first steps are slow")
        model = compile_model(ddp_model, train_cfg)
    train_step = TrainStep(model, optimizer, device, amp_dtype, train_cfg.grad_clip, backward=accelerator.backward,
                           no_sync=lambda: accelerator.no_sync(ddp_model), clip_grad_norm=accelerator.clip_grad_norm_)
    monitor = StepMonitor(device)
    schedule = CosineSchedule(train_cfg.lr, train_cfg.warmup_steps, plan.max_steps, train_cfg.min_lr_ratio)
    sampler = TrainBatches(data_dir / "train.bin", train_cfg.seq_len, plan.micro_batch_size, plan.grad_accum, world, rank,
                           train_cfg.seed, model_cfg.vocab_size, device, train_cfg.sampling, train_sha256)
    log.log(f"data order: {train_cfg.sampling} sampling over {sampler.stream.n_windows:,} windows of {train_cfg.seq_len + 1} tokens, "
            f"{sampler.global_batch} per step; starting at epoch {sampler.epoch(start_step):.3f}")
    val_sets = validation_sets(data_dir, train_cfg, model_cfg.vocab_size, log.log)
    last_eval: dict = (state.val_scores if state is not None else None) or {}  # a resume shows the last eval until the next
    tokenizer = load_tokenizer(train_cfg, model_cfg.vocab_size, log.log) if is_main else None
    flops_per_token = raw_model.flops_per_token(train_cfg.seq_len)
    peak = peak_flops(device)
    budget = train_cfg.budget
    signals = StopSignals(log.log)
    signals.install()
    started = time.time()
    elapsed = lambda: prior_elapsed + time.time() - started  # noqa: E731
    spent = lambda: budget_spent(elapsed(), budget.hourly_rate)  # noqa: E731
    step = start_step
    last_loss, tokens_per_sec = None, 0.0
    interval_tokens, interval_time = 0, 0.0
    first_batch_sha = None

    def snapshot() -> ckpt.TrainingState:
        rngs = gather_object([ckpt.capture_rng_state()]) if world > 1 else [ckpt.capture_rng_state()]
        return ckpt.TrainingState(step=step, tokens_seen=tokens_seen, elapsed_s=elapsed(), cost_spent=spent(), val_loss=last_val,
                                  world_size=world, data_state=sampler.state_dict(step), scheduler_state=schedule.state_dict(step), rng_states=rngs,
                                  val_scores=last_eval or None)

    def fail_non_finite(what: str, lr: float) -> None:
        latest = ckpt.latest_checkpoint(run_dir)
        raise UserError(
            f"{what} by step {step} (lr {lr:.3e}); the run is stopped and no checkpoint was written from it. "
            f"The last good checkpoint is {latest or 'none (none was written yet)'}. Lower train.lr, raise "
            f"train.warmup_steps or check the data, then rerun (it resumes from that checkpoint)."
        )

    def save(folder: Path, what: str) -> None:
        # An update can leave inf/NaN weights that only the next step's loss would show: never save those.
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
            raise UserError(
                f"the weights became non-finite at step {step} (an update with lr {schedule.lr_at(step - 1):.3e} blew up); "
                f"the run is stopped and no checkpoint was written from it. The last good checkpoint is "
                f"{ckpt.latest_checkpoint(run_dir) or 'none (none was written yet)'}. Lower train.lr, raise "
                f"train.warmup_steps or check the data, then rerun (it resumes from that checkpoint)."
            )
        state = snapshot()  # a collective: every rank takes part
        if is_main:
            t0 = time.time()
            log.phase("checkpoint", str(folder))
            ckpt.save_checkpoint(folder, raw_model, optimizer, state, resolved)
            removed = ckpt.prune_checkpoints(run_dir, train_cfg.keep_last)
            log.log(f"{what} checkpoint: {folder} ({time.time() - t0:.1f} s)" + (f"; removed {len(removed)} old" if removed else ""))
            log.phase("training")
        accelerator.wait_for_everyone()

    def status(state_name: str) -> None:
        log.status(state_name, step=step, max_steps=plan.max_steps, tokens_seen=tokens_seen, loss=last_loss, val_loss=last_val,
                   tokens_per_sec=tokens_per_sec, elapsed_s=elapsed(), cost_spent=spent(), world_size=world,
                   val_bpb=(last_eval.get("mix") or {}).get("bpb"), val_sources={k: v for k, v in last_eval.items() if k != "mix"},
                   epoch=sampler.epoch(step))

    final_state = FINISHED
    try:
        if step >= plan.max_steps:
            log.log(f"nothing to do: already at step {step} of {plan.max_steps}")
        log.phase_name = "training"
        status("running")
        if is_main:
            ckpt.prune_checkpoints(run_dir, train_cfg.keep_last)  # leftovers of a killed write
        model.train()
        while step < plan.max_steps:
            t0 = time.perf_counter()
            lr = schedule.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if sampler.stream.sampling == "epoch" and int(sampler.epoch(step)) > int(sampler.epoch(step - 1)) and step > 0:
                log.log(f"epoch {int(sampler.epoch(step))} begins at step {step}: every window of train.bin was used once per epoch so far")

            def micro_batches():
                nonlocal first_batch_sha
                for micro in range(plan.grad_accum):
                    inputs, targets = sampler.get(step, micro)
                    if first_batch_sha is None:
                        first_batch_sha = hashlib.sha256(inputs.cpu().numpy().tobytes()).hexdigest()
                    yield inputs, targets
            monitor.add(train_step(micro_batches(), plan.grad_accum))
            step += 1
            tokens_seen += plan.tokens_per_step
            interval_tokens += plan.tokens_per_step

            # Reading the device waits for it: only at log, eval and checkpoint steps (one small
            # collective then: mean loss, grad norm, any non-finite step, whether a rank must stop).
            over_budget = budget.reached(spent())
            host_flags = [float(signals.requested is not None), float(over_budget)]
            due = (step % train_cfg.log_interval == 0 or step % train_cfg.eval_interval == 0
                   or step % train_cfg.checkpoint_interval == 0 or step == plan.max_steps
                   or (options.stop_at_step is not None and step >= options.stop_at_step))
            flags = [0.0, 0.0, 0.0, 0.0, 0.0]
            if due or (world == 1 and any(host_flags)):
                flags = monitor.read(host_flags, lambda t: accelerator.reduce(t, reduction="sum"), world)
                last_loss, grad_norm = flags[0], flags[1]
                if not math.isfinite(last_loss) or flags[2] > 0:
                    fail_non_finite(f"the loss or gradient norm became non-finite (last loss {last_loss:.4f}, gradient norm {grad_norm:.4g})", lr)
            interval_time += time.perf_counter() - t0

            stop_reason = None
            if flags[3] > 0:
                stop_reason = "signal"
            elif flags[4] > 0:
                stop_reason = "budget"
            elif options.stop_at_step is not None and step >= options.stop_at_step and step < plan.max_steps:
                stop_reason = "stop_at_step"
            last = step == plan.max_steps or stop_reason is not None

            if step % train_cfg.log_interval == 0 or last:
                tokens_per_sec = interval_tokens / max(interval_time, 1e-9)
                mfu = flops_per_token * tokens_per_sec / (peak * world) if peak else None
                log.metrics(TrainMetrics(step=step, tokens_seen=tokens_seen, loss=last_loss, lr=lr,
                                         grad_norm=float(grad_norm), tokens_per_sec=tokens_per_sec, mfu=mfu, epoch=sampler.epoch(step),
                                         elapsed_s=elapsed(), cost_spent=spent(), time=time.time()))
                log.log(train_line(step, plan.max_steps, last_loss, lr, float(grad_norm), tokens_per_sec, mfu, elapsed(), spent()) + f" | epoch {sampler.epoch(step):.3f}")
                status("running")
                interval_tokens, interval_time = 0, 0.0

            if step % train_cfg.eval_interval == 0 or step == plan.max_steps:
                t_eval = time.time()
                log.phase("eval")
                last_eval = evaluate(model, val_sets, train_cfg, plan.micro_batch_size, accelerator, amp_dtype, model_cfg.vocab_size)
                last_val = last_eval["mix"]["loss"]
                log.metrics(EvalMetrics(step=step, tokens_seen=tokens_seen, val_loss=last_val, val_bpb=last_eval["mix"]["bpb"],
                                        val_sources={k: v for k, v in last_eval.items() if k != "mix"}, elapsed_s=elapsed(), time=time.time()))
                log.log(f"eval step {step}: {format_eval(last_eval)} ({time.time() - t_eval:.1f} s)")
                log.phase("training")
                log.plot_loss_curve()
                if tokenizer is not None:
                    text = fixed_prompt_sample(raw_model, tokenizer, train_cfg, device, amp_dtype, step)
                    log.append_sample(f"step {step} (tokens {tokens_seen:,}, val loss {last_val:.4f}):\n{train_cfg.fixed_prompt}{text}")
                    log.log(f"sample: {train_cfg.fixed_prompt}{text!r}")

            if stop_reason is not None:
                if stop_reason == "budget":
                    log.log(f"budget reached: ${spent():.2f} spent of budget.max_cost ${budget.max_cost:.2f}; stopping at step {step} with a final checkpoint")
                    save(run_dir / FINAL_DIR, "final")  # the model the budget bought; raise max_cost to resume from it
                else:
                    why = f"{signals.requested} received" if stop_reason == "signal" else f"--stop_at_step {options.stop_at_step}"
                    log.log(f"stopping at step {step} ({why}); the run resumes from this checkpoint when started again")
                    save(run_dir / CHECKPOINTS_DIR / step_dir_name(step), "stop")
                final_state = STOPPED
                break
            if step % train_cfg.checkpoint_interval == 0 and step < plan.max_steps:
                save(run_dir / CHECKPOINTS_DIR / step_dir_name(step), "step")
        else:
            if step > start_step or resume_from is None:
                save(run_dir / FINAL_DIR, "final")

        # DDP keeps every rank's weights equal; record it (and which data each rank saw).
        ranks = gather_object([{"rank": rank, "first_batch_sha256": first_batch_sha, "weights_sha256": weights_sha256(raw_model)}])
        if is_main:
            atomic_write_text(run_dir / RANKS_FILE, json.dumps({"world_size": world, "ranks": ranks}, indent=2) + "\n")
            if len({r["weights_sha256"] for r in ranks}) > 1:
                log.log("warning: the ranks' weights differ at the end; data-parallel training went out of sync")
        status(final_state)
        log.log(f"{final_state} at step {step}/{plan.max_steps}: {tokens_seen:,} tokens, loss {last_loss}, val loss {last_val}, "
                f"{elapsed() / 3600:.2f} h, ${spent():.2f}")
        return final_state
    except BaseException as exc:
        if isinstance(exc, UserError):
            log.error(str(exc))
        status(FAILED)
        raise
    finally:
        signals.restore()
        # Closes the trackers (event files, the W&B run) and destroys the process group. torch does not
        # destroy it at exit: gloo's threads then die in static destructors and a rank that finished
        # cleanly can abort ("terminate called without an active exception", SIGABRT).
        accelerator.end_training()
        log.close()
        if lock is not None:
            lock.close()


# -- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description="Train the Llama-style model (one process, or several under accelerate launch).")
    add_config_args(parser, model=True, train=True)
    parser.add_argument("--smoke", action="store_true", help=f"tiny model ({SMOKE_MODEL_CONFIG}) and train config ({SMOKE_TRAIN_CONFIG}) unless given; builds a tiny dataset when train.bin is missing")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="resume from the newest checkpoint (the default when the run folder has one) or from CHECKPOINT")
    parser.add_argument("--allow_over_budget", action="store_true", help="start even when the projected cost exceeds budget.max_cost")
    parser.add_argument("--stop_at_step", type=int, default=None, metavar="N", help="stop cleanly after step N with a checkpoint (resume later)")
    parser.add_argument("--launch_screen", action="store_true", help="re-run this command detached in screen (tmux when screen is absent) and print how to attach")
    return parser


def launch_screen(argv: list[str], train_cfg: TrainConfig) -> None:
    from trainer.detach import launch_detached, pick_multiplexer

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ:
        raise UserError("--launch_screen cannot be used under accelerate launch/torchrun (each rank would detach); "
                        "start the launcher itself in screen: screen -dmS train accelerate launch -m trainer.train ...")
    tool = pick_multiplexer()
    session = f"train-{train_cfg.run_name}"
    command = [sys.executable, "-m", "trainer.train", *[a for a in argv if a != "--launch_screen"]]
    attach = launch_detached(command, session, Path.cwd(), tool)
    run_dir = Path(train_cfg.runs_dir) / train_cfg.run_name
    print(f"training started in {tool} session {session!r}.\n  attach: {attach}\n  log:    tail -f {run_dir / TRAIN_LOG}\n  stop:   kill -TERM <pid in {run_dir / STATUS_FILE}>  (stops at the next step boundary with a checkpoint)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.smoke:  # the smoke configs, unless the user named others
        if args.model_config == parser.get_default("model_config"):
            args.model_config = SMOKE_MODEL_CONFIG
        if args.train_config == parser.get_default("train_config"):
            args.train_config = SMOKE_TRAIN_CONFIG
    model_cfg, train_cfg, _ = load_configs(args)
    if args.stop_at_step is not None and args.stop_at_step < 1:
        raise UserError(f"--stop_at_step must be at least 1, got {args.stop_at_step}.")
    if args.launch_screen:
        launch_screen(argv, train_cfg)
        return 0
    train(model_cfg, train_cfg, Options(smoke=args.smoke, resume=args.resume, allow_over_budget=args.allow_over_budget, stop_at_step=args.stop_at_step))
    return 0


if __name__ == "__main__":
    cli_main(main)()
