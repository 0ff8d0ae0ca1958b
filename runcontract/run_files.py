"""Typed models of the JSON files in a run folder: what each holds, field by field.

    status.json       StatusFile      written by the launcher's stages, then the trainer (trainer/training/metrics_log.py)
    metrics.jsonl     TrainMetrics, EvalMetrics, one a line   the trainer
    throughput.json   Throughput      trainer.benchmark
    cost.json         CostFile        trainer.cost
    nccl_probe.json   NcclProbe       trainer.nccl_probe (several GPUs only)
    store.json        StoreFile       the launcher, for the box agent (launcher/agent.py)
    store_health.json StoreHealth     the box agent: how its uploads are going (`launcher status` shows it)
    report.json       ReportFile      trainer/evaluation/report_card.py (python -m trainer.eval --tasks)

Every writer builds the model and calls ``write`` (one atomic rename, runcontract.atomic);
every reader calls ``read`` (or ``parse`` for bytes fetched from a box or a store), which
returns the model or raises a UserError naming the file and what is wrong. The JSON on disk
is what the writers always wrote: the same keys and types, so old run folders still read.
A key this version does not know is kept as it is (a newer writer's), and a float that is
not finite is written as null (JSON has no NaN). No torch here.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from runcontract.atomic import atomic_write_text
from runcontract.budget import BudgetConfig
from runcontract.configlib import format_validation_error
from runcontract.errors import ConfigError, UserError
from runcontract.run_folder import (COST_FILE, NCCL_PROBE_FILE, REPORT_JSON, RUN_PHASES, RUN_STATES, STATUS_FILE,
                                     STORE_CONFIG_FILE, STORE_HEALTH_FILE, THROUGHPUT_FILE)

F = TypeVar("F", bound="RunFile")


def _finite(value: Any) -> Any:
    """NaN and infinities become None, in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class RunFile(BaseModel):
    """One JSON object in a file of the run folder."""

    model_config = ConfigDict(extra="allow")
    FILE: ClassVar[str]  # its name in the run folder (runcontract.run_folder)

    @model_validator(mode="before")
    @classmethod
    def _no_nan(cls, data: Any) -> Any:
        return _finite(data)

    @classmethod
    def parse(cls: type[F], text: bytes | str, source: str) -> F:
        """The model of ``text``, the content of ``source`` (a path or a store key, for messages)."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{source} is not valid JSON ({exc}).") from None
        if not isinstance(data, dict):
            raise UserError(f"{source} must hold one JSON object, not {type(data).__name__}.")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls, source).rsplit("\n", 1)[0]) from None

    @classmethod
    def read(cls: type[F], path: str | os.PathLike) -> F:
        """The model of the file at ``path``; a UserError when it is missing or not one."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{path} does not exist.") from None
        except OSError as exc:
            raise UserError(f"{path} cannot be read ({exc}).") from None
        return cls.parse(text, str(path))

    def to_json(self) -> dict:
        """The JSON object: the fields given (an unset optional field is left out, as writers always did)."""
        return _finite(self.model_dump(mode="json", exclude_unset=True))

    def to_text(self) -> str:
        """The file's content: indented, sorted keys (for a file put on a box or in a store)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def write(self, path: str | os.PathLike) -> None:
        """Replace the file at ``path`` in one rename."""
        atomic_write_text(path, self.to_text())


# ----------------------------------------------------------------------------- status.json
class StatusFile(RunFile):
    """What the run is doing now (docs/status-json.md): replaced in one rename at every change."""

    FILE: ClassVar[str] = STATUS_FILE

    state: str = Field(..., description="Preparing (the launcher's stages), running (the trainer), or an ended state: finished, failed, stopped.")
    phase: Optional[str] = Field(None, description="What the run is doing, in runcontract.run_folder.RUN_PHASES order; an ended run's phase is its state.")
    progress: Optional[str] = Field(None, description="Progress within the phase (\"12/25 steps, loss 3.1\"), or the phase a failed or stopped run ended in.")
    updated: Optional[float] = Field(None, description="Unix time of this write: the agent's hang watch reads it.")
    pid: Optional[int] = Field(None, description="The trainer's process id; absent while the launcher's stages write.")
    step: Optional[int] = Field(None, ge=0, description="Optimizer steps done.")
    max_steps: Optional[int] = Field(None, ge=0, description="Optimizer steps the run is planned for.")
    tokens_seen: Optional[int] = Field(None, ge=0, description="Training tokens consumed.")
    loss: Optional[float] = Field(None, description="Training loss at the last logged step.")
    val_loss: Optional[float] = Field(None, description="Validation loss (the mix) at the last eval.")
    val_bpb: Optional[float] = Field(None, description="Validation bits per byte (the mix) at the last eval.")
    val_sources: Optional[dict[str, dict[str, Optional[float]]]] = Field(None, description="Per data source: {\"loss\", \"bpb\"} at the last eval.")
    tokens_per_sec: Optional[float] = Field(None, ge=0, description="Training throughput over the last log interval, all ranks together.")
    elapsed_s: Optional[float] = Field(None, ge=0, description="Seconds of training, summed over resumes.")
    cost_spent: Optional[float] = Field(None, ge=0, description="$ spent so far by training: runcontract.budget.spent(elapsed_s, hourly_rate).")
    world_size: Optional[int] = Field(None, ge=1, description="Processes training (one per GPU).")
    epoch: Optional[float] = Field(None, ge=0, description="Passes over train.bin so far (fractional).")

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str) -> str:
        if value not in RUN_STATES:
            raise ValueError(f"state must be one of {', '.join(RUN_STATES)}")
        return value

    @field_validator("phase")
    @classmethod
    def _known_phase(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in RUN_PHASES:
            raise ValueError(f"phase must be one of {', '.join(RUN_PHASES)}")
        return value


# ----------------------------------------------------------------------------- metrics.jsonl
class MetricsLine(BaseModel):
    """What every metrics.jsonl line has: when in training it was written."""

    model_config = ConfigDict(extra="allow")

    step: int = Field(..., ge=0, description="Optimizer steps done.")
    tokens_seen: Optional[int] = Field(None, ge=0, description="Training tokens consumed.")


class TrainMetrics(MetricsLine):
    """A metrics.jsonl line of type "train": one logged optimizer step."""

    type: Literal["train"] = Field("train", description="The kind of line.")
    loss: Optional[float] = Field(None, description="Mean training loss of the step (null when not finite).")
    lr: Optional[float] = Field(None, description="Learning rate of the step.")
    grad_norm: Optional[float] = Field(None, description="Global gradient norm before clipping.")
    tokens_per_sec: Optional[float] = Field(None, description="Throughput over the log interval, all ranks together.")
    mfu: Optional[float] = Field(None, description="Model FLOPs utilisation (0-1); null when the device's peak is unknown.")
    epoch: Optional[float] = Field(None, description="Passes over train.bin so far.")
    elapsed_s: Optional[float] = Field(None, description="Seconds of training, summed over resumes.")
    cost_spent: Optional[float] = Field(None, description="$ spent so far.")
    time: Optional[float] = Field(None, description="Unix time the line was written.")


class EvalMetrics(MetricsLine):
    """A metrics.jsonl line of type "eval": one validation eval."""

    type: Literal["eval"] = Field("eval", description="The kind of line.")
    val_loss: Optional[float] = Field(None, description="Validation loss of the mix.")
    val_bpb: Optional[float] = Field(None, description="Validation bits per byte of the mix.")
    val_sources: dict[str, dict[str, Optional[float]]] = Field(default_factory=dict, description="Per data source: {\"loss\", \"bpb\"}.")
    elapsed_s: Optional[float] = Field(None, description="Seconds of training, summed over resumes.")
    time: Optional[float] = Field(None, description="Unix time the line was written.")


MetricsRecord = Union[TrainMetrics, EvalMetrics]
_METRICS_LINE = TypeAdapter(Annotated[MetricsRecord, Field(discriminator="type")])
METRICS_TYPES = ("train", "eval")


def metrics_line(record: MetricsRecord) -> str:
    """One metrics.jsonl line (newline included) for ``record``."""
    fields = record.model_dump(mode="json", exclude_unset=True)
    return json.dumps(_finite({"type": record.type, **fields})) + "\n"


def parse_metrics_line(line: str) -> Optional[MetricsRecord]:
    """The record on one metrics.jsonl line; None for a JSON line that is no train or eval record.

    Raises ValueError for a line that is no JSON object (a torn last line) or a record that is invalid."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError(f"a metrics line is a JSON object, not {type(data).__name__}")
    if data.get("type") not in METRICS_TYPES:
        return None
    try:
        return _METRICS_LINE.validate_python(_finite(data))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


# ----------------------------------------------------------------------------- throughput.json
class Throughput(RunFile):
    """trainer.benchmark's measurement of training speed on this box (trainer.cost projects from it)."""

    FILE: ClassVar[str] = THROUGHPUT_FILE

    tokens_per_sec: float = Field(..., gt=0, allow_inf_nan=False, description=(
        "Training tokens per second of one process (GPU); with gpu_count > 1 measured while all of them trained "
        "together under DDP, so tokens_per_sec x gpu_count is the box's measured speed."))
    gpu_count: Optional[int] = Field(None, description="Processes (GPUs) that trained together in the measurement (DDP when > 1); null in files from before it was recorded: 1.")
    nccl_env: Optional[dict[str, str]] = Field(None, description="The NCCL_* environment the measurement ran with (NCCL_P2P_DISABLE=1 when the probe chose it).")
    micro_batch_size: Optional[int] = Field(None, description="Sequences per forward pass that fit (train.micro_batch_size takes it when unset).")
    micro_batch_searched: Optional[bool] = Field(None, description="Whether micro_batch_size was found by searching down from the largest.")
    grad_accum: Optional[int] = Field(None, description="Micro-batches per timed step.")
    seq_len: Optional[int] = Field(None, description="Tokens per sequence measured.")
    step_time_s: Optional[float] = Field(None, description="Seconds per timed optimizer step.")
    mfu: Optional[float] = Field(None, description="Model FLOPs utilisation (0-1); null when the peak is unknown.")
    peak_flops: Optional[float] = Field(None, description="The device's peak dense bf16 FLOP/s used for mfu.")
    flops_per_token: Optional[float] = Field(None, description="Training FLOPs per token of the model.")
    num_parameters: Optional[int] = Field(None, description="Parameters of the model measured.")
    model_config_hash: Optional[str] = Field(None, description="ModelConfig.config_hash() of the model measured.")
    device_name: Optional[str] = Field(None, description="The device, as people name it.")
    device_type: Optional[str] = Field(None, description="cuda or cpu.")
    device_count: Optional[int] = Field(None, description="Devices of this kind on the box.")
    torch_version: Optional[str] = Field(None, description="torch's version.")
    cuda_version: Optional[str] = Field(None, description="CUDA's version; null on CPU.")
    peak_memory_bytes: Optional[int] = Field(None, description="Peak memory of a training step.")
    peak_memory_kind: Optional[str] = Field(None, description="What peak_memory_bytes measured (allocated on CUDA, RSS on CPU).")
    precision: Optional[str] = Field(None, description="bf16 or fp32.")
    compile: Optional[bool] = Field(None, description="Whether the model was compiled.")
    compile_mode: Optional[str] = Field(None, description="torch.compile mode, when compiled.")
    speed: Optional[dict[str, Any]] = Field(None, description="The train.speed levers measured, as they took effect (loss_impl resolved from auto; sdpa_gqa false where torch lacks enable_gqa or the model has no shared KV heads).")
    steps: Optional[int] = Field(None, description="Timed steps.")
    warmup: Optional[int] = Field(None, description="Untimed steps before them.")
    measured_at: Optional[str] = Field(None, description="ISO 8601 UTC time of the measurement.")


# ----------------------------------------------------------------------------- nccl_probe.json
PROBE_OUTCOMES = ("ok", "hang", "slow", "failed")


class ProbeAttempt(BaseModel):
    """One launch of the all-reduce probe with one NCCL environment."""

    model_config = ConfigDict(extra="allow")

    nccl_env: dict[str, str] = Field(..., description="The variables added to the environment for this attempt ({} for NCCL's defaults).")
    outcome: Literal["ok", "hang", "slow", "failed"] = Field(..., description="ok; hang (no result within the timeout, the processes were killed); slow (bus bandwidth under the threshold); failed (the launch exited with an error).")
    busbw_gbps: Optional[float] = Field(None, description="Bus bandwidth measured, GB/s (nccl-tests' busbw = algbw x 2(n-1)/n); null when none was measured.")
    algbw_gbps: Optional[float] = Field(None, description="Algorithm bandwidth measured, GB/s (bytes reduced / seconds per all-reduce).")
    seconds: float = Field(..., ge=0, description="Wall time of the attempt.")
    detail: Optional[str] = Field(None, description="What went wrong, in words (the last lines of the output of a failed launch).")


class NcclProbe(RunFile):
    """trainer.nccl_probe's verdict on this box's GPUs: an all-reduce across all of them, bounded in
    time, retried with NCCL_P2P_DISABLE=1 when it hangs or crawls; ``nccl_env`` is what the
    benchmark and training launches get."""

    FILE: ClassVar[str] = NCCL_PROBE_FILE

    ok: bool = Field(..., description="Whether an attempt passed; nccl_env is then the one to use.")
    gpu_count: int = Field(..., ge=2, description="Processes (GPUs) the probe ran on.")
    backend: Optional[str] = Field(None, description="torch.distributed backend: nccl on GPUs, gloo on CPU (tests).")
    box_id: str = Field(..., description="Identity of the box probed (the launcher's hash of its host name and GPU list): a result is reused on that box only.")
    nccl_env: dict[str, str] = Field(default_factory=dict, description="The environment that worked, added to every later launch ({}: NCCL's defaults).")
    busbw_gbps: Optional[float] = Field(None, description="Bus bandwidth of the attempt that worked, GB/s.")
    algbw_gbps: Optional[float] = Field(None, description="Algorithm bandwidth of the attempt that worked, GB/s.")
    size_bytes: int = Field(..., ge=1, description="Bytes of the tensor all-reduced.")
    iterations: int = Field(..., ge=1, description="Timed all-reduces per attempt.")
    timeout_s: float = Field(..., gt=0, description="Seconds an attempt's processes may take to join and all-reduce, once all are up, before it counts as a hang.")
    min_busbw_gbps: float = Field(..., ge=0, description="Bus bandwidth under which an attempt counts as slow.")
    attempts: list[ProbeAttempt] = Field(..., description="Every attempt, in order.")
    measured_at: str = Field(..., description="ISO 8601 UTC time of the probe.")


# ----------------------------------------------------------------------------- cost.json
OK, OVER_BUDGET = "ok", "over_budget"  # the cost gate's verdicts


class CostProjection(BaseModel):
    """What training ``target_tokens`` costs at the measured speed (trainer.bench.cost.project)."""

    model_config = ConfigDict(extra="allow")

    target_tokens: int = Field(..., ge=1, description="Tokens the run trains on.")
    tokens_per_sec: float = Field(..., gt=0, description="Measured on one GPU (throughput.json).")
    gpu_count: int = Field(..., ge=1, description="GPUs training in parallel.")
    total_tokens_per_sec: float = Field(..., gt=0, description="tokens_per_sec x gpu_count: assumes data-parallel scaling.")
    hours: float = Field(..., ge=0, description="Hours of training.")
    hourly_rate: float = Field(..., ge=0, description="$/hour for the whole box.")
    total_cost: float = Field(..., ge=0, description="$ for the whole run: hours x hourly_rate.")
    finish_time: str = Field(..., description="ISO 8601 UTC finish time, if started when projected.")
    max_cost: Optional[float] = Field(None, description="budget.max_cost the projection was judged against.")
    verdict: Literal["ok", "over_budget"] = Field(..., description="ok, or over_budget when total_cost exceeds max_cost.")


class CostFile(CostProjection, RunFile):
    """cost.json: the projection, and what it was made from."""

    FILE: ClassVar[str] = COST_FILE

    throughput_path: Optional[str] = Field(None, description="The throughput.json projected from.")
    measured_device: Optional[str] = Field(None, description="The device the throughput was measured on.")
    measured_model_config_hash: Optional[str] = Field(None, description="The model the throughput was measured for.")
    model_config_hash: Optional[str] = Field(None, description="This run's model.")
    allowed_over_budget: bool = Field(False, description="Whether --allow_over_budget let an over-budget run start.")
    warnings: list[str] = Field(default_factory=list, description="Why the projection may be off (another model or seq_len measured).")
    written_at: Optional[str] = Field(None, description="ISO 8601 UTC time of writing.")


# ----------------------------------------------------------------------------- store.json
class ProviderRecord(BaseModel):
    """Who rents the box, for the agent's idle and budget shutdown."""

    model_config = ConfigDict(extra="forbid")

    kind: Optional[str] = Field(None, description="The provider (runpod, vastai); null for a box you own.")
    instance_id: Optional[str] = Field(None, description="The rented instance; null for a box you own.")
    api_base: Optional[str] = Field(None, description="The provider API base the instance was rented through, when not the default.")


class StoreFile(RunFile):
    """store.json: what the box agent needs from the launcher. No secrets (credentials come
    from the environment). ``storage`` and ``agent`` are the launcher's StorageConfig and
    AgentConfig: launcher.agent's model types them (the core knows no launcher classes)."""

    FILE: ClassVar[str] = STORE_CONFIG_FILE
    model_config = ConfigDict(extra="forbid")

    run_name: str = Field(..., description="The run: <name>/ in the store.")
    storage: Any = Field(..., description="Where the run is mirrored (the launcher's storage section).")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="The box's price and the run's cap, as the trainer was given them.")
    agent: Any = Field(default_factory=dict, description="The agent's settings (the launcher's agent section).")
    provider: ProviderRecord = Field(default_factory=ProviderRecord, description="The rented instance, if any.")

    def to_json(self) -> dict:
        """Every field (defaults too: the agent reads what the launcher resolved); api_base only when known."""
        data = self.model_dump(mode="json")
        if data["provider"].get("api_base") is None:
            del data["provider"]["api_base"]
        return data


# ----------------------------------------------------------------------------- report.json
class BaselineScore(BaseModel):
    """A published score of another model on the same task and metric."""

    value: float = Field(..., description="The score, in lm-eval's units (accuracy 0-1, perplexity, bits per byte).")
    num_fewshot: int = Field(..., ge=0, description="Shots the publisher used.")
    source: str = Field(..., description="Where it was published (URL, paper, model card, results file).")


class TaskScore(BaseModel):
    """One metric of one lm-eval task: this run's value beside the baselines."""

    task: str = Field(..., description="lm-eval task name (hellaswag, arc_easy, ...).")
    metric: str = Field(..., description="lm-eval metric name (acc, acc_norm, perplexity, word_perplexity, bits_per_byte).")
    value: Optional[float] = Field(None, description="This run's value, exactly as lm-eval computed it.")
    stderr: Optional[float] = Field(None, description="lm-eval's standard error of the value, when it gives one.")
    num_fewshot: int = Field(..., ge=0, description="Shots this run was scored with.")
    samples: Optional[int] = Field(None, ge=0, description="Documents scored (fewer than the task's when --limit was given).")
    higher_is_better: Optional[bool] = Field(None, description="Direction of the metric.")
    chance: Optional[float] = Field(None, description="The score of random guessing, when the task has one.")
    baselines: dict[str, Optional[BaselineScore]] = Field(default_factory=dict, description="Model name -> its published score, null when none was published.")


class ReportFile(RunFile):
    """The report card of a checkpoint: standard benchmarks beside published baselines (docs/report-card.md)."""

    FILE: ClassVar[str] = REPORT_JSON

    checkpoint: str = Field(..., description="The checkpoint scored.")
    step: Optional[int] = Field(None, description="Its optimizer step.")
    tokens_trained: Optional[int] = Field(None, ge=0, description="Training tokens the checkpoint has seen.")
    val_loss: Optional[float] = Field(None, description="Validation loss (nats per token) on val_split.")
    val_bpb: Optional[float] = Field(None, description="Validation bits per byte on val_split.")
    val_split: Optional[str] = Field(None, description="The validation split val_loss is on: c4 when the data has a C4 source, else mix.")
    tasks: list[TaskScore] = Field(default_factory=list, description="One entry per task and metric.")
    task_data: Optional[str] = Field(None, description="Local task data folder (--task_data); null: lm-eval's hub datasets.")
    limit: Optional[int] = Field(None, description="Documents per task when limited (then not comparable with the baselines).")
    lm_eval_version: Optional[str] = Field(None, description="lm-eval's version.")
    hf_model: Optional[str] = Field(None, description="The exported Hugging Face folder lm-eval scored.")
    created_at: Optional[str] = Field(None, description="ISO 8601 UTC time of the report.")


# ----------------------------------------------------------------------------- store_health.json
class StoreHealth(RunFile):
    """store_health.json: how the box agent's uploads to the store are going, rewritten after every
    pass of the mirror and once more when it ends (then the waiting lists are what is NOT stored)."""

    FILE: ClassVar[str] = STORE_HEALTH_FILE

    store: str = Field(..., description="Where the run is mirrored (the store's URL for the run).")
    last_upload: Optional[float] = Field(None, description="Unix time of the last successful upload; null before any.")
    waiting_files: list[str] = Field(default_factory=list, description="Run files changed since their last successful upload.")
    waiting_checkpoints: list[str] = Field(default_factory=list, description="Complete local checkpoints not yet stored and verified.")
    last_error: Optional[str] = Field(None, description="The last upload failure, while one is unresolved; null when the last pass succeeded.")
    last_error_at: Optional[float] = Field(None, description="Unix time of last_error.")
    ended: bool = Field(False, description="The agent has made its final flush: the waiting lists are what is not stored.")
    updated: float = Field(..., description="Unix time of this write.")
