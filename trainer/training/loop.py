"""Train the model: prepare (checks, plan, cost gate, model; resume) -> overfit check -> fit -> finish.

    python -m trainer.train --model_config configs/model_100m.yaml --train_config configs/train_100m.yaml
    accelerate launch -m trainer.train ...            # several GPUs (DDP)
    python -m trainer.train --smoke                   # tiny model, tiny data, seconds on a CPU
    python -m trainer.train ... --launch_screen       # the same, detached in tmux (or screen)

Writes under runs/<run_name>/: config.yaml, train.log, metrics.jsonl, status.json,
fixed_prompt_samples.txt, checkpoints/step_NNNNNN/, final/. A run whose folder holds
checkpoints resumes from the newest one (``--resume PATH`` picks another). SIGTERM or Ctrl-C
stops at the next step boundary with a checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import numpy as np
import torch
import yaml

from trainer.training import checkpoint as ckpt
from runcontract.atomic import atomic_write_text
from trainer.training.batches import TrainBatches, WindowSampler, check_data
from trainer.training.overfit_check import overfit_microset
from trainer.training.cpu_threads import apply_cpu_threads
from trainer.cli_args import add_config_args, load_configs
from runcontract.config import ModelConfig, TrainConfig
from runcontract.errors import UserError
from runcontract.manifest import ManifestError, read_manifest, verify_manifest
from runcontract.budget import spent as budget_spent
from runcontract.run_files import EvalMetrics, Throughput, TrainMetrics
from runcontract.run_folder import (
    CHECKPOINTS_DIR, CONFIG_FILE, FAILED, FENCED_FILE, FINAL_DIR, FINISHED, RANKS_FILE, REPORT_JSON, REPORT_MD, STATUS_FILE, STOPPED,
    THROUGHPUT_FILE, TRAIN_LOG,
    recency, step_dir_name, step_of_dir,
)
from trainer.training.metrics_log import RunLog, train_line
from trainer.modeling.transformer import Transformer
from trainer.corpus.prepared_files import read_data_meta
from trainer.training.precision import autocast_dtype, device_name, enable_fast_matmul, peak_flops
from trainer.training.run_control import StopSignals, lock_run_dir, share_main_result
from trainer.training.schedule import CosineSchedule
from trainer.training.stream_resume import describe_change, keep_stream
from trainer.training.trackers import accelerator_kwargs as tracker_kwargs
from trainer.training.trackers import start_trackers
from trainer.training.step import StepMonitor, TrainStep, compile_model, prepare_model
from trainer.training.val_loss import evaluate, fixed_prompt_sample, format_eval, sample_tokenizer, validation_sets

_CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the repository's, wherever the run starts
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


def refuse_resume(run_dir: Path, error: UserError, is_main: bool) -> NoReturn:
    """A resume the trainer will not do ends the run "failed", progress "resume refused: <why>", in
    status.json (keeping the last run's figures) and train.log as well as on stderr, so that
    `launcher status` and `launcher run` show it. Another trainer using the folder keeps its status."""
    refused = type(error)(f"resume refused: {error}")
    if is_main and (run_dir / STATUS_FILE).is_file():
        try:
            lock = lock_run_dir(run_dir)
        except UserError:
            raise refused from None
        log = RunLog(run_dir)
        try:
            log.error(str(refused))
            log.end_before_training(FAILED, str(refused))
        finally:
            log.close()
            lock.close()
    raise refused from None


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


# -- the run: prepare -> fit -> finish ----------------------------------------------------------
def train(model_cfg: ModelConfig, train_cfg: TrainConfig, options: Options) -> str:
    """Run (or resume) training; returns the final state: "finished" or "stopped"."""
    from accelerate import Accelerator

    # Precision and compilation are this config's business, not accelerate's environment.
    threads_line = apply_cpu_threads(train_cfg.cpu_threads)  # before any torch work: a busy CPU must not collapse speed
    accelerator = Accelerator(mixed_precision="no", dynamo_backend="no", **tracker_kwargs(train_cfg))
    try:
        return prepare_and_fit(accelerator, model_cfg, train_cfg, options, threads_line)
    finally:
        accelerator.end_training()  # closes the trackers (event files, the W&B run) and destroys the process group


def prepare_and_fit(accelerator, model_cfg: ModelConfig, train_cfg: TrainConfig, options: Options, threads_line: str) -> str:
    run = prepare(accelerator, model_cfg, train_cfg, options, threads_line)
    if run.resume_from is not None and run.start_step >= run.plan.max_steps:
        # A finished run: rewriting status.json would lose its figures; say how to train further.
        run.log.log(f"nothing to do: run {run.train_cfg.run_name} is already at step {run.start_step} of {run.plan.max_steps}; status.json "
                    "is left as it was. Train further with a larger train.max_steps / train.target_tokens, or a new train.run_name.")
        run.close()
        return FINISHED

    run.log.phase("setup")  # status.json says the trainer has started (the launcher's stages wrote "preparing")
    if run.train_cfg.checks.overfit_microset.enabled and run.resume_from is None:  # a resumed run passed it already
        check_overfit(run)

    loop = Fit(run)
    try:
        final_state = fit(loop)
        finish(loop, final_state)
        return final_state
    except BaseException as exc:
        if isinstance(exc, UserError):
            run.log.error(str(exc))
        loop.status(FAILED)
        raise
    finally:
        loop.signals.restore()
        run.close()


@dataclass
class Prepared:
    """What prepare() builds: checked inputs, the batch plan, the run log, and the model and
    optimizer (restored when resuming)."""

    accelerator: Any
    model_cfg: ModelConfig
    train_cfg: TrainConfig  # the run's copy, with the micro-batch resolved
    options: Options
    run_dir: Path
    data_dir: Path
    log: RunLog
    lock: Any  # the run folder's lock (main rank), released by close()
    plan: BatchPlan
    resolved: dict  # config.yaml's content, saved in every checkpoint
    amp_dtype: Optional[torch.dtype]
    train_sha256: Optional[str]  # data_meta.json's hash of train.bin
    raw_model: Transformer
    optimizer: torch.optim.Optimizer
    resume_from: Optional[Path]
    resumed: Optional[ckpt.TrainingState]  # the state saved in resume_from

    device: torch.device = field(init=False)
    rank: int = field(init=False)
    world: int = field(init=False)  # the number of processes
    is_main: bool = field(init=False)

    def __post_init__(self) -> None:
        accelerator = self.accelerator
        self.device, self.rank, self.world, self.is_main = (accelerator.device, accelerator.process_index,
                                                            accelerator.num_processes, accelerator.is_main_process)

    @property
    def start_step(self) -> int:
        return self.resumed.step if self.resumed is not None else 0

    def make_optimizer(self, model: Transformer, lr: float) -> torch.optim.Optimizer:
        return new_optimizer(model, lr, self.train_cfg, self.device)

    def close(self) -> None:
        self.log.close()
        if self.lock is not None:
            self.lock.close()


def prepare(accelerator, model_cfg: ModelConfig, train_cfg: TrainConfig, options: Options, threads_line: str) -> Prepared:
    """Check every input, plan the batches, pass the cost gate, write config.yaml, build the model
    and optimizer (restored from the resume point when there is one)."""
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    run_dir = Path(train_cfg.runs_dir) / train_cfg.run_name
    data_dir = Path(train_cfg.data_dir)

    # 1. Check every input before writing anything (same answer on every rank).
    if train_cfg.seq_len > model_cfg.max_seq_len:
        raise UserError(f"train.seq_len {train_cfg.seq_len} does not fit the model's context (model.max_seq_len {model_cfg.max_seq_len}); lower train.seq_len or raise model.max_seq_len.")
    if options.smoke and not (data_dir / "train.bin").is_file():
        share_main_result(accelerator, lambda: build_smoke_data(model_cfg, train_cfg, data_dir))
    data_facts = check_data(data_dir, model_cfg.vocab_size, train_cfg.seq_len)
    try:
        resume_from = find_resume_point(run_dir, options.resume)
        if resume_from is not None:
            check_same_model(resume_from, model_cfg)
    except UserError as exc:
        refuse_resume(run_dir, exc, is_main)
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
        try:
            kept_micro, kept_accum = keep_stream(saved.data_state, current, micro_batch, world, saved.step, log.log)
        except UserError as exc:
            log.close()
            if lock is not None:
                lock.close()
            refuse_resume(run_dir, exc, is_main)
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
    from trainer.bench import cost

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
    resumed = None
    if resume_from is not None:
        resumed = ckpt.load_training_state(resume_from)
        ckpt.load_weights(raw_model, resume_from)
        log.log(f"resuming from {resume_from} at step {resumed.step} ({resumed.tokens_seen:,} tokens seen)")
    prepare_model(raw_model.to(device), train_cfg, device)  # train.speed levers
    optimizer = new_optimizer(raw_model, train_cfg.lr, train_cfg, device)
    if resumed is not None:
        ckpt.load_optimizer_state(optimizer, resume_from, map_location=device)
        if rank < len(resumed.rng_states):
            ckpt.restore_rng_state(resumed.rng_states[rank])
        else:
            log.log(f"warning: the checkpoint has RNG states for {len(resumed.rng_states)} ranks, this run has {world}; new ranks start from fresh seeds")
    else:
        random.seed(train_cfg.seed + rank)
        np.random.seed(train_cfg.seed + rank)
        torch.manual_seed(train_cfg.seed + rank)
    return Prepared(accelerator, model_cfg, train_cfg, options, run_dir, data_dir, log, lock, plan, resolved, amp_dtype,
                    train_sha256, raw_model, optimizer, resume_from, resumed)


def new_optimizer(model: Transformer, lr: float, train_cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    return model.configure_optimizer(train_cfg.weight_decay, lr, (train_cfg.beta1, train_cfg.beta2), train_cfg.eps, device.type)


def build_smoke_data(model_cfg: ModelConfig, train_cfg: TrainConfig, data_dir: Path) -> None:
    from trainer.corpus.smoke_data import ensure_smoke_data

    tokenizer_dir = Path(train_cfg.tokenizer_model).parent if train_cfg.tokenizer_model else data_dir / "tokenizer"
    print(f"--smoke: building a tiny dataset in {data_dir} (tokenizer in {tokenizer_dir})", flush=True)
    ensure_smoke_data(data_dir, tokenizer_dir, model_cfg.vocab_size)


def check_overfit(run: Prepared) -> None:
    """The overfit check on the main rank (a fresh run's); its failure ends the run on every rank."""
    check, train_cfg, log = run.train_cfg.checks.overfit_microset, run.train_cfg, run.log

    def run_check() -> None:
        check_seq = min(check.seq_len, train_cfg.seq_len)
        batch = WindowSampler(run.data_dir / "train.bin", check_seq, check.batch_size, train_cfg.seed, 0, run.model_cfg.vocab_size, run.device).get(0, 0)
        lr = check.lr if check.lr is not None else train_cfg.lr
        log.log(f"overfit check: {check.steps} steps on one batch of {check.batch_size}x{check_seq} tokens at lr {lr:g}")
        log.phase("overfit-check", f"0/{check.steps} steps")

        def progress(done: int, loss: float) -> None:
            log.log(f"overfit check: step {done}/{check.steps}, loss {loss:.4f}")
            log.phase("overfit-check", f"{done}/{check.steps} steps, loss {loss:.4f}")
        overfit_microset(run.raw_model, batch, check, lr, run.make_optimizer, run.amp_dtype, log.log, progress=progress)
    try:
        share_main_result(run.accelerator, run_check)
    except UserError as exc:
        log.error(str(exc))
        log.status(FAILED, step=0, max_steps=run.plan.max_steps, tokens_seen=0, loss=None, val_loss=None,
                   tokens_per_sec=0.0, elapsed_s=0.0, cost_spent=0.0, world_size=run.world)
        raise


class Fit:
    """The training loop's state: the wrapped model, the step function, the sampler and
    schedule, and the counters that status.json, metrics and checkpoints report."""

    def __init__(self, run: Prepared):
        self.run = run
        train_cfg, plan, log, device = run.train_cfg, run.plan, run.log, run.device
        if run.is_main:
            log.tracker_sink = start_trackers(run.accelerator, train_cfg, run.resolved, log.log)
        # DDP-wrapped when world > 1; the run keeps the wrapped optimizer (checkpoints save it)
        self.ddp_model, run.optimizer = run.accelerator.prepare(run.raw_model, run.optimizer)
        self.model = self.ddp_model
        if train_cfg.compile:
            log.log(f"compiling the model (torch.compile, mode {train_cfg.speed.compile_mode}): the first steps are slow")
            self.model = compile_model(self.ddp_model, train_cfg)
        self.train_step = TrainStep(self.model, run.optimizer, device, run.amp_dtype, train_cfg.grad_clip, backward=run.accelerator.backward,
                                    no_sync=lambda: run.accelerator.no_sync(self.ddp_model), clip_grad_norm=run.accelerator.clip_grad_norm_)
        self.monitor = StepMonitor(device)
        self.schedule = CosineSchedule(train_cfg.lr, train_cfg.warmup_steps, plan.max_steps, train_cfg.min_lr_ratio)
        self.sampler = TrainBatches(run.data_dir / "train.bin", train_cfg.seq_len, plan.micro_batch_size, plan.grad_accum, run.world, run.rank,
                                    train_cfg.seed, run.model_cfg.vocab_size, device, train_cfg.sampling, run.train_sha256)
        log.log(f"data order: {train_cfg.sampling} sampling over {self.sampler.stream.n_windows:,} windows of {train_cfg.seq_len + 1} tokens, "
                f"{self.sampler.global_batch} per step; starting at epoch {self.sampler.epoch(run.start_step):.3f}")
        run_tokenizer = sample_tokenizer(train_cfg, run.model_cfg.vocab_size, log.log)  # every rank counts its windows' bytes
        self.val_sets = validation_sets(run.data_dir, train_cfg, run_tokenizer, log.log)
        resumed = run.resumed
        self.last_eval: dict = (resumed.val_scores if resumed is not None else None) or {}  # a resume shows the last eval until the next
        self.tokenizer = run_tokenizer if run.is_main else None
        self.flops_per_token = run.raw_model.flops_per_token(train_cfg.seq_len)
        self.peak = peak_flops(device)
        self.budget = train_cfg.budget
        self.signals = StopSignals(log.log)
        self.signals.install()
        self.started = time.time()
        self.prior_elapsed = resumed.elapsed_s if resumed is not None else 0.0
        self.step = run.start_step
        self.tokens_seen = resumed.tokens_seen if resumed is not None else 0
        self.last_val = resumed.val_loss if resumed is not None else None
        self.last_loss, self.tokens_per_sec = None, 0.0
        self.interval_tokens, self.interval_time = 0, 0.0
        self.first_batch_sha = None

    def elapsed(self) -> float:
        return self.prior_elapsed + time.time() - self.started

    def spent(self) -> float:
        return budget_spent(self.elapsed(), self.budget.hourly_rate)

    def micro_batches(self):
        """This step's micro-batches on this rank (the first one's hash is recorded in ranks.json)."""
        for micro in range(self.run.plan.grad_accum):
            inputs, targets = self.sampler.get(self.step, micro)
            if self.first_batch_sha is None:
                self.first_batch_sha = hashlib.sha256(inputs.cpu().numpy().tobytes()).hexdigest()
            yield inputs, targets

    def snapshot(self) -> ckpt.TrainingState:
        from accelerate.utils import gather_object

        world = self.run.world
        rngs = gather_object([ckpt.capture_rng_state()]) if world > 1 else [ckpt.capture_rng_state()]
        return ckpt.TrainingState(step=self.step, tokens_seen=self.tokens_seen, elapsed_s=self.elapsed(), cost_spent=self.spent(), val_loss=self.last_val,
                                  world_size=world, data_state=self.sampler.state_dict(self.step), scheduler_state=self.schedule.state_dict(self.step), rng_states=rngs,
                                  val_scores=self.last_eval or None)

    def non_finite_stop(self, what: str) -> UserError:
        """The error that stops a run whose loss, gradients or weights went non-finite."""
        latest = ckpt.latest_checkpoint(self.run.run_dir)
        return UserError(
            f"{what}; the run is stopped and no checkpoint was written from it. "
            f"The last good checkpoint is {latest or 'none (none was written yet)'}. Lower train.lr, raise "
            f"train.warmup_steps or check the data, then rerun (it resumes from that checkpoint)."
        )

    def save(self, folder: Path, what: str) -> None:
        run, log = self.run, self.run.log
        # An update can leave inf/NaN weights that only the next step's loss would show: never save those.
        if not all(torch.isfinite(p).all() for p in run.raw_model.parameters()):
            raise self.non_finite_stop(f"the weights became non-finite at step {self.step} (an update with lr {self.schedule.lr_at(self.step - 1):.3e} blew up)")
        state = self.snapshot()  # a collective: every rank takes part
        if run.is_main and (Path(run.run_dir) / FENCED_FILE).exists():
            # the agent found a newer fencing generation in the store: another box owns this run now
            log.log(f"not writing the {what} checkpoint {folder}: this box is fenced (another box owns the run)")
            run.accelerator.wait_for_everyone()
            return
        if run.is_main:
            t0 = time.time()
            log.phase("checkpoint", str(folder))
            ckpt.save_checkpoint(folder, run.raw_model, run.optimizer, state, run.resolved)
            removed = ckpt.prune_checkpoints(run.run_dir, run.train_cfg.keep_last)
            log.log(f"{what} checkpoint: {folder} ({time.time() - t0:.1f} s)" + (f"; removed {len(removed)} old" if removed else ""))
            log.phase("training")
        run.accelerator.wait_for_everyone()

    def status(self, state_name: str) -> None:
        self.run.log.status(state_name, step=self.step, max_steps=self.run.plan.max_steps, tokens_seen=self.tokens_seen, loss=self.last_loss,
                            val_loss=self.last_val, tokens_per_sec=self.tokens_per_sec, elapsed_s=self.elapsed(), cost_spent=self.spent(),
                            world_size=self.run.world, val_bpb=(self.last_eval.get("mix") or {}).get("bpb"),
                            val_sources={k: v for k, v in self.last_eval.items() if k != "mix"}, epoch=self.sampler.epoch(self.step))

    def evaluate(self) -> None:
        """Val loss on the fixed windows, the loss curve, and the fixed-prompt sample."""
        run, log, train_cfg = self.run, self.run.log, self.run.train_cfg
        t_eval = time.time()
        log.phase("eval")
        self.last_eval = evaluate(self.model, self.val_sets, train_cfg, run.plan.micro_batch_size, run.accelerator, run.amp_dtype, run.model_cfg.vocab_size)
        self.last_val = self.last_eval["mix"]["loss"]
        log.metrics(EvalMetrics(step=self.step, tokens_seen=self.tokens_seen, val_loss=self.last_val, val_bpb=self.last_eval["mix"]["bpb"],
                                val_sources={k: v for k, v in self.last_eval.items() if k != "mix"}, elapsed_s=self.elapsed(), time=time.time()))
        log.log(f"eval step {self.step}: {format_eval(self.last_eval)} ({time.time() - t_eval:.1f} s)")
        log.phase("training")
        log.plot_loss_curve()
        if self.tokenizer is not None:
            text = fixed_prompt_sample(run.raw_model, self.tokenizer, train_cfg, run.device, run.amp_dtype, self.step)
            log.append_sample(f"step {self.step} (tokens {self.tokens_seen:,}, val loss {self.last_val:.4f}):\n{train_cfg.fixed_prompt}{text}")
            log.log(f"sample: {train_cfg.fixed_prompt}{text!r}")


def fit(loop: Fit) -> str:
    """The training loop, until max_steps or a stop (signal, budget, --stop_at_step); returns
    the final state. Checkpoints on the way, and at the end (final/ or the stop's step folder)."""
    run = loop.run
    accelerator, train_cfg, plan, log, options = run.accelerator, run.train_cfg, run.plan, run.log, run.options
    world, budget, sampler, signals = run.world, loop.budget, loop.sampler, loop.signals
    log.phase_name = "training"
    loop.status("running")
    if run.is_main:
        ckpt.prune_checkpoints(run.run_dir, train_cfg.keep_last)  # leftovers of a killed write
    loop.model.train()
    while loop.step < plan.max_steps:
        t0 = time.perf_counter()
        lr = loop.schedule.lr_at(loop.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        step = loop.step
        if sampler.stream.sampling == "epoch" and int(sampler.epoch(step)) > int(sampler.epoch(step - 1)) and step > 0:
            log.log(f"epoch {int(sampler.epoch(step))} begins at step {step}: every window of train.bin was used once per epoch so far")
        loop.monitor.add(loop.train_step(loop.micro_batches(), plan.grad_accum))
        loop.step = step = step + 1
        loop.tokens_seen += plan.tokens_per_step
        loop.interval_tokens += plan.tokens_per_step

        # Reading the device waits for it: only at log, eval and checkpoint steps (one small
        # collective then: mean loss, grad norm, any non-finite step, whether a rank must stop).
        over_budget = budget.reached(loop.spent())
        host_flags = [float(signals.requested is not None), float(over_budget)]
        due = (step % train_cfg.log_interval == 0 or step % train_cfg.eval_interval == 0
               or step % train_cfg.checkpoint_interval == 0 or step == plan.max_steps
               or (options.stop_at_step is not None and step >= options.stop_at_step))
        flags = [0.0, 0.0, 0.0, 0.0, 0.0]
        if due or (world == 1 and any(host_flags)):
            flags = loop.monitor.read(host_flags, lambda t: accelerator.reduce(t, reduction="sum"), world)
            loop.last_loss, grad_norm = flags[0], flags[1]
            if not math.isfinite(loop.last_loss) or flags[2] > 0:
                raise loop.non_finite_stop(f"the loss or gradient norm became non-finite (last loss {loop.last_loss:.4f}, "
                                           f"gradient norm {grad_norm:.4g}) by step {loop.step} (lr {lr:.3e})")
        loop.interval_time += time.perf_counter() - t0

        stop_reason = None
        if flags[3] > 0:
            stop_reason = "signal"
        elif flags[4] > 0:
            stop_reason = "budget"
        elif options.stop_at_step is not None and step >= options.stop_at_step and step < plan.max_steps:
            stop_reason = "stop_at_step"
        last = step == plan.max_steps or stop_reason is not None

        if step % train_cfg.log_interval == 0 or last:
            loop.tokens_per_sec = loop.interval_tokens / max(loop.interval_time, 1e-9)
            mfu = loop.flops_per_token * loop.tokens_per_sec / (loop.peak * world) if loop.peak else None
            log.metrics(TrainMetrics(step=step, tokens_seen=loop.tokens_seen, loss=loop.last_loss, lr=lr,
                                     grad_norm=float(grad_norm), tokens_per_sec=loop.tokens_per_sec, mfu=mfu, epoch=sampler.epoch(step),
                                     elapsed_s=loop.elapsed(), cost_spent=loop.spent(), time=time.time()))
            log.log(train_line(step, plan.max_steps, loop.last_loss, lr, float(grad_norm), loop.tokens_per_sec, mfu, loop.elapsed(), loop.spent())
                    + f" | epoch {sampler.epoch(step):.3f}")
            loop.status("running")
            loop.interval_tokens, loop.interval_time = 0, 0.0

        if step % train_cfg.eval_interval == 0 or step == plan.max_steps:
            loop.evaluate()

        if stop_reason is not None:
            if stop_reason == "budget":
                log.log(f"budget reached: ${loop.spent():.2f} spent of budget.max_cost ${budget.max_cost:.2f}; stopping at step {step} with a final checkpoint")
                loop.save(run.run_dir / FINAL_DIR, "final")  # the model the budget bought; raise max_cost to resume from it
            else:
                why = f"{signals.requested} received" if stop_reason == "signal" else f"--stop_at_step {options.stop_at_step}"
                log.log(f"stopping at step {step} ({why}); the run resumes from this checkpoint when started again")
                loop.save(run.run_dir / CHECKPOINTS_DIR / step_dir_name(step), "stop")
            return STOPPED
        if step % train_cfg.checkpoint_interval == 0 and step < plan.max_steps:
            loop.save(run.run_dir / CHECKPOINTS_DIR / step_dir_name(step), "step")
    loop.save(run.run_dir / FINAL_DIR, "final")  # fit() runs only when a step remains (train() returns before otherwise)
    return FINISHED


def finish(loop: Fit, final_state: str) -> None:
    """Record each rank's weights and first batch (ranks.json), the final status and log line."""
    from accelerate.utils import gather_object

    run, log = loop.run, loop.run.log
    # DDP keeps every rank's weights equal; record it (and which data each rank saw).
    ranks = gather_object([{"rank": run.rank, "first_batch_sha256": loop.first_batch_sha, "weights_sha256": weights_sha256(run.raw_model)}])
    if run.is_main:
        atomic_write_text(run.run_dir / RANKS_FILE, json.dumps({"world_size": run.world, "ranks": ranks}, indent=2) + "\n")
        if len({r["weights_sha256"] for r in ranks}) > 1:
            log.log("warning: the ranks' weights differ at the end; data-parallel training went out of sync")
    if run.is_main and final_state == FINISHED and run.train_cfg.eval.tasks:
        write_report_card(loop)  # before the ended status: the agent's last sync must find report.json/report.md
    loop.status(final_state)
    log.log(f"{final_state} at step {loop.step}/{run.plan.max_steps}: {loop.tokens_seen:,} tokens, loss {loop.last_loss}, val loss {loop.last_val}, "
            f"{loop.elapsed() / 3600:.2f} h, ${loop.spent():.2f}")


def write_report_card(loop: Fit) -> None:
    """train.eval.tasks: score final/ with lm-eval (trainer.eval --tasks) into report.json/report.md.
    The model is already saved, so a failure here is logged, never the run's failure."""
    from trainer.evaluation.evaluate import evaluate_checkpoint, run_report_card

    run, log, cfg = loop.run, loop.run.log, loop.run.train_cfg
    final = run.run_dir / FINAL_DIR
    log.phase("eval", f"report card: lm-eval {', '.join(cfg.eval.tasks)}")
    try:
        if not cfg.tokenizer_model:
            raise UserError("the report card exports the model with its tokenizer: set train.tokenizer_model.")
        scored = evaluate_checkpoint(final, cfg.tokenizer_model, device=run.device)
        report = run_report_card(final, cfg.tokenizer_model, scored, cfg.eval.tasks, cfg.eval.task_data, cfg.eval.num_fewshot,
                                 cfg.eval.limit, cfg.eval.batch_size, str(run.device))
        log.log(f"report card: {len(report.tasks)} scores in {run.run_dir / REPORT_JSON} and {REPORT_MD}")
    except Exception as exc:  # noqa: BLE001 - the run's model is whole; say what went wrong and finish
        log.log(f"warning: report card not written: {exc}. Write it later with: python -m trainer.eval --checkpoint {final} "
                f"--tokenizer_model {cfg.tokenizer_model} --tasks {','.join(cfg.eval.tasks)}")


# -- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description="Train the Llama-style model (one process, or several under accelerate launch).")
    add_config_args(parser, model=True, train=True)
    parser.add_argument("--smoke", action="store_true", help=f"tiny model ({SMOKE_MODEL_CONFIG}) and train config ({SMOKE_TRAIN_CONFIG}) unless given; builds a tiny dataset when train.bin is missing")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="resume from the newest checkpoint (the default when the run folder has one) or from CHECKPOINT")
    parser.add_argument("--allow_over_budget", action="store_true", help="start even when the projected cost exceeds budget.max_cost")
    parser.add_argument("--stop_at_step", type=int, default=None, metavar="N", help="stop cleanly after step N with a checkpoint (resume later)")
    parser.add_argument("--launch_screen", action="store_true", help="re-run this command detached in tmux (screen when tmux is absent) and print how to attach")
    return parser


def launch_screen(argv: list[str], train_cfg: TrainConfig) -> None:
    from runcontract.detached import session_name
    from trainer.training.detach import launch_detached, pick_multiplexer

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ:
        raise UserError("--launch_screen cannot be used under accelerate launch/torchrun (each rank would detach); "
                        f"start the launcher itself detached: tmux new-session -d -s {session_name(train_cfg.run_name)} accelerate launch -m trainer.train ...")
    tool = pick_multiplexer()
    session = session_name(train_cfg.run_name)
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


def exit_process(entry: Callable[[], Optional[int]]) -> None:
    """Run the command line and exit with its code. A rank of a multi-process run leaves through
    ``os._exit`` once its output is flushed (every file it writes is closed by then): after DDP has
    wrapped a model, torch keeps gloo's threads alive past ``destroy_process_group``, and their
    teardown during interpreter finalization can abort a rank that finished cleanly ("terminate
    called without an active exception", SIGABRT; pytorch/pytorch#179291). One process exits normally."""
    try:
        code = entry() or 0
    except SystemExit as exc:  # cli_main's exit for a UserError or Ctrl-C
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
