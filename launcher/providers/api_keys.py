"""Where a provider's API key comes from: an environment variable, else a key file.

    RUNPOD_API_KEY / VAST_API_KEY            (the names are configurable: box.<provider>.api_key_env)
    ~/.config/llm-box/runpod_key             ($XDG_CONFIG_HOME/llm-box/... when that is set)
    ~/.config/llm-box/vast_key

A key file must be readable by its owner only (mode 600 or stricter): a group- or
world-readable file is refused, with the ``chmod`` that fixes it. The key itself is never
printed, logged or put in an exception; only the variable name and the file path are.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Mapping, Optional

from runcontract.errors import UserError

KEY_FILE_NAMES = {"runpod": "runpod_key", "vastai": "vast_key"}


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llm-box"


def key_file_path(provider: str, environ: Mapping[str, str] | None = None) -> Path:
    if provider not in KEY_FILE_NAMES:
        raise ValueError(f"no API key file for provider {provider!r}")
    return config_dir(environ) / KEY_FILE_NAMES[provider]


def read_key_file(path: Path) -> Optional[str]:
    """The key in ``path``; None when the file does not exist. Refuses loose permissions."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"API key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise UserError(
            f"API key file {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):03o}); "
            f"restrict it with `chmod 600 {path}` (and rotate the key if others may have read it)"
        )
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise UserError(f"API key file {path} is empty")
    return key


def load_api_key(provider: str, env_var: str, environ: Mapping[str, str] | None = None) -> str:
    """The API key for ``provider`` ("runpod" or "vastai"): ``env_var`` first, then the key file."""
    environ = os.environ if environ is None else environ
    value = (environ.get(env_var) or "").strip()
    if value:
        return value
    path = key_file_path(provider, environ)
    key = read_key_file(path)
    if key is None:
        raise UserError(
            f"no {provider} API key: set the environment variable {env_var}, or write the key to {path} "
            f"(`mkdir -p {path.parent} && (umask 077; cat > {path})`, mode 600)"
        )
    return key
