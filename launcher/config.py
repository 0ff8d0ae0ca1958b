"""The launcher's config (``configs/run.yaml``): which box, which run, where to store, the budget.

With no config file at all, ``LauncherConfig()`` is the embedded default: the ``local`` box,
a ``file://`` store under ``.launcher/store``, and the quickstart run on CPU.
Credentials are never written here: the store names where they come from (environment or a
profile) and providers name the environment variable that holds the API key.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from pydantic import Field, model_validator

from runcontract.budget import BudgetConfig
from runcontract.configlib import Config, apply_overrides, read_yaml, validate

DEFAULT_CONFIG = Path("configs/quickstart.yaml")
LAUNCHER_SECTIONS = ("box", "run", "storage", "budget", "agent", "managed")


def renamed_keys(data: Any, section: str, renames: dict[str, str]) -> Any:
    """Keys renamed in this release: the old name still works for one release, with a one-line
    warning on stderr. ``renames`` maps old name -> new name; given both, the later one wins
    (a ``--set`` override comes after the file's keys)."""
    if not isinstance(data, dict):
        return data  # validation reports the wrong type
    result = {}
    for key, value in data.items():
        if key in renames:
            print(f"warning: {section}.{key} is deprecated and goes in the next release; call it {section}.{renames[key]}",
                  file=sys.stderr)
            key = renames[key]
        result[key] = value
    return result


class RunpodConfig(Config):
    """A RunPod pod, rented through RunPod's REST API v2 (https://api.runpod.io/v2)."""

    api_base: str = Field("https://api.runpod.io/v2", description="REST API v2 base URL (tests point it at a local server).")
    graphql_url: str = Field("https://api.runpod.io/graphql", description="GraphQL endpoint, used only to rent spot (interruptible) pods, which REST v2 does not offer.")
    api_key_env: str = Field("RUNPOD_API_KEY", description="Environment variable holding the API key (or use ~/.config/llm-box/runpod_key, mode 600).")
    gpu_name: str = Field("NVIDIA GeForce RTX 4090", description="GPU model, as RunPod's GPU type id names it (was gpu_type).")
    gpu_count: int = Field(1, ge=1, description="GPUs in the pod.")
    # RunPod's own example image in its REST v2 OpenAPI (runpod/docs api-reference-v2/openapi.json,
    # commit a900806 of 2026-08-20, read 2026-12-03): torch 2.8.0 built for CUDA 12.8 (drivers >= 570).
    image: str = Field("runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404", description="Container image (has torch >= 2.6, sshd); its torch is kept by the bootstrap.")
    min_cuda_version: str = Field("12.8", pattern=r"^\d+\.\d+$", description="The image's CUDA: only hosts whose driver runs at least this CUDA are rented (v2 create's gpu.minCudaVersion).")
    container_disk_gb: int = Field(40, ge=5, description="Container disk in GB.")
    volume_gb: int = Field(60, ge=0, description="Pod volume in GB, mounted at /workspace (0: none; RunPod's floor is 10).")
    cloud_type: Literal["SECURE", "COMMUNITY", "ALL"] = Field("ALL", description="Which RunPod cloud to rent from; ALL compares both and rents the cheaper (the request always names one).")
    interruptible: bool = Field(False, description="Rent a spot (interruptible) pod: cheaper, may be preempted. Uses RunPod's GraphQL API (REST v2 has no spot pods).")
    max_price: Optional[float] = Field(None, gt=0, description="Refuse offers above this $/hour, and terminate at once a pod whose live price is above it.")
    api: Literal["v2"] = Field("v2", description="RunPod API generation: v2 (REST v1 retires on 1 December 2026 and is no longer supported).")
    ssh_user: str = Field("root", description="User the launcher logs in as (root on RunPod images; tests override it).")
    ready_timeout_s: float = Field(600.0, gt=0, description="Seconds to wait for the rented pod to run with SSH reachable before terminating it.")
    poll_interval_s: float = Field(5.0, gt=0, description="Seconds between status polls while waiting.")
    terminate_timeout_s: float = Field(180.0, gt=0, description="Seconds to wait for the provider to confirm the pod is gone.")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed_keys(data, "box.runpod", {"gpu_type": "gpu_name"})

    @model_validator(mode="after")
    def _check(self) -> "RunpodConfig":
        if 0 < self.volume_gb < 10:
            raise ValueError("volume_gb must be 0 (no volume) or at least 10: RunPod v2 refuses smaller pod volumes")
        return self


class VastaiConfig(Config):
    """A Vast.ai instance (REST API)."""

    api_base: str = Field("https://console.vast.ai/api/v0", description="REST API base URL (tests point it at a local server).")
    api_key_env: str = Field("VAST_API_KEY", description="Environment variable holding the API key (or ~/.config/llm-box/vast_key, mode 600).")
    gpu_name: str = Field("RTX 4090", description="GPU model as Vast.ai names it.")
    gpu_count: int = Field(1, ge=1, description="GPUs per instance (was num_gpus).")
    min_reliability: float = Field(0.98, ge=0, le=1, description="Lowest host reliability accepted.")
    verified: bool = Field(True, description="Only verified hosts.")
    direct_port: bool = Field(True, description="Only hosts with direct SSH ports.")
    disk_gb: int = Field(60, ge=10, description="Disk in GB; offer prices are searched with this much storage, so they include it.")
    max_price: Optional[float] = Field(None, gt=0, description="Refuse offers above this $/hour (disk included), and destroy at once an instance whose live price is above it.")
    # The PyTorch project's official image of the same torch and CUDA as RunPod's default (Vast's
    # PyTorch template runs pytorch/pytorch images; read 2026-12-03).
    image: str = Field("pytorch/pytorch:2.8.0-cuda12.8-cudnn9-devel", description="Docker image (has torch >= 2.6); its torch is kept by the bootstrap.")
    min_cuda: float = Field(12.8, gt=0, description="The image's CUDA: offers whose host driver runs a lower CUDA (Vast's cuda_max_good) are not searched, so never rented.")
    ssh_user: str = Field("root", description="User the launcher logs in as (root on Vast.ai images; tests override it).")
    ready_timeout_s: float = Field(600.0, gt=0, description="Seconds to wait for the rented instance to run with SSH reachable before terminating it.")
    poll_interval_s: float = Field(5.0, gt=0, description="Seconds between status polls while waiting.")
    terminate_timeout_s: float = Field(180.0, gt=0, description="Seconds to wait for the provider to confirm the instance is gone.")
    offers_shown: int = Field(5, ge=1, le=50, description="How many of the cheapest offers to show before renting the first.")
    interruptible: bool = Field(False, description="Rent an interruptible (bid) instance: created with `price` = your bid; when outbid it goes stopped (its disk still bills) and a managed run recovers it.")
    bid_price: Optional[float] = Field(None, gt=0, description="Interruptible: your bid in $/hour for the whole machine; null: the offer's listed price.")
    max_bid: Optional[float] = Field(None, gt=0, description="Interruptible, managed runs: when outbid, raise the bid (PUT /instances/bid_price/{id}/) once, up to this $/hour, before giving the box up; null: never raise.")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed_keys(data, "box.vastai", {"num_gpus": "gpu_count"})


RENTED_KINDS = ("runpod", "vastai")  # the box kinds rented from a provider (the others are given)


class CandidateConfig(Config):
    """One kind of box `launcher plan` may choose: a provider's GPU at one or more counts, or an SSH host of yours."""

    kind: Literal["runpod", "vastai", "ssh"] = Field(..., description="runpod or vastai (rented; their other settings come from box.runpod / box.vastai), or ssh (a host of yours).")
    gpu_name: Optional[str] = Field(None, description="runpod: the GPU type id (e.g. NVIDIA GeForce RTX 4090); vastai: Vast's GPU name (e.g. RTX 4090); ssh: the GPU the host has, for its speed. None: box.runpod/box.vastai's gpu_name.")
    gpu_count: list[int] = Field(default_factory=lambda: [1], description="GPU counts to consider, e.g. [1, 2] (a single number works too); training uses every GPU of the box.")
    host: Optional[str] = Field(None, description="ssh: host name or address.")
    port: int = Field(22, ge=1, le=65535, description="ssh: port.")
    user: Optional[str] = Field(None, description="ssh: login user.")
    hourly_rate: Optional[float] = Field(None, ge=0, description="ssh: what an hour of the host costs you, in $ (0 for a box already paid for).")
    gpu_memory_gb: Optional[float] = Field(None, gt=0, description="ssh: GiB of memory per GPU, if you want the plan to check the run fits.")

    @model_validator(mode="before")
    @classmethod
    def _count_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("gpu_count"), int):
            data = {**data, "gpu_count": [data["gpu_count"]]}
        return data

    @model_validator(mode="after")
    def _check(self) -> "CandidateConfig":
        if not self.gpu_count or any(n < 1 for n in self.gpu_count):
            raise ValueError("gpu_count must be a positive number or a non-empty list of them, e.g. [1, 2]")
        if self.kind == "ssh":
            if not (self.host and self.user):
                raise ValueError("an ssh candidate needs host and user")
            if self.hourly_rate is None:
                raise ValueError("an ssh candidate needs hourly_rate (its $/h; 0 for a box already paid for) to be priced")
            if not self.gpu_name:
                raise ValueError("an ssh candidate needs gpu_name (the GPU it has), so its speed can be told")
        elif self.host or self.user or self.hourly_rate is not None or self.gpu_memory_gb is not None:
            raise ValueError(f"host, user, hourly_rate and gpu_memory_gb are for ssh candidates; a {self.kind} offer "
                             "carries its own price and GPU memory")
        return self


class PlanSettings(Config):
    """How `launcher plan` prices a run (launcher/plan/)."""

    setup_hours: float = Field(0.5, ge=0, description="Hours billed before training (image pull, bootstrap, data) when no past run of the provider measured them.")
    default_mfu: float = Field(0.35, gt=0, lt=1, description="Model FLOPs utilisation assumed for a GPU when no GPU at all has been measured.")
    multi_gpu_efficiency: float = Field(0.9, gt=0, le=1, description="Fraction of N x one GPU's speed assumed for N GPUs that were never measured together.")
    offers_per_search: int = Field(1000, ge=1, le=10000, description="The most offers asked of one provider search (Vast's limit; RunPod's catalog answers whole).")


class BoxConfig(Config):
    """Where commands run."""

    kind: Literal["local", "ssh", "runpod", "vastai", "plan"] = Field("local", description="local: this machine; ssh: any SSH host; runpod/vastai: rent one; plan: rent the cheapest run among box.candidates (`launcher plan`).")
    host: Optional[str] = Field(None, description="ssh: host name or address.")
    port: int = Field(22, ge=1, le=65535, description="ssh: port.")
    user: Optional[str] = Field(None, description="ssh: login user.")
    identity_file: Optional[str] = Field(None, description="Private key; its .pub is what rented boxes are given. None: ~/.ssh/id_ed25519 if present, else the ssh agent.")
    jump_host: Optional[str] = Field(None, description="ssh: optional bastion, user@host[:port].")
    workdir: Optional[str] = Field(None, description="Project folder on the box. None: the project folder itself for local, ~/llm-box for ssh.")
    python: str = Field("python3", description="Python used to create the box's venv.")
    connect_timeout: float = Field(15.0, gt=0, description="Seconds to wait for an SSH connection.")
    lost_create_search_s: float = Field(600.0, ge=0, description="runpod/vastai: how long to keep looking (with backoff) for the instance of a create whose answer was lost, since instance lists lag; not found by then, the rental stays recorded as unconfirmed.")
    runpod: RunpodConfig = Field(default_factory=RunpodConfig, description="Used when kind is runpod.")
    vastai: VastaiConfig = Field(default_factory=VastaiConfig, description="Used when kind is vastai.")
    candidates: list[CandidateConfig] = Field(default_factory=list, description="kind plan: the boxes to choose among (providers x GPU names x counts, and SSH hosts at a stated $/h).")
    plan: PlanSettings = Field(default_factory=PlanSettings, description="How the plan prices a run.")
    release_slow_hosts: bool = Field(False, description="kind plan: when the benchmark on a new box measures under 0.8 x the planned tokens/s, release it, avoid its host and rent the next offer within budget.max_cost.")

    @model_validator(mode="after")
    def _check(self) -> "BoxConfig":
        if self.kind == "ssh" and not (self.host and self.user):
            raise ValueError("an ssh box needs host and user")
        if self.kind == "plan" and not self.candidates:
            raise ValueError("kind plan needs candidates, e.g. [{kind: vastai, gpu_name: RTX 4090, gpu_count: [1, 2]}]")
        if self.candidates and self.kind != "plan":
            raise ValueError(f"candidates are chosen among by kind plan; this box is kind {self.kind} (set kind: plan, "
                             "or remove candidates)")
        return self


class TokenizerStageConfig(Config):
    vocab_size: int = Field(32000, ge=256, le=65535, description="SentencePiece vocabulary size.")
    sample_bytes: int = Field(200_000_000, ge=1000, description="Bytes of the data mix the tokenizer is trained on.")


class DataStageConfig(Config):
    train_tokens: int = Field(2_000_000_000, ge=1, description="Tokens written to train.bin.")
    val_tokens: int = Field(10_000_000, ge=1, description="Tokens written to val.bin.")


class NcclProbeStageConfig(Config):
    """The all-reduce probe run before training on several GPUs (trainer.nccl_probe)."""

    size_mb: float = Field(256, gt=0, description="MB all-reduced across the GPUs per iteration.")
    iterations: int = Field(10, ge=1, description="Timed all-reduces per attempt (after one untimed).")
    timeout_s: float = Field(120, gt=0, description="Seconds the processes may take to join the process group and all-reduce once every one is up; longer counts as a hang and they are killed.")
    startup_timeout_s: float = Field(300, gt=0, description="Seconds the processes may take to start (Python and torch loaded).")
    min_busbw_gbps: float = Field(1.0, ge=0, description="Bus bandwidth (GB/s, as nccl-tests defines it) under which the bus counts as crawling.")


class RunSpecConfig(Config):
    """What to train."""

    name: str = Field("quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name: runs/<name>/ on the box and <prefix>/<name>/ in the store.")
    model_config_path: str = Field("configs/model_smoke.yaml", alias="model_config", description="Model config, relative to the project.")
    train_config_path: str = Field("configs/train_smoke.yaml", alias="train_config", description="Train config, relative to the project.")
    data_config_path: str = Field("configs/data_offline.yaml", alias="data_config", description="Data-mix config, relative to the project.")
    gpu_count: int = Field(1, ge=1, description="GPUs to train on, one process each (was gpus); >1 uses accelerate launch (DDP) for the benchmark and training, after the NCCL probe (run.nccl_probe).")
    overrides: list[str] = Field(default_factory=list, alias="set", description="--set overrides passed to every trainer step, e.g. train.max_steps=100.")
    tokenizer: TokenizerStageConfig = Field(default_factory=TokenizerStageConfig, description="Tokenizer stage.")
    data: DataStageConfig = Field(default_factory=DataStageConfig, description="Data stage.")
    benchmark: bool = Field(True, description="Run the throughput benchmark before training.")
    nccl_probe: NcclProbeStageConfig = Field(default_factory=NcclProbeStageConfig, description="The all-reduce probe before training on several GPUs (gpu_count > 1).")

    model_config = {**Config.model_config, "populate_by_name": True}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed_keys(data, "run", {"gpus": "gpu_count"})


class StorageConfig(Config):
    """Where runs live after the box is gone."""

    url: str = Field("file://.launcher/store", description="file://DIR (relative to the project) or s3://bucket/prefix.")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint (R2, B2, MinIO, SeaweedFS); None: AWS.")
    region: Optional[str] = Field(None, description="S3 region.")
    addressing_style: Literal["auto", "path", "virtual"] = Field("auto", description="S3 addressing style; path for most self-hosted servers.")
    credentials: Literal["env", "profile"] = Field("env", description="env: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment; profile: a named AWS profile.")
    profile: Optional[str] = Field(None, description="AWS profile name when credentials is profile.")
    keep: int = Field(3, ge=1, description="Step checkpoints kept in the store per run (the last N; final/, the best by validation loss and the newest are always kept).")

    @model_validator(mode="after")
    def _check(self) -> "StorageConfig":
        if not (self.url.startswith("file://") or self.url.startswith("s3://")):
            raise ValueError(f"storage url must start with file:// or s3://, got {self.url!r}")
        if self.credentials == "profile" and not self.profile:
            raise ValueError("credentials: profile needs a profile name")
        return self


class AgentConfig(Config):
    """The agent that runs beside training on the box."""

    sync_interval: float = Field(5.0, gt=0, description="Seconds between mirrors of logs and metrics to the store.")
    idle_minutes: float = Field(30.0, gt=0, description="After training ends, shut the box down once idle this long (rented boxes only).")
    hang_minutes: float = Field(30.0, gt=0, description="A trainer over budget.max_cost that writes no status.json for this long is hung: the agent stops it and makes its newest checkpoint final/.")
    shutdown_when_done: bool = Field(False, description="Release a rented box once training ends and everything is stored.")


class ManagedConfig(Config):
    """``launcher run --managed``: how the controller watches the box and when it gives up on one."""

    poll_s: float = Field(30.0, gt=0, description="Seconds between the controller's looks at the provider, the box and status.json.")
    ssh_grace_s: float = Field(300.0, gt=0, description="A box whose SSH stays unreachable this long (while the provider says nothing) is lost.")
    hang_s: float = Field(1800.0, gt=0, description="A trainer whose status.json is older than this while the box answers is hung.")
    startup_s: float = Field(900.0, ge=0, description="Seconds a new box needs before it trains (rent, bootstrap, restore): counted when deciding whether the budget left reaches the next checkpoint.")
    max_boxes: int = Field(10, ge=1, description="The most boxes one managed run rents, a guard against a loop of failing hosts.")
    interruptions_per_hour: Optional[float] = Field(None, gt=0, description="Your estimate of how often a box of this kind is interrupted, for the suggested checkpoint interval (Young); null: measured from the run's own interruptions once there is one.")


class LauncherConfig(Config):
    box: BoxConfig = Field(default_factory=BoxConfig, description="Where commands run.")
    run: RunSpecConfig = Field(default_factory=RunSpecConfig, description="What to train.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Where runs are mirrored.")
    budget: BudgetConfig = Field(default_factory=lambda: BudgetConfig(hourly_rate=0.0, max_cost=1.0), description="Box price and spending cap.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="The on-box agent.")
    managed: ManagedConfig = Field(default_factory=ManagedConfig, description="Managed runs: the controller's watch and recovery.")


def load_launcher_config(path: str | Path | None, overrides: Iterable[str] = ()) -> LauncherConfig:
    """``path`` None: the embedded default (configs/quickstart.yaml if present, else defaults).

    ``overrides`` are ``section.key=value`` strings for the launcher's own sections
    (box, run, storage, budget, agent); e.g. ``budget.max_cost=5``.
    """
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    data = read_yaml(path) if path is not None else {}
    for section in LAUNCHER_SECTIONS:
        sub = data.get(section) or {}
        if not isinstance(sub, dict):
            continue  # validation reports the wrong type
        updated = apply_overrides(sub, overrides, section, LAUNCHER_SECTIONS)
        if updated or section in data:
            data[section] = updated
    return validate(LauncherConfig, data, str(path) if path is not None else "<embedded default>")
