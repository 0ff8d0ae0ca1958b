"""Validate configs and print them resolved (defaults filled in, --set overrides applied).

    python -m trainer.show_config --model_config configs/model_100m.yaml \
        --train_config configs/train_100m.yaml --data_config configs/data_c4_wiki.yaml --set train.lr=3e-4

Exit 0 and the resolved YAML when everything is valid; exit 2 with one line per wrong field
otherwise. Nothing is run or written.
"""
from __future__ import annotations

import argparse

import yaml

from trainer.cli_args import add_config_args, load_configs
from runcontract.errors import cli_main


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, model=True, train=True, data=True)
    args = parser.parse_args(argv)
    model, train, data = load_configs(args)
    resolved = {"model": model.to_dict(), "train": train.to_dict(), "data": data.to_dict()}
    print(yaml.safe_dump(resolved, sort_keys=False), end="")
    print(f"# model: {model.n_layers} layers x {model.d_model} wide, config hash {model.config_hash()}")


if __name__ == "__main__":
    main()
