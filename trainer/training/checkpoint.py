"""Checkpoints: write one folder atomically with its manifest last; find and load complete ones.

Layout of ``runs/<name>/checkpoints/step_NNNNNN/`` and ``runs/<name>/final/``:

    model.safetensors    model weights (a tied LM head is stored once, as embed.weight)
    model_config.json    ModelConfig.to_dict()
    config.yaml          resolved {model: ..., train: ...} as used
    optimizer.pt         optimizer state_dict
    scheduler.json       schedule position and parameters
    rng_rank{R}.pt       python / numpy / torch / cuda RNG states of each rank
    data_state.json      data-sampler position
    trainer_state.json   step, tokens seen, elapsed seconds, cost spent, val loss
    manifest.json        sizes + sha256 of all of the above, written last

The folder is built under a temporary name and renamed into place (runcontract.atomic.atomic_dir),
so a folder with the final name is always whole; one without a valid manifest is never resumed.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from runcontract.atomic import atomic_dir
from runcontract.config import ModelConfig
from runcontract.configlib import validate
from runcontract.errors import UserError
from runcontract.manifest import MANIFEST_NAME, is_complete, verify_manifest
from runcontract.run_folder import CHECKPOINTS_DIR, CONFIG_FILE, DATA_STATE_FILE, FINAL_DIR, latest_complete_checkpoint, step_of_dir

MODEL_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model_config.json"


class CheckpointError(UserError):
    """A checkpoint cannot be used: incomplete, corrupt, or made for another model."""


@dataclass
class TrainingState:
    """Everything besides weights and optimizer that an exact resume needs."""

    step: int
    tokens_seen: int
    elapsed_s: float
    cost_spent: float
    val_loss: Optional[float]
    world_size: int
    data_state: dict
    scheduler_state: dict
    rng_states: list  # one dict per rank, index = rank
    val_scores: Optional[dict] = None  # the last eval: {"mix" | source: {"loss", "bpb"}}, shown again after a resume


def capture_rng_state() -> dict:
    """This process's RNG states (python, numpy, torch, CUDA), as saved in rng_rank{R}.pt."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- writing ------------------------------------------------------------------------------------
def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the weights; a tied head is dropped (safetensors stores a
    shared tensor once, and loading re-ties it)."""
    state = model.state_dict()
    if getattr(model, "config", None) is not None and model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}


def save_checkpoint(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    state: TrainingState,
    resolved_config: dict,
) -> Path:
    """Write a whole checkpoint to ``folder`` (replacing an older one of that name only once the
    new one is complete). Call on the main process; ``state.rng_states`` holds every rank's."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_file(_model_tensors(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(resolved_config, sort_keys=False))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "scheduler.json").write_text(json.dumps(state.scheduler_state, indent=2) + "\n")
        for rank, rng in enumerate(state.rng_states):
            torch.save(rng, tmp / f"rng_rank{rank}.pt")
        (tmp / DATA_STATE_FILE).write_text(json.dumps(state.data_state, indent=2) + "\n")
        trainer_state = {
            "step": state.step, "tokens_seen": state.tokens_seen, "elapsed_s": state.elapsed_s,
            "cost_spent": state.cost_spent, "val_loss": state.val_loss, "world_size": state.world_size,
            "val_scores": state.val_scores,
        }
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
        from runcontract.manifest import write_manifest  # last: it hashes everything above

        write_manifest(tmp, meta={"step": state.step, "tokens_seen": state.tokens_seen, "val_loss": state.val_loss})
    return folder


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete step checkpoints, and leftovers of
    interrupted writes (hidden ``.step_*.tmp`` folders). ``final/`` is never touched."""
    ckpt_root = Path(run_dir) / CHECKPOINTS_DIR
    if not ckpt_root.is_dir():
        return []
    removed = []
    for leftover in ckpt_root.glob(".step_*"):
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    complete = sorted((p for p in _step_dirs(ckpt_root) if is_complete(p)), key=_step_of)
    for old in complete[:-keep_last] if keep_last > 0 else complete:
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


# -- finding ------------------------------------------------------------------------------------
def _step_of(folder: Path) -> int:
    step = step_of_dir(folder.name)
    return -1 if step is None else step


def _step_dirs(ckpt_root: Path) -> list[Path]:
    return [p for p in ckpt_root.iterdir() if p.is_dir() and step_of_dir(p.name) is not None] if ckpt_root.is_dir() else []


def latest_checkpoint(run_dir: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint of a run (``final/`` wins a tie), or None: the one rule,
    runcontract.run_folder.latest_complete_checkpoint (the agent promotes by it too)."""
    return latest_complete_checkpoint(run_dir)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint folder as given, or for a run folder its newest complete checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist; give a checkpoint folder (runs/NAME/checkpoints/step_NNNNNN or runs/NAME/final) or a run folder.")
    if (path / MANIFEST_NAME).exists() or (path / MODEL_FILE).exists():
        return path
    if (path / CHECKPOINTS_DIR).is_dir() or (path / FINAL_DIR).is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"run folder {path} has no complete checkpoint (none with a valid manifest.json); train longer or pick another run.")
        return found
    raise CheckpointError(f"{path} is neither a checkpoint folder (with {MANIFEST_NAME}) nor a run folder (with {CHECKPOINTS_DIR}/ or {FINAL_DIR}/).")


# -- loading ------------------------------------------------------------------------------------
def read_model_config(folder: Path) -> ModelConfig:
    try:
        data = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / MODEL_CONFIG_FILE} cannot be read ({exc}); the checkpoint is corrupt.") from None
    return validate(ModelConfig, data, str(folder / MODEL_CONFIG_FILE))


def load_weights(model: torch.nn.Module, folder: Path, map_location="cpu") -> None:
    """Load model.safetensors into ``model`` (re-tying a tied head)."""
    try:
        tensors = load_file(str(folder / MODEL_FILE), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{folder / MODEL_FILE} cannot be read ({exc}); the checkpoint is corrupt.") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if model.config.tie_embeddings:
        missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise CheckpointError(f"{folder / MODEL_FILE} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}; it was written for another model shape.")


def load_model_from_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """(Transformer, ModelConfig) from a checkpoint folder (or a run folder: its newest one).

    The manifest is verified first, hashes included: a missing manifest or a mismatching file is
    a UserError and nothing is loaded."""
    from trainer.modeling.transformer import Transformer

    folder = resolve_checkpoint_path(path)
    verify_manifest(folder, check_hashes=True)
    cfg = read_model_config(folder)
    model = Transformer(cfg)
    load_weights(model, folder, map_location="cpu")
    model.to(map_location)
    model.eval()
    return model, cfg


def load_training_state(folder: str | os.PathLike) -> TrainingState:
    """Read everything but the weights and the optimizer from a verified checkpoint folder."""
    folder = Path(folder)
    try:
        trainer_state = json.loads((folder / "trainer_state.json").read_text())
        data_state = json.loads((folder / DATA_STATE_FILE).read_text())
        scheduler_state = json.loads((folder / "scheduler.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder} lacks readable training state ({exc}); it cannot be resumed from (it may be a model-only export).") from None
    rng_states = []
    rank = 0
    while (folder / f"rng_rank{rank}.pt").exists():
        rng_states.append(torch.load(folder / f"rng_rank{rank}.pt", weights_only=False))
        rank += 1
    return TrainingState(
        step=int(trainer_state["step"]), tokens_seen=int(trainer_state["tokens_seen"]),
        elapsed_s=float(trainer_state.get("elapsed_s", 0.0)), cost_spent=float(trainer_state.get("cost_spent", 0.0)),
        val_loss=trainer_state.get("val_loss"), world_size=int(trainer_state.get("world_size", 1)),
        data_state=data_state, scheduler_state=scheduler_state, rng_states=rng_states,
        val_scores=trainer_state.get("val_scores"),
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, folder: str | os.PathLike, map_location="cpu") -> None:
    path = Path(folder) / "optimizer.pt"
    if not path.exists():
        raise CheckpointError(f"{folder} has no optimizer.pt; it cannot be resumed from exactly.")
    if torch.device(map_location).type == "cpu":  # accelerate's CPU ranks are "cpu:N", which torch.load cannot restore to
        map_location = "cpu"
    optimizer.load_state_dict(torch.load(path, map_location=map_location, weights_only=False))


def check_vocab(tokenizer_vocab: int, model_vocab: int, tokenizer_path, checkpoint) -> None:
    """A tokenizer and a checkpoint belong together only with the same vocabulary size (eval and export check it)."""
    if tokenizer_vocab != model_vocab:
        raise UserError(
            f"tokenizer {tokenizer_path} has {tokenizer_vocab} pieces but the model in {checkpoint} was built for "
            f"vocab_size {model_vocab}: they do not belong together. Pass the tokenizer the run was trained with "
            "(the run's config.yaml names it under train.tokenizer_model)."
        )
