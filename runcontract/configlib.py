"""Loading YAML into typed config objects, with errors a person can act on.

Every config class derives from ``Config``: unknown keys are errors, every field has a
description, and validation failures become one ``ConfigError`` listing each wrong field with
the file, the key, the value given and what is allowed. ``--set section.key=value`` overrides
single keys before validation. No torch here (the launcher uses it too).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from runcontract.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base for all configs: strict keys, validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _allowed_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) config class at ``loc``, for 'unknown key' messages."""
    current: Any = cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def format_validation_error(error: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid {cls.__name__} ({error.error_count()} problem{'s' if error.error_count() > 1 else ''}):"]
    for item in error.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(cls, loc)) or "none"
            lines.append(f"  - unknown key '{key}'; allowed keys here: {allowed}")
            continue
        if item["type"] == "missing":
            lines.append(f"  - key '{key}' is required but missing")
            continue
        value = item.get("input")
        message = item["msg"]
        message = message[0].lower() + message[1:] if message else message
        message = message.replace("input should", "must").replace("value error, ", "")
        lines.append(f"  - key '{key}' = {value!r}: {message}")
    lines.append("Fix the file (or the --set override) and run again.")
    return "\n".join(lines)


def parse_overrides(overrides: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["train.lr=3e-4", "model.n_layers=2"]`` -> ``[(["train", "lr"], 0.0003), ...]``."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form section.key=value (for example --set train.lr=3e-4).")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(data: dict, overrides: Iterable[str], section: str, known_sections: Iterable[str] = ()) -> dict:
    """Apply the overrides whose first part is ``section`` to ``data`` (a copy is returned).

    An override naming a section that is neither ``section`` nor in ``known_sections`` is an error.
    """
    data = _deep_copy(data)
    known = {section, *known_sections}
    for path, value in parse_overrides(overrides):
        if path[0] not in known:
            raise ConfigError(f"override '{'.'.join(path)}' names section '{path[0]}'; allowed sections: {', '.join(sorted(known))}.")
        if path[0] != section:
            continue
        if len(path) < 2:
            raise ConfigError(f"override '{path[0]}' names a section, not a key: use {path[0]}.KEY=VALUE.")
        node = data
        for part in path[1:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path (configs live under configs/).")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values at the top level, not {type(data).__name__}.")
    return data


def validate(cls: type[C], data: dict, source: str = "<config>") -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, source)) from None


def load_config(
    cls: type[C],
    path: str | os.PathLike | None,
    overrides: Iterable[str] = (),
    section: str | None = None,
    known_sections: Iterable[str] = (),
) -> C:
    """Read ``path`` (or start from defaults when None), apply ``--set`` overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    if section is not None:
        data = apply_overrides(data, overrides, section, known_sections)
    source = str(path) if path is not None else f"<default {cls.__name__}>"
    return validate(cls, data, source)
