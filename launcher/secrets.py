"""The secrets a box needs, gathered on the laptop and handed over as environment only.

``box_secret_env(config)`` collects them (S3 keys from this shell's environment or from a named
AWS profile; the provider's API key when the box is rented; WANDB_API_KEY when the run logs to
Weights & Biases; HF_TOKEN and the hub's address, HF_ENDPOINT, for the data steps). ``render_env_file(env)`` turns them into ``export KEY='value'`` lines; the run
command writes that with mode 600 to ``~/.llm-box/secrets.env`` on a remote box (to
``.launcher/secrets.env`` in the project for the local box, and not at all when there are none)
and sources it in the tmux session. Secrets never go on a command line, into a log, into
store.json or into the synced project folder.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Mapping, Optional

from launcher.box.base import Box
from launcher.config import RENTED_KINDS
from launcher.providers.api_keys import key_file_path, read_key_file
from runcontract.atomic import atomic_write_text
from runcontract.errors import UserError

SECRETS_PATH = "~/.llm-box/secrets.env"  # on a remote box; the local box keeps it in the project
LOCAL_SECRETS_PATH = ".launcher/secrets.env"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secrets_path(box: Box) -> str:
    """Where the box keeps its secrets file: in the project for the local box (nothing written
    outside it), in the box user's home for a remote one (the synced project must never hold it)."""
    return LOCAL_SECRETS_PATH if box.kind == "local" else SECRETS_PATH


def _provider_key(kind: str, env_name: str, env: Mapping[str, str]) -> Optional[str]:
    """The provider's API key as ``up`` reads it (providers/api_keys.py), or None when there is none."""
    value = (env.get(env_name) or "").strip()
    return value or read_key_file(key_file_path(kind, env))


def box_secret_env(config, env: Optional[Mapping[str, str]] = None, train_config=None) -> dict[str, str]:
    """Environment variables the box needs (S3 credentials, provider API key, W&B key); may be empty."""
    env = os.environ if env is None else env
    result: dict[str, str] = _hub_env(env)
    if train_config is not None and "wandb" in train_config.trackers:
        result.update(_wandb_env(env))
    storage = config.storage
    if storage.url.startswith("s3://"):
        if storage.credentials == "env":
            key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
            if not key or not secret:
                raise UserError(
                    f"storage {storage.url} uses credentials: env, but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are "
                    "not both set in this shell. Export them (the bucket's access key pair) and run again, or set "
                    "storage.credentials: profile with storage.profile. They reach the box as a mode-600 file, never "
                    "on a command line."
                )
            result["AWS_ACCESS_KEY_ID"], result["AWS_SECRET_ACCESS_KEY"] = key, secret
            if env.get("AWS_SESSION_TOKEN"):
                result["AWS_SESSION_TOKEN"] = env["AWS_SESSION_TOKEN"]
        else:
            import boto3
            from botocore.exceptions import BotoCoreError, ProfileNotFound

            try:
                creds = boto3.Session(profile_name=storage.profile).get_credentials()
                frozen = creds.get_frozen_credentials() if creds is not None else None
            except ProfileNotFound:
                frozen = None
            except BotoCoreError as exc:
                raise UserError(f"could not read AWS profile {storage.profile!r}: {exc}") from None
            if frozen is None or not frozen.access_key or not frozen.secret_key:
                raise UserError(
                    f"storage uses credentials: profile {storage.profile!r}, but that profile was not found or has no "
                    "keys in ~/.aws/credentials or ~/.aws/config. Create it (aws configure --profile "
                    f"{storage.profile}) or fix storage.profile."
                )
            result["AWS_ACCESS_KEY_ID"], result["AWS_SECRET_ACCESS_KEY"] = frozen.access_key, frozen.secret_key
            if frozen.token:
                result["AWS_SESSION_TOKEN"] = frozen.token
    kind = config.box.kind
    if kind in RENTED_KINDS:
        env_name = config.box.runpod.api_key_env if kind == "runpod" else config.box.vastai.api_key_env
        value = _provider_key(kind, env_name, env)
        if value:
            result[env_name] = value
        elif config.agent.shutdown_when_done:
            raise UserError(
                f"agent.shutdown_when_done needs the {kind} API key on the box to release it, but {env_name} is not "
                f"set (nor ~/.config/llm-box/{'runpod' if kind == 'runpod' else 'vast'}_key). Export {env_name}, or set "
                "agent.shutdown_when_done: false."
            )
    return result


def _hub_token_file(env: Mapping[str, str]) -> Path:
    hf_home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(os.path.expanduser(env.get("HF_TOKEN_PATH") or os.path.join(hf_home, "token")))


def _hub_env(env: Mapping[str, str]) -> dict[str, str]:
    """The Hugging Face Hub's settings the box's tokenizer and data steps need, as documented at
    https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables (read
    2026-12-03): HF_TOKEN authenticates (gated datasets; anonymous requests are rate-limited) and
    overrides the token stored by `hf auth login` in $HF_TOKEN_PATH or $HF_HOME/token, which is read
    when HF_TOKEN is not set; HF_ENDPOINT points the client at a mirror. HF_HUB_OFFLINE and
    HF_DATASETS_OFFLINE are not handed over: they say what this machine can reach, not the box."""
    result = {"HF_ENDPOINT": env["HF_ENDPOINT"]} if env.get("HF_ENDPOINT") else {}
    token = (env.get("HF_TOKEN") or "").strip()
    if not token:
        try:
            token = _hub_token_file(env).read_text().strip()
        except OSError:
            token = ""
    if token:
        result["HF_TOKEN"] = token
    return result


def _wandb_env(env: Mapping[str, str]) -> dict[str, str]:
    """W&B's environment, as documented at https://docs.wandb.ai/guides/track/environment-variables/
    (read 2026-11-25): WANDB_API_KEY "must be set if wandb login hasn't been run on the remote
    machine"; WANDB_MODE=offline keeps runs local (synced later with `wandb sync`), so needs no key."""
    result = {k: env[k] for k in ("WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL") if env.get(k)}
    if env.get("WANDB_API_KEY"):
        result["WANDB_API_KEY"] = env["WANDB_API_KEY"]
    elif env.get("WANDB_MODE") not in ("offline", "disabled"):
        raise UserError(
            "train.trackers includes wandb, but WANDB_API_KEY is not set in this shell. Export it (an API key from "
            "your W&B User Settings, https://wandb.ai/settings) and run again; it reaches the box as a mode-600 file, never on a command line "
            "or in a config. Or set WANDB_MODE=offline to keep the W&B run files in the run folder, or drop wandb "
            "from train.trackers."
        )
    return result


def render_env_file(env: Mapping[str, str]) -> str:
    """``export KEY='value'`` lines, shell-quoted, for ``source`` in the box's tmux session."""
    lines = ["# written by launcher run; mode 600; never copy this file"]
    for key, value in sorted(env.items()):
        if not _NAME.match(key):
            raise UserError(f"{key!r} is not a valid environment variable name.")
        if "\n" in value or "\0" in value:
            raise UserError(f"the value of {key} contains a newline or NUL; check where it comes from.")
        lines.append(f"export {key}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, env: Mapping[str, str]) -> Path:
    """Write the rendered file at ``path`` with mode 600 (created so, never wider)."""
    path = Path(os.path.expanduser(str(path)))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(path, render_env_file(env), mode=0o600)
    return path
