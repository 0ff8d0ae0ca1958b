"""``python -m trainer.export``: export a checkpoint as a Hugging Face LlamaForCausalLM folder.

The command's code: trainer/modeling/hf_export.py (the modeling room, trainer/modeling/).
"""
from trainer.modeling.hf_export import build_parser, main

__all__ = ["build_parser", "main"]  # the command's flags and its entry point

if __name__ == "__main__":
    main()
