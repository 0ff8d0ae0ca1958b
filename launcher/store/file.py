"""``file://DIR``: the store as a plain folder (the embedded default).

Every object is written to a temporary name in its folder and renamed into place, so a reader
never sees half of one. Append-only logs are extended in place with their new bytes only.
``LLMBOX_UPLOAD_MAX_BANDWIDTH`` / ``LLMBOX_DOWNLOAD_MAX_BANDWIDTH`` (bytes/s) cap copy speed, like the
S3 store.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from launcher.store.base import ObjectInfo, Store, StoreError, TransferProgress, check_key
from runcontract.atomic import atomic_writer
from runcontract.manifest import sha256_file

_CHUNK = 1 << 20


def max_bandwidth(direction: str = "upload") -> Optional[int]:
    """Transfer cap in bytes/s from ``LLMBOX_UPLOAD_MAX_BANDWIDTH`` / ``LLMBOX_DOWNLOAD_MAX_BANDWIDTH``
    (unset or 0: none)."""
    name = f"LLMBOX_{direction.upper()}_MAX_BANDWIDTH"
    raw = os.environ.get(name, "").strip()
    try:
        value = int(float(raw)) if raw else 0
    except ValueError:
        raise StoreError(f"{name}={raw!r} is not a number of bytes per second.") from None
    return value or None


def _is_temp(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".partial"))


class FileStore(Store):
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"

    def describe(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _errors(self, action: str, key: str):
        """A full disk or a folder we may not write is a StoreError paragraph, not a traceback."""
        try:
            yield
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise
        except OSError as exc:
            raise StoreError(f"{action} {self.describe(key)} failed: {exc.strerror or exc}. Check that the store folder "
                             f"{self.root} is writable and its disk has room (storage.url).") from None

    def _copy(self, src: Path, dest: Path, progress: Optional[TransferProgress], direction: str) -> None:
        limit = max_bandwidth(direction)
        started, sent = time.monotonic(), 0
        with open(src, "rb") as fin, atomic_writer(dest) as fout:
            while chunk := fin.read(_CHUNK):
                fout.write(chunk)
                sent += len(chunk)
                if progress:
                    progress.advance(len(chunk))
                if limit:
                    ahead = sent / limit - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

    def put_file(self, local: Path, key: str, *, sha256: Optional[str] = None, progress: Optional[TransferProgress] = None) -> None:
        with self._errors("upload to", key):
            self._copy(Path(local), self._path(key), progress, "upload")

    def get_file(self, key: str, local: Path, *, progress: Optional[TransferProgress] = None) -> None:
        src = self._path(key)
        if not src.is_file():
            raise StoreError(f"{src} is not in the store.")
        self._copy(src, Path(local), progress, "download")

    def read_bytes(self, key: str) -> Optional[bytes]:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._errors("write of", key), atomic_writer(self._path(key)) as f:
            f.write(data)

    def sync_bytes(self, key: str, data: bytes, append: bool = False) -> int:
        path = self._path(key)
        if append and path.is_file():
            size = path.stat().st_size
            if 0 < size <= len(data):
                tail = min(size, 4096)
                with open(path, "rb") as f:
                    f.seek(size - tail)
                    same = f.read(tail) == data[size - tail:size]
                if same:  # the stored copy is a prefix: add the new bytes only
                    if size < len(data):
                        with open(path, "ab") as f:
                            f.write(data[size:])
                    return len(data) - size
        self.write_bytes(key, data)
        return len(data)

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        result = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not _is_temp(d)]
            for name in filenames:
                if _is_temp(name):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        st = path.stat()
                        result.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return sorted(result, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def stat(self, key: str) -> Optional[ObjectInfo]:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def object_sha256(self, key: str) -> Optional[str]:
        return self.hash_object(key)

    def hash_object(self, key: str) -> Optional[str]:
        path = self._path(key)
        return sha256_file(path) if path.is_file() else None

    def abort_stale_uploads(self, prefix: str) -> list[str]:
        """Temporary files of copies that were cut off (atomic_writer's ``.<name>.*.tmp``)."""
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        removed = []
        if base.is_dir():
            for path in base.rglob(".*.tmp"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(key)
        return sorted(removed)

    def remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)
