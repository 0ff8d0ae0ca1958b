"""``python -m trainer.model``: print the exact parameter count of a model config.

The command's code: trainer/modeling/transformer.py (the modeling room, trainer/modeling/).
"""
from runcontract.errors import cli_main
from trainer.modeling.transformer import main

__all__ = ["main"]  # the command's flags and its entry point

if __name__ == "__main__":
    
    cli_main(main)()
