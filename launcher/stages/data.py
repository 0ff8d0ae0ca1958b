"""Stage data: ``trainer.data`` tokenizes the data mix into data/train.bin and data/val.bin (shared by
runs with the same data config; stamped, and redone when the tokenizer changes)."""
from __future__ import annotations

from launcher.stages import tokenizer
from launcher.run.context import RunContext, module_command
from launcher.run.stamps import fingerprint

OUTPUTS = ["data/train.bin", "data/val.bin"]


def command(ctx: RunContext) -> str:
    run = ctx.config.run
    return module_command(ctx, "trainer.data", ["--data_config", run.data_config_path, "--tokenizer_model", "tokenizer/spm.model",
                                                "--output_dir", "data", "--train_tokens", str(run.data.train_tokens),
                                                "--val_tokens", str(run.data.val_tokens)])


def stamp_fingerprint(ctx: RunContext) -> str:
    return fingerprint(ctx, command(ctx), ctx.config.run.data_config_path, extra=tokenizer.stamp_fingerprint(ctx))
