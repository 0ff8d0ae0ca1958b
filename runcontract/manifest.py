"""Manifests: the last file written into a checkpoint folder, listing every other file's size
and sha256. A folder without a manifest that matches its files is incomplete and is never
resumed from, uploaded as ``latest`` or fetched.

Used by the trainer (writing checkpoints), the store (uploading, ``latest``) and
``launcher fetch-checkpoint`` (verifying downloads). No torch here.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from runcontract.atomic import atomic_write_json
from runcontract.errors import UserError

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class ManifestError(UserError):
    """A checkpoint folder is incomplete or its files do not match its manifest."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    """``files`` maps a path relative to the folder (posix separators) to its size and sha256."""

    files: dict[str, dict] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # e.g. {"step": 500, "tokens_seen": ...}
    created: float = 0.0

    def to_json(self) -> dict:
        return {"files": self.files, "meta": self.meta, "created": self.created, "version": 1}

    @classmethod
    def from_json(cls, obj: dict) -> "Manifest":
        return cls(files=dict(obj["files"]), meta=dict(obj.get("meta", {})), created=float(obj.get("created", 0.0)))

    @property
    def total_bytes(self) -> int:
        return sum(int(entry["size"]) for entry in self.files.values())


def _list_files(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME and not path.name.endswith(".tmp"):
            names.append(path.relative_to(folder).as_posix())
    return names


def write_manifest(folder: str | os.PathLike, meta: dict | None = None) -> Manifest:
    """Hash every file in ``folder`` and write ``manifest.json`` last, atomically."""
    folder = Path(folder)
    manifest = Manifest(meta=dict(meta or {}), created=time.time())
    for name in _list_files(folder):
        path = folder / name
        manifest.files[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    atomic_write_json(folder / MANIFEST_NAME, manifest.to_json())
    return manifest


def read_manifest(folder: str | os.PathLike) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{folder} has no {MANIFEST_NAME}: it is an incomplete checkpoint (its writer was "
            "interrupted). Use an earlier checkpoint, or delete this folder."
        )
    try:
        return Manifest.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path} is not a valid manifest ({exc}); delete the folder or use an earlier checkpoint.") from None


def verify_manifest(folder: str | os.PathLike, check_hashes: bool = True) -> Manifest:
    """Return the manifest if every listed file exists with its size (and sha256); else raise."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ManifestError(f"{folder}: {name} is listed in the manifest but missing; the checkpoint is incomplete.")
        size = path.stat().st_size
        if size != int(entry["size"]):
            raise ManifestError(f"{folder}: {name} is {size} bytes, the manifest says {entry['size']}; the checkpoint is corrupt.")
        if check_hashes and sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{folder}: {name} does not match its sha256 in the manifest; the checkpoint is corrupt.")
    return manifest


def is_complete(folder: str | os.PathLike, check_hashes: bool = False) -> bool:
    try:
        verify_manifest(folder, check_hashes=check_hashes)
        return True
    except ManifestError:
        return False
