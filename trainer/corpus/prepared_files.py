"""Reading what trainer.tokenizer and trainer.data prepare: their meta files and the token files.

A token file (train.bin, val.bin, val_<source>.bin) is a flat array of TOKEN_DTYPE ids with no
header, so its size in bytes says how many tokens it holds; this module owns that arithmetic.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from runcontract.config import TOKEN_DTYPE
from runcontract.errors import UserError
from runcontract.run_folder import DATA_META_FILE

TOKEN_BYTES = np.dtype(TOKEN_DTYPE).itemsize


def read_meta(path: str | os.PathLike, fix: Optional[str] = None) -> Optional[dict]:
    """A meta file's JSON, or None when the file is absent.

    Unreadable JSON is None too for a builder deciding whether to rebuild (``fix`` None); a
    step that needs the file gets a UserError ending with ``fix`` instead."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        if fix is None:
            return None
        raise UserError(f"{path} is not valid JSON ({exc}); {fix}.") from None


def read_data_meta(data_dir: Path) -> Optional[dict]:
    """data_meta.json of a finished data build, or None when there is none."""
    return read_meta(Path(data_dir) / DATA_META_FILE, fix="rebuild the data with `python -m trainer.data`")


def token_count(path: str | os.PathLike) -> int:
    """Tokens in a token file (a truncated last token is not counted)."""
    return os.path.getsize(path) // TOKEN_BYTES


def open_tokens(path: str | os.PathLike, count: Optional[int] = None) -> np.memmap:
    """A token file as a read-only memmap (of its first ``count`` tokens when given)."""
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", shape=None if count is None else (count,))
