"""Export a checkpoint to a folder that Hugging Face transformers loads.

    python -m trainer.export --checkpoint runs/<name>/final --tokenizer_model tokenizer/spm.model \
        --output_dir runs/<name>/final_hf [--dtype float32|bfloat16]

The folder holds a ``LlamaForCausalLM`` (config.json, model.safetensors) and the SentencePiece
tokenizer as ``tokenizer.json`` (trainer/modeling/hf_tokenizer.py), so

    AutoModelForCausalLM.from_pretrained(out_dir); AutoTokenizer.from_pretrained(out_dir)

work, and with them lm-evaluation-harness or any HF tool. BOS/EOS ids come from
``tokenizer_meta.json`` next to the tokenizer model when present. Before the folder gets its
name, the export is reloaded and its logits are compared with the project's model on the same
tokens; it is built under a temporary name and renamed, so a failed export leaves nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

from runcontract.atomic import atomic_dir
from runcontract.errors import UserError, cli_main
from runcontract.run_folder import TOKENIZER_META_FILE
from trainer.cli_args import add_checkpoint_args, add_deprecated_alias
from trainer.corpus.prepared_files import read_meta
from trainer.corpus.spm_tokenizer import RUN_TOKENIZER_FIX, load_tokenizer

log = logging.getLogger("trainer.export")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Exported fp32 logits must match the project's within this (summation order differs slightly).
LOGITS_ATOL = {torch.float32: 1e-4, torch.bfloat16: 0.5}


def tokenizer_special_ids(tokenizer_model: Path) -> dict:
    """bos/eos/pad ids and whether BOS was prepended in training, from tokenizer_meta.json
    beside the model, else from the SentencePiece model itself."""
    sp = load_tokenizer(tokenizer_model, RUN_TOKENIZER_FIX)
    ids = {"bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "pad_id": sp.pad_id(), "add_bos": False}
    meta = read_meta(tokenizer_model.with_name(TOKENIZER_META_FILE), fix="rewrite it with python -m trainer.tokenizer or delete it")
    if meta is not None:
        for key in ("bos_id", "eos_id", "pad_id"):
            if meta.get(key) is not None:
                ids[key] = int(meta[key])
        ids["add_bos"] = bool(meta.get("add_bos", False))
    return {key: (None if isinstance(value, int) and not isinstance(value, bool) and value < 0 else value) for key, value in ids.items()}


def _portable_tokenizer_class(config_path: Path) -> None:
    # transformers 5 writes its internal "TokenizersBackend"; 4.x (still common for
    # lm-evaluation-harness) only knows PreTrainedTokenizerFast, which 5 maps to the same class.
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@torch.no_grad()
def compare_logits(model, hf_model, vocab_size: int, seq_len: int, atol: float) -> float:
    """Largest |difference| of the two models' logits on the same random tokens; raises above ``atol``."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab_size, (2, seq_len), generator=generator)
    ours, _ = model(tokens)
    theirs = hf_model(input_ids=tokens).logits
    diff = float((ours.float() - theirs.float()).abs().max())
    if not diff <= atol:
        raise UserError(f"the exported model's logits differ from the checkpoint's by {diff:.3g} (more than {atol}); the export was not written. This is a bug in trainer/modeling/hf_convert.py: please report it.")
    return diff


def export_checkpoint(checkpoint: str | Path, tokenizer_model: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Write the HF folder ``out_dir`` (replacing an older export only once the new one is whole)."""
    try:
        from transformers import AutoModelForCausalLM, LlamaForCausalLM
    except ImportError as error:  # a venv made before transformers joined the trainer extra
        raise UserError(f"export needs transformers, which this Python ({sys.executable}) cannot import ({error}). "
                        "Install the trainer's dependencies with `pip install -e '.[trainer]'` (on a box: "
                        "`bash infra/bootstrap.sh`, which `launcher run` runs), then export again.") from None

    from trainer.training.checkpoint import check_vocab, load_model_from_checkpoint, resolve_checkpoint_path
    from trainer.modeling.hf_convert import to_hf_config, to_hf_state_dict
    from trainer.modeling.hf_tokenizer import build_hf_tokenizer, read_spm_model

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    tokenizer_model, out_dir = Path(tokenizer_model), Path(out_dir)
    if not tokenizer_model.is_file():
        raise UserError(f"tokenizer model {tokenizer_model} does not exist; {RUN_TOKENIZER_FIX}.")
    checkpoint = resolve_checkpoint_path(checkpoint)
    if out_dir.resolve() == checkpoint.resolve():
        raise UserError(f"--output_dir {out_dir} is the checkpoint itself; pick another folder, e.g. {checkpoint}_hf.")
    model, cfg = load_model_from_checkpoint(checkpoint)  # verifies the manifest first
    spm_model = read_spm_model(tokenizer_model)
    check_vocab(len(spm_model.pieces), cfg.vocab_size, tokenizer_model, checkpoint)
    special = tokenizer_special_ids(tokenizer_model)

    hf_config = to_hf_config(cfg, bos_token_id=special["bos_id"], eos_token_id=special["eos_id"], pad_token_id=special["pad_id"])
    hf_model = LlamaForCausalLM(hf_config)
    hf_model.load_state_dict(to_hf_state_dict(model), strict=True)
    hf_model.to(DTYPES[dtype]).eval()
    tokenizer = build_hf_tokenizer(tokenizer_model, special["bos_id"], special["eos_id"], add_bos=special["add_bos"], pad_id=special["pad_id"])
    tokenizer.model_max_length = cfg.max_seq_len

    from runcontract.manifest import read_manifest

    meta = read_manifest(checkpoint).meta
    with atomic_dir(out_dir) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_class(tmp / "tokenizer_config.json")
        shutil.copyfile(tokenizer_model, tmp / "spm.model")  # the original, for tools that want SentencePiece
        # Check what a user will load, not what is in memory.
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        diff = compare_logits(model, reloaded, cfg.vocab_size, min(16, cfg.max_seq_len), LOGITS_ATOL[DTYPES[dtype]])
        (tmp / "export_info.json").write_text(json.dumps({
            "source_checkpoint": str(checkpoint), "step": meta.get("step"), "tokens_seen": meta.get("tokens_seen"),
            "model_config_hash": cfg.config_hash(), "model_config": cfg.to_dict(), "dtype": dtype,
            "max_abs_logit_difference": diff, "bos_id": special["bos_id"], "eos_id": special["eos_id"],
            "add_bos": special["add_bos"], "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }, indent=2) + "\n")
    log.info("exported %s to %s (max logit difference %.2g)", checkpoint, out_dir, diff)
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.export", description="Export a checkpoint as a Hugging Face LlamaForCausalLM folder with its tokenizer.")
    add_checkpoint_args(parser)
    parser.add_argument("--output_dir", default=None, help="folder to write (default: <checkpoint>_hf)")
    add_deprecated_alias(parser, "--out_dir", "--output_dir")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weight dtype in the export")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    out_dir = Path(args.output_dir) if args.output_dir else Path(str(Path(args.checkpoint)).rstrip("/") + "_hf")
    export_checkpoint(args.checkpoint, args.tokenizer_model, out_dir, args.dtype)
    print(f"wrote {out_dir}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out_dir)!r})")
