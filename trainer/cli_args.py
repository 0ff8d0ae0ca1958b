"""The flags the ``python -m trainer.<step>`` commands share: config files, ``--set`` overrides,
the checkpoint a step reads, --force, and deprecated aliases of renamed flags.

    parser = argparse.ArgumentParser(...)
    add_config_args(parser, model=True, train=True)
    args, model_cfg, train_cfg, _ = parse_configs(parser, argv)
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from runcontract.config import SECTIONS, DataMixConfig, ModelConfig, TrainConfig
from runcontract.configlib import load_config


def add_config_args(parser: argparse.ArgumentParser, model: bool = False, train: bool = False, data: bool = False,
                    rebuild: bool = False) -> None:
    """The config flags; ``rebuild`` adds --force for a step that skips work already done."""
    if model:
        parser.add_argument("--model_config", default="configs/model_100m.yaml", help="model YAML (ModelConfig)")
    if train:
        parser.add_argument("--train_config", default="configs/train_100m.yaml", help="train YAML (TrainConfig)")
    if data:
        parser.add_argument("--data_config", default="configs/data_c4_wiki.yaml", help="data-mix YAML (DataMixConfig)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config key, e.g. --set train.lr=3e-4 --set model.n_layers=4 (repeatable)",
    )
    if rebuild:
        parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date")


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """The checkpoint a step reads (trainer.eval, trainer.export) and the tokenizer it was trained with."""
    parser.add_argument("--checkpoint", required=True, help="runs/<name>/final, runs/<name>/checkpoints/step_NNNNNN, or a run folder (its newest)")
    parser.add_argument("--tokenizer_model", default="tokenizer/spm.model", help="SentencePiece model the run was trained with")


def load_configs(args: argparse.Namespace) -> tuple[Optional[ModelConfig], Optional[TrainConfig], Optional[DataMixConfig]]:
    """Load whichever of the three configs the parser declared, with overrides applied."""
    overrides = getattr(args, "overrides", [])
    model = train = data = None
    if hasattr(args, "model_config"):
        model = load_config(ModelConfig, args.model_config, overrides, "model", SECTIONS)
    if hasattr(args, "train_config"):
        train = load_config(TrainConfig, args.train_config, overrides, "train", SECTIONS)
    if hasattr(args, "data_config"):
        data = load_config(DataMixConfig, args.data_config, overrides, "data", SECTIONS)
    return model, train, data


def parse_configs(parser: argparse.ArgumentParser, argv: Optional[list[str]]):
    """A step's start: (args, model, train, data configs) from its command line.

    A step that reads the data mix keeps datasets from importing torch (seconds) only to share
    state with torch DataLoader workers: there are none."""
    args = parser.parse_args(argv)
    if hasattr(args, "data_config"):
        os.environ.setdefault("USE_TORCH", "0")
    return (args, *load_configs(args))


class _DeprecatedAlias(argparse.Action):
    """An old flag name that still works for one release: it says so on stderr and fills the new one."""

    def __init__(self, option_strings, dest, new_name: str, **kwargs):
        self.new_name = new_name
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated and goes in the next release; use {self.new_name}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` (hidden from --help) for the already declared flag ``new``."""
    parser.add_argument(old, dest=new.lstrip("-").replace("-", "_"), action=_DeprecatedAlias, new_name=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
