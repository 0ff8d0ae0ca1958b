"""The store a ``StorageConfig`` names (``file://DIR`` or ``s3://bucket/prefix``). The one module
that knows both kinds; neither kind imports it back.
"""
from __future__ import annotations

from pathlib import Path

from launcher.store.base import Store
from launcher.store.file import FileStore
from launcher.store.s3 import S3Store
from runcontract.errors import UserError


def open_store(storage, project_root: Path) -> Store:
    """The store a ``StorageConfig`` names; file:// DIR is relative to ``project_root``."""
    url = storage.url
    if url.startswith("file://"):
        path = Path(url[len("file://"):] or ".")
        if not path.is_absolute():
            path = Path(project_root) / path
        return FileStore(path)
    if url.startswith("s3://"):
        return S3Store(storage)
    raise UserError(f"storage url {url!r} must start with file:// or s3://")

