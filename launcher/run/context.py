"""What every stage of ``launcher run`` reads: the run's config, the box, the console, and the
names and trainer arguments derived from them."""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rich.console import Console

from launcher.box.base import Box
from launcher.config import LauncherConfig
from launcher.secrets import secrets_path
from runcontract.budget import BudgetConfig
from runcontract.ddp_launch import accelerate_launch_args
from runcontract.detached import session_name
from runcontract.run_folder import run_rel


@dataclass
class RunContext:
    config: LauncherConfig
    project_root: Path
    box: Box
    console: Console
    config_path: Optional[str] = None
    resume: bool = False
    allow_over_budget: bool = False
    hourly_rate: Optional[float] = None  # live price of a rented box; None: budget.hourly_rate
    instance_id: Optional[str] = None
    fence_generation: Optional[int] = None  # a managed run's fencing generation for this box (launcher/managed/fence.py)
    multiplexer: str = "tmux"
    probe_box: bool = True  # --dry-run may read the box (False: it was never connected)
    nccl_env: dict[str, str] = field(default_factory=dict)  # set by the nccl_probe stage: added to every multi-GPU launch

    # ---- names ------------------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        return self.config.run.name

    @property
    def run_dir(self) -> str:
        return run_rel(self.run_name)

    @property
    def session(self) -> str:
        return session_name(self.run_name)

    @property
    def python(self) -> str:
        return shlex.quote(self.box.python) if self.box.kind == "local" else self.box.python

    @property
    def secrets_path(self) -> str:
        return secrets_path(self.box)

    @property
    def rate(self) -> float:
        return float(self.hourly_rate if self.hourly_rate is not None else self.config.budget.hourly_rate)

    @property
    def budget(self) -> BudgetConfig:
        """The run's budget: budget.max_cost at the box's live rate; the trainer (--set) and the agent (store.json) get it."""
        return self.config.budget.model_copy(update={"hourly_rate": self.rate})

    def trainer_sets(self) -> list[str]:
        """``--set`` overrides for every trainer step: run.set, then the launcher's budget and run name."""
        sets = [*self.config.run.overrides, *self.budget.overrides("train.budget"), f"train.run_name={self.run_name}"]
        by_key: dict[str, str] = {}  # each key once: the last value wins, as it would on the trainer's command line
        for item in sets:
            key = item.partition("=")[0].strip()
            by_key.pop(key, None)
            by_key[key] = item
        return [arg for s in by_key.values() for arg in ("--set", s)]

    def train_config(self):
        """The trainer's TrainConfig as this run resolves it (train_config file + run.set): no torch needed."""
        from runcontract.config import SECTIONS, TrainConfig
        from runcontract.configlib import load_config

        run = self.config.run
        return load_config(TrainConfig, self.project_root / run.train_config_path, run.overrides, "train", SECTIONS)

    def model_train_args(self) -> list[str]:
        run = self.config.run
        return ["--model_config", run.model_config_path, "--train_config", run.train_config_path, *self.trainer_sets()]

    def local_file_hash(self, *rel_paths: str) -> str:
        h = hashlib.sha256()
        for rel in rel_paths:
            path = self.project_root / rel
            h.update(rel.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"<missing>") + b"\0")
        return h.hexdigest()


def module_command(ctx: RunContext, module: str, args: list[str]) -> str:
    """``python -m module args`` with the box's Python: how every trainer step is started."""
    return f"{ctx.python} -m {module} {shlex.join(args)}"


def launch_command(ctx: RunContext, module: str, args: list[str]) -> str:
    """A step that runs on all ``run.gpu_count`` GPUs: ``accelerate launch`` (DDP) with the NCCL
    environment the probe chose (ctx.nccl_env) when there are several, else ``module_command``."""
    gpu_count = ctx.config.run.gpu_count
    if gpu_count == 1:
        return module_command(ctx, module, args)
    env = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(ctx.nccl_env.items()))
    return f"{env}{ctx.python} {shlex.join(accelerate_launch_args(gpu_count, module))} {shlex.join(args)}"
