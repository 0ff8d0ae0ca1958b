"""Gather the plan's inputs (configs, the ledger, the run's progress, every candidate's offers) and rank.

The one place that does I/O for the plan: ``launcher plan`` prints what this returns and
``launcher up`` rents from it. The ranking itself is rank.plan, pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from launcher.config import LauncherConfig
from launcher.plan.candidates import CandidateOffer, ProviderFactory, candidate_offers
from launcher.plan.ledger import read_throughput
from launcher.plan.memory import flops_per_token, run_memory_bytes
from launcher.plan.plan_json import PlanJson
from launcher.plan.rank import RunNeeds, plan, setup_hours_from_ledger
from launcher.plan.speed import SpeedModel
from runcontract.config import SECTIONS, ModelConfig, TrainConfig
from runcontract.configlib import load_config
from runcontract.errors import UserError
from runcontract.run_files import StatusFile
from runcontract.run_folder import STATUS_FILE


@dataclass
class Planned:
    result: PlanJson
    offers: dict[str, CandidateOffer] = field(default_factory=dict)   # offer_id -> what up rents

    def row(self, offer_id: str):
        return next((r for r in self.result.offers if r.offer_id == offer_id), None)


def target_tokens(train: TrainConfig) -> int:
    """train.target_tokens, or what max_steps makes of it when the schedule is capped by steps."""
    if train.max_steps:
        return min(train.target_tokens, train.max_steps * train.tokens_per_step)
    return train.target_tokens


def tokens_done(store, run: str) -> int:
    """Tokens the run has trained, from its status.json in the store (0 for a new run)."""
    data = store.read_bytes(f"{run}/{STATUS_FILE}")
    if not data:
        return 0
    try:
        return StatusFile.parse(data, f"{run}/{STATUS_FILE}").tokens_seen or 0
    except UserError:
        return 0


def make_plan(config: LauncherConfig, root: Path, make_provider: ProviderFactory,
              avoided: Iterable[str] = (), ledger: Optional[list[dict[str, Any]]] = None) -> Planned:
    """Price every candidate offer for the run (``ledger``: the throughput records, read from the store when None)."""
    if config.box.kind != "plan":
        raise UserError(f"launcher plan chooses among box.candidates, and this config's box is kind {config.box.kind}: "
                        "set box.kind: plan with candidates, e.g. [{kind: vastai, gpu_name: RTX 4090, gpu_count: [1, 2]}, "
                        "{kind: runpod, gpu_name: NVIDIA GeForce RTX 4090}]")
    needs, speeds, notes = plan_inputs(config, root, ledger)
    found, problems = candidate_offers(config, make_provider, avoided)
    result = plan((c.plan_offer for c in found), needs, speeds)
    result.skipped = notes + problems + result.skipped
    return Planned(result, {c.plan_offer.offer_id: c for c in found})


def plan_inputs(config: LauncherConfig, root: Path, ledger: Optional[list[dict[str, Any]]] = None,
                store=None) -> tuple[RunNeeds, SpeedModel, list[str]]:
    """What the run needs of a box and how fast each GPU is (``ledger``: the throughput records, read
    from the store when None), and notes on what could not be read. ``make_plan`` and a managed run's
    next box (launcher/managed/choice.py) both price offers with these."""
    from launcher.store.factory import open_store

    run = config.run
    model = load_config(ModelConfig, root / run.model_config_path, run.overrides, "model", SECTIONS)
    train = load_config(TrainConfig, root / run.train_config_path, run.overrides, "train", SECTIONS)
    notes: list[str] = []
    done = 0
    if ledger is None:
        try:
            store = store or open_store(config.storage, root)
            ledger = read_throughput(store)
            done = tokens_done(store, run.name)
        except UserError as err:
            ledger = []
            notes.append(f"the throughput ledger could not be read ({err}): every speed is estimated")
    settings = config.box.plan
    needs = RunNeeds(run=run.name, target_tokens=target_tokens(train), tokens_done=done,
                     memory_bytes=run_memory_bytes(model, train.seq_len, train.micro_batch_size),
                     max_cost=config.budget.max_cost, default_setup_hours=settings.setup_hours,
                     setup_hours_by_provider=setup_hours_from_ledger(ledger))
    speeds = SpeedModel(ledger, flops_per_token(model, train.seq_len), model.config_hash(),
                        settings.default_mfu, settings.multi_gpu_efficiency)
    return needs, speeds, notes
