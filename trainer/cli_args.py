"""The flags every ``python -m trainer.<step>`` shares: config files and ``--set`` overrides.

    parser = argparse.ArgumentParser(...)
    add_config_args(parser, model=True, train=True)
    args = parser.parse_args()
    model_cfg, train_cfg, _ = load_configs(args)
"""
from __future__ import annotations

import argparse
from typing import Optional

from runcontract.config import SECTIONS, DataMixConfig, ModelConfig, TrainConfig
from runcontract.configlib import load_config


def add_config_args(parser: argparse.ArgumentParser, model: bool = False, train: bool = False, data: bool = False) -> None:
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
