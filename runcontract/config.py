"""Typed, documented configs for the trainer (its ``budget`` section is runcontract.budget's, shared with the launcher).

Each class is a YAML file under ``configs/``: ``ModelConfig`` (model_*.yaml), ``TrainConfig``
(train_*.yaml), ``DataMixConfig`` (data_*.yaml). Field descriptions are the documentation.
Override single keys on any command line with ``--set model.n_layers=4``,
``--set train.lr=3e-4`` or ``--set data.seed=1``. No torch here.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional

from pydantic import Field, model_validator

from runcontract.budget import BudgetConfig
from runcontract.configlib import Config
from runcontract.run_folder import RUNS_DIR

SECTIONS = ("model", "train", "data")
TOKEN_DTYPE = "uint16"  # numpy dtype of the token ids in train.bin / val.bin (and data_meta.json "dtype")
UINT16_MAX_VOCAB = 65535  # the largest vocabulary TOKEN_DTYPE holds


class ModelConfig(Config):
    """Shape of the Llama-style decoder (see trainer/modeling/transformer.py)."""

    vocab_size: int = Field(32000, ge=2, le=UINT16_MAX_VOCAB, description="Tokenizer vocabulary size; at most 65535 because token ids are stored as uint16.")
    d_model: int = Field(768, ge=8, description="Width of the residual stream.")
    n_layers: int = Field(12, ge=1, description="Number of transformer blocks.")
    n_heads: int = Field(12, ge=1, description="Attention (query) heads; d_model must divide by it.")
    n_kv_heads: Optional[int] = Field(None, ge=1, description="Key/value heads for grouped-query attention; None means n_heads (plain multi-head).")
    ffn_hidden: int = Field(2048, ge=8, description="Hidden width of the SwiGLU MLP.")
    max_seq_len: int = Field(1024, ge=8, description="Longest context the model is built for (rotary tables are this long).")
    rope_theta: float = Field(10000.0, gt=0, description="Rotary embedding base.")
    norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon.")
    tie_embeddings: bool = Field(True, description="Share the LM head with the token embedding.")
    init_std: float = Field(0.02, gt=0, description="Std of the normal initialisation of weights.")
    fused_qkv: bool = Field(True, description="One matmul for Q, K and V (same function; checkpoints of either layout load, the HF export splits it).")
    fused_gate_up: bool = Field(True, description="One matmul for the SwiGLU gate and up projections (same function; checkpoints of either layout load).")

    @model_validator(mode="after")
    def _check_shapes(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head size d_model/n_heads = {self.d_model // self.n_heads} must be even for rotary embeddings")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.kv_heads})")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def config_hash(self) -> str:
        """Short stable hash of the shape, to tie benchmarks and checkpoints to a model."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class OverfitCheckConfig(Config):
    """Before the main loop: train a copy on one tiny batch and demand that the loss drops."""

    enabled: bool = Field(True, description="Run the check before training.")
    steps: int = Field(30, ge=1, description="Optimizer steps on the micro-set.")
    batch_size: int = Field(2, ge=1, description="Sequences in the micro-set.")
    seq_len: int = Field(64, ge=2, description="Tokens per micro-set sequence (capped at train.seq_len).")
    lr: Optional[float] = Field(None, ge=0, description="Learning rate for the check; None uses train.lr (so a broken lr is caught).")
    min_drop_factor: float = Field(2.0, gt=1, description="The final loss must be below initial loss / this factor.")


class ChecksConfig(Config):
    overfit_microset: OverfitCheckConfig = Field(default_factory=OverfitCheckConfig, description="The micro-set overfit check.")


class SpeedConfig(Config):
    """Throughput levers (issue 16); each leaves the loss the same within float rounding."""

    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field("default", description="torch.compile mode when train.compile is on; max-autotune searches kernels (slower start).")
    loss_impl: Literal["auto", "plain", "chunked", "liger"] = Field("auto", description="LM head + loss: plain builds the full fp32 logits; chunked never does; liger uses liger-kernel's fused kernel; auto: liger on CUDA when installed, else chunked.")
    loss_chunk_tokens: int = Field(4096, ge=1, description="Tokens per chunk of the chunked loss (its logits are the only ones alive at a time).")
    sdpa_gqa: bool = Field(True, description="Let SDPA broadcast the KV heads (enable_gqa, torch >= 2.5) instead of copying them per query head.")
    param_dtype: Literal["fp32", "bf16"] = Field("fp32", description="Parameters and residual stream dtype; bf16 halves their memory traffic but rounds the weight updates (see docs/performance.md).")


class EvalConfig(Config):
    """The report card after the final checkpoint (issue 26, docs/report-card.md): lm-eval tasks on the exported model."""

    tasks: list[str] = Field(default_factory=list, description="lm-eval tasks to score final/ on, e.g. [hellaswag, arc_easy, piqa, lambada_openai, wikitext]; [] writes no report card. Needs the eval extra.")
    task_data: Optional[str] = Field(None, description="Folder of local task data (<task>/<split>.jsonl in the hub dataset's schema); None reads lm-eval's hub datasets.")
    num_fewshot: Optional[int] = Field(None, ge=0, description="Shots per task; None keeps each task's own (0 for the shipped ones, as the baselines).")
    limit: Optional[int] = Field(None, ge=1, description="Score only the first N documents of each task (a smoke test; not comparable with the baselines).")
    batch_size: int = Field(8, ge=1, description="lm-eval batch size.")


class TrainConfig(Config):
    """How to train: data, batch, optimizer, schedule, logging, checkpoints, checks, budget."""

    run_name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Name of the run folder under runs_dir.")
    runs_dir: str = Field(RUNS_DIR, description="Folder holding run folders.")
    data_dir: str = Field("data", description="Folder with train.bin, val.bin and data_meta.json.")
    tokenizer_model: Optional[str] = Field("tokenizer/spm.model", description="SentencePiece model used to encode fixed_prompt and decode samples; None disables samples.")
    seed: int = Field(1337, description="Seed for init, data windows and sampling.")

    seq_len: int = Field(1024, ge=2, description="Tokens per training sequence; at most model.max_seq_len.")
    micro_batch_size: Optional[int] = Field(None, ge=1, description="Sequences per GPU per forward pass; None takes the benchmark's choice from throughput.json, else 8.")
    tokens_per_step: int = Field(524288, ge=1, description="Tokens per optimizer step over all GPUs; reached by gradient accumulation.")
    target_tokens: int = Field(2_000_000_000, ge=1, description="Tokens to train on in total; sets the number of steps and the cost projection.")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimizer steps (overrides target_tokens for the schedule).")
    sampling: Literal["epoch", "random"] = Field("epoch", description="epoch: every window of train.bin once per epoch, in a seeded permutation split across ranks; random: windows drawn with replacement (for comparison only, see docs/training-recipe.md).")

    lr: float = Field(6e-4, ge=0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay floor as a fraction of lr.")
    warmup_steps: int = Field(200, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay, on 2-D weights only.")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 disables.")

    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    compile: bool = Field(False, description="torch.compile the model.")

    log_interval: int = Field(10, ge=1, description="Steps between metrics lines.")
    eval_interval: int = Field(250, ge=1, description="Steps between validation evals and fixed_prompt samples.")
    eval_tokens: int = Field(262144, ge=1, description="Validation tokens per eval (fixed windows, fixed seed).")
    checkpoint_interval: int = Field(1000, ge=1, description="Steps between checkpoints (and one at the end).")
    keep_last: int = Field(3, ge=1, description="Step checkpoints kept; older ones are deleted (final/ is always kept).")

    fixed_prompt: str = Field("The history of the city begins", description="Prompt sampled at each eval into fixed_prompt_samples.txt.")
    sample_tokens: int = Field(48, ge=1, description="Tokens generated for each sample.")
    sample_temperature: float = Field(0.0, ge=0, description="0 means greedy (deterministic); above 0 samples with the run seed.")

    checks: ChecksConfig = Field(default_factory=ChecksConfig, description="Sanity checks before the main loop.")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=lambda: ["tensorboard"], description="Experiment trackers through accelerate: tensorboard (event files in the run folder) and/or wandb (key from WANDB_API_KEY, a secret); [] for none.")
    cpu_threads: Optional[int] = Field(None, ge=1, description="torch CPU threads; None picks the cores other processes leave free at start (trainer/training/cpu_threads.py).")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Hourly rate and the spending cap.")
    speed: SpeedConfig = Field(default_factory=SpeedConfig, description="Throughput levers: compile mode, fused loss, SDPA GQA, bf16 parameters.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="The report card written after the final checkpoint: lm-eval tasks beside published baselines.")


HUB_C4 = {"name": "c4", "type": "hub", "path": "allenai/c4", "config": "en", "split": "train", "text_field": "text", "weight": 0.8}
HUB_WIKIPEDIA = {"name": "wikipedia", "type": "hub", "path": "wikimedia/wikipedia", "config": "20231101.en", "split": "train", "text_field": "text", "weight": 0.2}


class SourceConfig(Config):
    """One text source of the data mix."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$", description="Short name used in data_meta.json and logs.")
    type: Literal["hub", "json", "parquet", "text", "python_stdlib"] = Field(..., description="hub: a Hugging Face dataset id; json/parquet/text: local files (json covers jsonl); python_stdlib: an offline corpus built from the installed Python standard library's docstrings and comments.")
    path: Optional[str] = Field(None, description="hub: the dataset id (allenai/c4); files: a path or glob (several comma-separated).")
    config: Optional[str] = Field(None, description="hub: the dataset config (en, 20231101.en).")
    split: str = Field("train", description="Split to stream.")
    text_field: str = Field("text", description="Field holding the document text.")
    weight: float = Field(1.0, gt=0, description="This source's relative share of the tokens (of the documents with mix_by: documents); weights are normalised by their sum.")

    @model_validator(mode="after")
    def _check_path(self) -> "SourceConfig":
        if self.type != "python_stdlib" and not self.path:
            raise ValueError(f"source '{self.name}' of type {self.type} needs a path")
        return self


class DataMixConfig(Config):
    """What the tokenizer and the memmaps are built from."""

    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig(**HUB_C4), SourceConfig(**HUB_WIKIPEDIA)], description="Sources interleaved by weight.")
    seed: int = Field(1234, description="Seed for interleaving and the train/val split.")
    mix_by: Literal["tokens", "documents"] = Field("tokens", description="What the weights share out: tokens (each source's share of the written tokens follows its weight; data_meta.json records the realized token_share) or documents (each next document drawn by weight, so sources with longer documents get more than their weight of the tokens).")
    val_every: int = Field(100, ge=2, description="Every val_every-th document (by position in the interleaved stream) goes to val, never to train.")
    min_chars: int = Field(1, ge=0, description="Documents shorter than this are skipped.")

    @model_validator(mode="after")
    def _unique_names(self) -> "DataMixConfig":
        names = [s.name for s in self.sources]
        if not names:
            raise ValueError("at least one source is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self
