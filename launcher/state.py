"""Local state: which box and which run, in ``.launcher/state.json`` (written atomically).

    {"config_path": "configs/run.yaml",
     "box": {"kind": "ssh", "host": ..., "port": 22, "user": ..., "identity_file": ...,
             "jump_host": null, "workdir": "~/llm-box", "python": "python3", "connect_timeout": 15},
     "instance": null | {...provider Instance.to_dict()...},
     "run": null | {"name": "quickstart", "tmux_session": "llmbox-quickstart", "started_at": ...,
                    "multiplexer": "tmux"}}

Commands other than up/run take the box and the config path from here. No secrets here.
A recorded instance carries its provider and the API it was rented through (``provider``,
``api_base``, ``name``): every command refuses a config that names another box kind or API
(``launcher.providers.record_mismatch``), and teardown goes through the record. A create
whose answer was lost is recorded before any waiting as ``{"id": null, "state":
"unconfirmed", "name", "provider", "api_base", "created_at", ...}`` until a look by its name
finds it (``launcher.providers.reconcile_unconfirmed``). A ``box.kind: plan`` config
(candidates) is resolved to the recorded box, never refused for its kind. ``plan`` holds what
the plan promised for the rented offer (tokens/s, its source, $ for the run), which the canary
compares with the benchmark.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from runcontract.atomic import atomic_write_json
from runcontract.errors import UserError

STATE_DIR = ".launcher"
STATE_NAME = "state.json"
VERSION = 1


def state_dir(project_root: Path) -> Path:
    return Path(project_root) / STATE_DIR


def state_path(project_root: Path) -> Path:
    return state_dir(project_root) / STATE_NAME


def empty_state() -> dict[str, Any]:
    return {"version": VERSION, "config_path": None, "box": None, "instance": None, "run": None}


def load_state(project_root: Path) -> dict[str, Any]:
    path = state_path(project_root)
    if not path.is_file():
        return empty_state()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"the launcher's state file {path} is unreadable ({exc}); if no box is running, delete it and run "
            f"`launcher up` again (a rented box may still be billing: check your provider's console)."
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"the launcher's state file {path} is not a JSON object; delete it and run `launcher up`.")
    return {**empty_state(), **data}


def save_state(project_root: Path, state: dict[str, Any]) -> None:
    atomic_write_json(state_path(project_root), {**state, "version": VERSION})


def update_state(project_root: Path, **changes: Any) -> dict[str, Any]:
    state = load_state(project_root)
    state.update(changes)
    save_state(project_root, state)
    return state


def clear_state(project_root: Path) -> None:
    """Forget the box and the run (the known_hosts file and the local store are kept)."""
    save_state(project_root, empty_state())


def load_command_context(project_root: Path, config_opt: Optional[str], overrides=(), teardown: bool = False):
    """(config, config_path, state) for a command: --config, else the recorded one, else the default.

    A config that names another box kind or API than the recorded instance is refused.
    """
    from launcher.config import load_launcher_config

    state = load_state(project_root)
    config_path = config_opt or state.get("config_path")
    config = load_launcher_config(config_path, overrides)
    check_config_matches_record(config, config_path, state, teardown)
    return resolved_config(config, state), config_path, state


def resolved_config(config, state: dict):
    """A ``box.kind: plan`` config as the config of the box `launcher up` chose (launcher/plan/candidates.py)."""
    from launcher.plan.candidates import resolve_for_record

    return resolve_for_record(config, state.get("instance"))


def check_config_matches_record(config, config_path: Optional[str], state: dict, teardown: bool = False) -> None:
    """UserError when the config names another box kind or API than the recorded instance."""
    from launcher.providers import record_mismatch

    label = f"the config {config_path}" if config_path else "the default config"
    problem = record_mismatch(config, state.get("instance"), label, teardown=teardown)
    if problem:
        raise UserError(problem)


def run_name(config, state: dict) -> str:
    """The run a command acts on: the one `launcher run` started last, else the config's."""
    run = state.get("run") or {}
    return run.get("name") or config.run.name


def box_for_command(config, state: dict, project_root: Path):
    """The recorded box (from `launcher up`/`run`), else the one the config names."""
    from launcher.box.factory import box_spec, open_box

    spec = state.get("box") or box_spec(config, project_root, state.get("instance"))
    return open_box(spec, project_root)
