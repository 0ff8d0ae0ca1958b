"""Stage tokenizer: ``trainer.tokenizer`` trains the SentencePiece model into tokenizer/ (shared by
runs with the same data config; stamped)."""
from __future__ import annotations

from launcher.run.context import RunContext, module_command
from launcher.run.stamps import fingerprint

OUTPUTS = ["tokenizer/spm.model"]


def command(ctx: RunContext) -> str:
    run = ctx.config.run
    return module_command(ctx, "trainer.tokenizer", ["--data_config", run.data_config_path, "--output_dir", "tokenizer",
                                                     "--vocab_size", str(run.tokenizer.vocab_size),
                                                     "--sample_bytes", str(run.tokenizer.sample_bytes)])


def stamp_fingerprint(ctx: RunContext) -> str:
    return fingerprint(ctx, command(ctx), ctx.config.run.data_config_path)
