"""Where runs live after the box is gone: one interface, two kinds.

    file://DIR              a folder (the embedded default; DIR is relative to the project)
    s3://bucket/prefix      any S3-compatible endpoint through boto3 (see s3.py)

Keys passed to a ``Store`` are relative to its root: ``<run>/<path in the run folder>``, e.g.
``quickstart/metrics.jsonl`` or ``quickstart/checkpoints/step_000500/model.safetensors``.
The object's full name is ``<prefix>/<key>`` (S3) or ``DIR/<key>`` (file).

Checkpoints live under ``<run>/checkpoints/step_NNNNNN/`` and ``<run>/final/``. A checkpoint is
uploaded files first and its ``manifest.json`` (sizes, sha256) last, so a half-uploaded one has
no manifest. ``latest_checkpoint`` is the newest one whose manifest exists and whose listed
files are all in the store with the listed sizes; downloads verify every sha256, and
``download_newest_verified`` falls back to older complete checkpoints when one does not.
An upload takes the manifest once, at its start, sends exactly what it lists, checks what the
store holds (``verify_object``) and re-sends what differs before the manifest goes up.
Retention (which checkpoints a run keeps) lives in retention.py; the store for a config, in factory.py.

No torch here: the laptop and the on-box agent both use this module.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from runcontract.errors import UserError
from runcontract.manifest import MANIFEST_NAME, Manifest, sha256_file, verify_manifest
from runcontract.run_folder import CHECKPOINTS_DIR, FINAL_DIR, checkpoint_rel, recency, step_of_dir

PREPARED = "_prepared"  # <run>/_prepared/tokenizer, <run>/_prepared/data
_CHANGED_RETRIES = 3  # a checkpoint folder rewritten during its upload is uploaded again, whole, this often


class StoreError(UserError):
    """The store refused or could not be reached; the message says which and how to fix it."""


class ChecksumError(StoreError):
    """A downloaded object does not match the sha256 in its manifest."""


class FolderChanged(StoreError):
    """The local folder was rewritten while it was uploaded (its manifest changed)."""


@dataclass
class ObjectInfo:
    key: str  # relative to the store's root
    size: int
    mtime: float  # seconds since the epoch
    sha256: Optional[str] = None  # when the store keeps it (S3 object metadata)


@dataclass
class CheckpointInfo:
    run: str
    name: str  # "step_000500" or "final"
    step: int  # from the manifest's meta (the folder name when there is no manifest)
    size_bytes: int
    created: float  # manifest's creation time, else the newest object's mtime
    complete: bool  # manifest present and every listed file stored with its size
    val_loss: Optional[float] = None  # from the manifest's meta, when the trainer recorded one
    unreadable: Optional[str] = None  # why its stored manifest cannot be read (None: read, or not there yet)

    @property
    def rel(self) -> str:
        return checkpoint_rel(self.name)


def check_key(key: str) -> str:
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"bad store key {key!r}: must be a relative path like run/file.txt")
    return key


# ----------------------------------------------------------------------------- progress
class TransferProgress:
    """Byte counts of one transfer. The base class shows nothing; ``RichProgress`` draws a bar."""

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class RichProgress(TransferProgress):
    """A rich progress bar with bytes, speed and time left (on stderr; thread-safe); off a terminal,
    a line about every tenth instead (runcontract/progress.py)."""

    def __init__(self, transient: bool = False):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        from runcontract.progress import progress_as_lines

        console = Console(stderr=True)
        self._lines = progress_as_lines(console.file, console.is_terminal)
        self._counter = None
        self._lock = threading.Lock()
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=console, transient=transient,
        )
        self._task = None

    def start(self, description: str, total: int) -> None:
        if self._lines:
            from runcontract.progress import TenthLines

            self._counter = TenthLines(description, max(total, 1), lambda line: print(line, file=sys.stderr, flush=True), unit="B")
            return
        self._progress.start()
        self._task = self._progress.add_task(description, total=max(total, 1))

    def advance(self, nbytes: int) -> None:
        if self._counter is not None:
            with self._lock:  # parts arrive from several threads
                self._counter.update(nbytes)
        elif self._task is not None:
            self._progress.update(self._task, advance=nbytes)

    def finish(self) -> None:
        if self._counter is not None:
            self._counter = None
            return
        self._progress.stop()
        self._task = None


# ----------------------------------------------------------------------------- the interface
class Store(ABC):
    """Objects under one root. Subclasses implement the primitives; checkpoints are built on them."""

    url: str
    endpoint: Optional[str] = None  # the server, for messages (S3: storage.endpoint_url or "AWS S3"); None for a folder

    # -- primitives ------------------------------------------------------------
    @abstractmethod
    def put_file(self, local: Path, key: str, *, sha256: Optional[str] = None, progress: Optional[TransferProgress] = None) -> None:
        """Upload ``local`` as ``key`` (whole or not at all); ``sha256`` is kept with it when the store can."""

    @abstractmethod
    def get_file(self, key: str, local: Path, *, progress: Optional[TransferProgress] = None) -> None:
        """Download ``key`` to ``local``; raises StoreError when it is missing."""

    @abstractmethod
    def read_bytes(self, key: str) -> Optional[bytes]:
        """The object's bytes, or None when there is no such object."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a small object whole."""

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a plain string prefix), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; missing is fine."""

    @abstractmethod
    def stat(self, key: str) -> Optional[ObjectInfo]:
        """Size, mtime (and sha256 where kept) of one object, or None."""

    def object_sha256(self, key: str) -> Optional[str]:
        """The sha256 recorded for an uploaded object, or None when unknown (cheap: no bytes read)."""
        info = self.stat(key)
        return info.sha256 if info else None

    @abstractmethod
    def hash_object(self, key: str) -> Optional[str]:
        """The sha256 of the object's stored bytes (read back), or None when there is no such object."""

    def verify_object(self, key: str, local: Path, sha256: str) -> bool:
        """Whether the stored bytes of ``key`` hash to ``sha256`` (``local`` is the file uploaded
        as it; stores with their own checksum use it to avoid reading the object back)."""
        return self.hash_object(key) == sha256

    def will_verify(self, local: Path) -> None:
        """``local`` is about to be uploaded and then verified (S3: hash it beside its upload)."""

    def abort_stale_uploads(self, prefix: str) -> list[str]:
        """Abort unfinished uploads under ``prefix`` (S3 multipart uploads, half-copied files);
        returns their keys. Call it only when no upload of this prefix is running."""
        return []

    def describe(self, key: str = "") -> str:
        """Where ``key`` is, for messages: ``s3://bucket/prefix/key`` or ``/path/key``."""
        return f"{self.url.rstrip('/')}/{key}" if key else self.url

    # -- small files -----------------------------------------------------------
    def read_text(self, key: str) -> Optional[str]:
        data = self.read_bytes(key)
        return None if data is None else data.decode("utf-8", errors="replace")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def sync_bytes(self, key: str, data: bytes, append: bool = False) -> int:
        """Make ``key`` hold ``data``; returns the bytes sent. Stores that can append (file://)
        send only the new tail of an append-only file when ``append`` is set."""
        self.write_bytes(key, data)
        return len(data)

    # -- trees with manifests --------------------------------------------------
    def read_manifest(self, prefix: str) -> Optional[Manifest]:
        """The manifest stored at ``<prefix>/manifest.json`` or None (missing or unreadable)."""
        return self.read_manifest_or_why(prefix)[0]

    def read_manifest_or_why(self, prefix: str) -> tuple[Optional[Manifest], Optional[str]]:
        """(the manifest, None), (None, None) when there is none, or (None, why) when the object is
        there but unreadable (truncated, not JSON, not a manifest): missing may still come, unreadable will not."""
        text = self.read_text(f"{prefix}/{MANIFEST_NAME}")
        if text is None:
            return None, None
        try:
            return Manifest.from_json(json.loads(text)), None
        except ValueError as exc:
            return None, f"not valid JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        except (KeyError, TypeError) as exc:
            return None, f"not a manifest: {type(exc).__name__} {exc}"

    def tree_complete(self, prefix: str, manifest: Manifest, objects: Optional[dict[str, ObjectInfo]] = None) -> bool:
        """Every file the manifest lists is stored under ``prefix`` with its size."""
        if objects is None:
            objects = {o.key: o for o in self.list(prefix + "/")}
        for name, entry in manifest.files.items():
            info = objects.get(f"{prefix}/{name}")
            if info is None or info.size != int(entry["size"]):
                return False
        return True

    def upload_tree(
        self,
        local_dir: Path,
        prefix: str,
        manifest: Manifest,
        *,
        manifest_bytes: Optional[bytes] = None,
        progress: Optional[TransferProgress] = None,
        verify: bool = True,
        unchanged: Optional[Callable[[], bool]] = None,
    ) -> int:
        """Upload exactly the files ``manifest`` lists, then the manifest. Returns bytes sent.

        A file already stored with the same size and recorded sha256 is not sent again, so an
        interrupted upload is finished by the next call. With ``verify`` every stored object is
        then checked (``verify_object``: the store's own checksum where it has one, else read
        back and hashed): one whose bytes do not match is uploaded again, and the manifest, which makes the folder complete, is written only when all
        match. If a different manifest is stored under ``prefix`` it is deleted first: the
        folder is not complete while it is replaced. ``unchanged()`` is asked before the
        manifest goes up; False raises FolderChanged (the caller starts over with the new
        manifest). ``manifest_bytes``: the manifest exactly as read at the start.
        """
        local_dir = Path(local_dir)
        progress = progress or TransferProgress()
        manifest_key = f"{prefix}/{MANIFEST_NAME}"
        objects = {o.key: o for o in self.list(prefix + "/")}
        stored = self.read_manifest(prefix) if manifest_key in objects else None
        same = stored is not None and stored.files == manifest.files and self.tree_complete(prefix, manifest, objects)
        if same and not verify:
            return 0
        todo = []
        if not same:
            if manifest_key in objects:
                self.delete(manifest_key)
            for name, entry in sorted(manifest.files.items()):
                key = f"{prefix}/{name}"
                info = objects.get(key)
                if info is not None and info.size == int(entry["size"]) and self.object_sha256(key) == entry["sha256"]:
                    continue
                todo.append(name)
        sent = self._send(local_dir, prefix, manifest, todo, progress, unchanged, verify)
        if verify:
            bad = [name for name, entry in sorted(manifest.files.items())
                   if not self.verify_object(f"{prefix}/{name}", local_dir / name, entry["sha256"])]
            if bad:
                if same:  # the stored copy was "complete": it is not while it is repaired
                    self.delete(manifest_key)
                    same = False
                sent += self._send(local_dir, prefix, manifest, bad, progress, unchanged, verify)
                still = [n for n in bad if self.hash_object(f"{prefix}/{n}") != manifest.files[n]["sha256"]]  # the bytes decide
                if still:
                    raise StoreError(
                        f"{self.describe(prefix)}: {', '.join(still)} read back with different bytes than were uploaded, twice. "
                        "The store is corrupting data or something else writes there; the checkpoint is not marked complete. "
                        "Check the bucket and endpoint, then run the upload again."
                    )
        if same:
            return sent
        if unchanged is not None and not unchanged():
            raise FolderChanged(f"{local_dir} changed while it was uploaded")
        # last: the manifest makes the folder complete
        data = manifest_bytes if manifest_bytes is not None else (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()
        self.write_bytes(manifest_key, data)
        return sent

    def _send(self, local_dir: Path, prefix: str, manifest: Manifest, names: list[str], progress: TransferProgress,
              unchanged: Optional[Callable[[], bool]], verify: bool) -> int:
        """Upload ``names`` (listed in ``manifest``) from ``local_dir``; sizes are checked first."""
        for name in names:
            local, size = local_dir / name, int(manifest.files[name]["size"])
            actual = local.stat().st_size if local.is_file() else -1
            if actual != size:
                if unchanged is not None and not unchanged():
                    raise FolderChanged(f"{local_dir} changed while it was uploaded")
                raise StoreError(f"{local} is {actual} bytes but its manifest says {size}: the local folder changed; not uploading {prefix}.")
        sent = 0
        progress.start(f"upload {prefix}", sum(int(manifest.files[n]["size"]) for n in names))
        try:
            for name in names:
                entry = manifest.files[name]
                if verify:
                    self.will_verify(local_dir / name)
                self.put_file(local_dir / name, f"{prefix}/{name}", sha256=entry["sha256"], progress=progress)
                sent += int(entry["size"])
        finally:
            progress.finish()
        return sent

    def download_tree(
        self,
        prefix: str,
        out_dir: Path,
        *,
        progress: Optional[TransferProgress] = None,
        keep_manifest: bool = True,
        merge: bool = False,
    ) -> Manifest:
        """Download the tree under ``prefix`` into ``out_dir``, verifying every sha256.

        Files go to a temporary sibling ``.<name>.partial`` that is kept when interrupted, so a
        second call downloads only what is missing or wrong. At the end the temporary folder is
        renamed to ``out_dir`` (``merge``: its files are moved into an existing ``out_dir``).
        A file whose sha256 does not match is deleted and the download refused (ChecksumError).
        """
        manifest = self.read_manifest(prefix)
        if manifest is None:
            raise StoreError(f"{self.describe(prefix)} has no readable {MANIFEST_NAME}: it is incomplete or not there.")
        out_dir = Path(out_dir)
        if out_dir.exists() and not merge:
            if _matches(out_dir, manifest):
                return manifest
            raise UserError(f"{out_dir} already exists and is not this checkpoint; remove it or choose another --out.")
        progress = progress or TransferProgress()
        tmp = out_dir.parent / f".{out_dir.name}.partial"
        tmp.mkdir(parents=True, exist_ok=True)
        wanted = set(manifest.files)
        for path in sorted(tmp.rglob("*"), reverse=True):  # leftovers of another tree
            rel = path.relative_to(tmp).as_posix()
            if path.is_file() and rel not in wanted:
                path.unlink()
        progress.start(f"download {prefix}", manifest.total_bytes)
        try:
            for name, entry in sorted(manifest.files.items()):
                target = tmp / name
                if target.is_file() and target.stat().st_size == int(entry["size"]) and sha256_file(target) == entry["sha256"]:
                    progress.advance(int(entry["size"]))
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                self.get_file(f"{prefix}/{name}", part, progress=progress)
                size, digest = part.stat().st_size, sha256_file(part)
                if size != int(entry["size"]) or digest != entry["sha256"]:
                    part.unlink()
                    raise ChecksumError(
                        f"{self.describe(prefix + '/' + name)} does not match its manifest (got {size} bytes, sha256 "
                        f"{digest[:12]}..., expected {entry['size']} bytes, {entry['sha256'][:12]}...): the stored copy "
                        "is corrupt; refusing it. Fetch an earlier checkpoint (--list shows them)."
                    )
                os.replace(part, target)
        finally:
            progress.finish()
        if merge:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in sorted(manifest.files, key=lambda n: n.endswith("_meta.json")):  # meta files last
                dest = out_dir / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / name, dest)
            shutil.rmtree(tmp, ignore_errors=True)
            return manifest
        if keep_manifest:
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
            verify_manifest(tmp, check_hashes=False)
        os.replace(tmp, out_dir)
        return manifest

    # -- checkpoints -----------------------------------------------------------
    def checkpoints(self, run: str) -> list[CheckpointInfo]:
        """Every checkpoint folder stored for ``run`` (complete or not), oldest step first."""
        objects = self.list(f"{run}/{CHECKPOINTS_DIR}/") + self.list(f"{run}/{FINAL_DIR}/")
        folders: dict[str, dict[str, ObjectInfo]] = {}
        for info in objects:
            parts = info.key[len(run) + 1:].split("/")
            if parts[0] == FINAL_DIR and len(parts) >= 2:
                name = FINAL_DIR
            elif parts[0] == CHECKPOINTS_DIR and len(parts) >= 3 and step_of_dir(parts[1]) is not None:
                name = parts[1]
            else:
                continue
            folders.setdefault(name, {})[info.key] = info
        result = []
        for name, objs in folders.items():
            prefix = f"{run}/{checkpoint_rel(name)}"
            step = step_of_dir(name)
            step = -1 if step is None else step
            manifest, unreadable = self.read_manifest_or_why(prefix) if f"{prefix}/{MANIFEST_NAME}" in objs else (None, None)
            if manifest is not None:
                step = int(manifest.meta.get("step", step))
                val_loss = manifest.meta.get("val_loss")
                result.append(CheckpointInfo(run, name, step, manifest.total_bytes, manifest.created or max(o.mtime for o in objs.values()),
                                             self.tree_complete(prefix, manifest, objs),
                                             float(val_loss) if isinstance(val_loss, (int, float)) else None))
            else:
                result.append(CheckpointInfo(run, name, step, sum(o.size for o in objs.values()), max(o.mtime for o in objs.values()), False,
                                             unreadable=unreadable))
        result.sort(key=lambda c: (*recency(c.step, c.name), c.created))
        return result

    def latest_checkpoint(self, run: str, include_final: bool = True) -> Optional[CheckpointInfo]:
        """The newest complete checkpoint (highest step; ``final`` wins a tie), or None."""
        complete = [c for c in self.checkpoints(run) if c.complete and (include_final or c.name != FINAL_DIR)]
        return complete[-1] if complete else None

    def upload_checkpoint(self, run: str, local_dir: Path, progress: Optional[TransferProgress] = None, verify: bool = True,
                          before_manifest: Optional[Callable[[], None]] = None) -> int:
        """Upload a local checkpoint folder (its manifest must be there): files first, manifest last.

        The manifest is read once, at the start, and exactly the files it lists are uploaded;
        the same bytes are stored as the manifest at the end. If the folder is rewritten
        meanwhile (its manifest.json changes), the upload starts over with the new manifest,
        as a whole. With ``verify`` the stored bytes are read back and hashed before the
        manifest marks the checkpoint complete (see ``upload_tree``). ``before_manifest`` runs
        right before the manifest goes up and may raise to keep the checkpoint incomplete (the
        agent's fencing check). Returns bytes sent.
        """
        local_dir = Path(local_dir)
        prefix = f"{run}/{checkpoint_rel(local_dir.name)}"
        manifest_path = local_dir / MANIFEST_NAME
        for _ in range(_CHANGED_RETRIES):
            verify_manifest(local_dir, check_hashes=False)
            snapshot = manifest_path.read_bytes()
            manifest = Manifest.from_json(json.loads(snapshot))

            def unchanged() -> bool:
                if before_manifest is not None:
                    before_manifest()
                try:
                    return manifest_path.read_bytes() == snapshot
                except FileNotFoundError:
                    return False

            try:
                return self.upload_tree(local_dir, prefix, manifest, manifest_bytes=snapshot, progress=progress,
                                               verify=verify, unchanged=unchanged)
            except FolderChanged:  # what was sent stays stored; the next pass skips what still matches
                if not manifest_path.is_file():
                    raise FileNotFoundError(manifest_path) from None  # deleted (pruned locally): nothing to upload
        raise StoreError(f"{local_dir} kept changing while it was uploaded ({_CHANGED_RETRIES} tries); "
                         "it is not stored as complete. Upload it again once the trainer has finished writing it.")

    def download_checkpoint(self, run: str, name: str, out_dir: Path, progress: Optional[TransferProgress] = None) -> Manifest:
        """Download checkpoint ``name`` of ``run`` into ``out_dir`` (verified; resumable; renamed at the end)."""
        return self.download_tree(f"{run}/{checkpoint_rel(name)}", Path(out_dir), progress=progress)

    def download_newest_verified(
        self,
        run: str,
        target: Callable[[CheckpointInfo], Path],
        *,
        include_final: bool = True,
        progress: Optional[TransferProgress] = None,
        on_skip: Callable[[CheckpointInfo, str], None] = lambda c, why: None,
        candidates: Optional[list[CheckpointInfo]] = None,
    ) -> Optional[tuple[CheckpointInfo, Path]]:
        """Download the newest complete checkpoint whose every file verifies, into ``target(c)``.

        A checkpoint that fails (a stored file's bytes do not match its sha256, or a file is
        gone) is reported through ``on_skip(c, why)``, its partial download is removed, and the
        next older one is tried. None when no complete checkpoint verifies.
        """
        if candidates is None:
            candidates = [c for c in self.checkpoints(run) if c.complete and (include_final or c.name != FINAL_DIR)]
        for ckpt in reversed(candidates):
            out = Path(target(ckpt))
            try:
                self.download_checkpoint(run, ckpt.name, out, progress=progress)
                return ckpt, out
            except StoreError as exc:
                shutil.rmtree(out.parent / f".{out.name}.partial", ignore_errors=True)
                on_skip(ckpt, str(exc))
        return None


def _matches(folder: Path, manifest: Manifest) -> bool:
    try:
        local = verify_manifest(folder, check_hashes=True)
    except UserError:
        return False
    return local.files == manifest.files



def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
