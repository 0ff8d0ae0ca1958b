"""Store throughput: upload and download of a checkpoint the size of the 100M model's model +
optimizer (1.2 GB) to a local S3 server (rclone serve s3) and a file:// store, beside the disk's
own write and read speed measured in the same run. Not a test: it prints a table.

    python bench/store_bench.py [--size_mb 1200] [--rounds 1] [--workdir /tmp]

Rows:
- disk write / disk read: the checkpoint's bytes written with fsync / read back after dropping
  them from the page cache (posix_fadvise DONTNEED), in the same folder the stores use.
- boto3 upload_file (raw): the same files through boto3 alone, same transfer settings: what the
  local server and the client cost without the store's code.
- s3 upload (verified): ``Store.upload_checkpoint`` as the agent runs it: files, a read-back
  sha256 of every stored object, then the manifest. ``s3 upload (no verify)`` shows what the
  read-back costs. ``s3 download``: ``download_checkpoint`` (every sha256 checked).
- the same for file://.
The ratio column is the time over the disk's time for the same bytes (write for uploads and
downloads: both end in a disk write; the target is <= 2.0).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher.config import StorageConfig  # noqa: E402
from launcher.store.file import FileStore  # noqa: E402
from launcher.store.s3 import S3Store  # noqa: E402
from tests.harness.s3server import RcloneS3Server  # noqa: E402
from runcontract.manifest import MANIFEST_NAME, write_manifest  # noqa: E402
from runcontract.run_folder import CHECKPOINTS_DIR, step_dir_name  # noqa: E402

_MB = 1024 * 1024


def drop_cache(folder: Path) -> None:
    """Evict the folder's files from the page cache, so reads come from the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def write_checkpoint(folder: Path, size_mb: int) -> float:
    """model.safetensors (1/3) + optimizer.pt (2/3) of random bytes, fsynced; returns seconds."""
    folder.mkdir(parents=True)
    block = os.urandom(8 * _MB)
    started = time.perf_counter()
    for name, share in (("model.safetensors", 1 / 3), ("optimizer.pt", 2 / 3)):
        left = int(size_mb * share) * _MB
        with open(folder / name, "wb") as f:
            while left > 0:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
            f.flush()
            os.fsync(f.fileno())
    took = time.perf_counter() - started
    write_manifest(folder, meta={"step": 1000})
    return took


def read_folder(folder: Path) -> float:
    drop_cache(folder)
    started = time.perf_counter()
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(8 * _MB):
                    pass
    return time.perf_counter() - started


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size_mb", type=int, default=1200, help="Checkpoint size in MiB (default 1200: the 100M model + AdamW state).")
    parser.add_argument("--rounds", type=int, default=1, help="Repeat each measurement; the median is shown.")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="Where the checkpoint, the stores and the downloads go.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.workdir))
    server = RcloneS3Server(work / "s3")
    try:
        endpoint = server.start()
        bucket = "bench"
        endpoint.client().create_bucket(Bucket=bucket)
        storage = StorageConfig(url=f"s3://{bucket}/runs", endpoint_url=endpoint.endpoint_url, region=endpoint.region, addressing_style="path")
        s3 = S3Store(storage, env=endpoint.env())
        files = FileStore(work / "filestore")
        rows: dict[str, list[float]] = {}
        nbytes = 0
        for round_ in range(args.rounds):
            ckpt = work / f"run{round_}" / CHECKPOINTS_DIR / step_dir_name(1000)
            rows.setdefault("disk write (fsync)", []).append(write_checkpoint(ckpt, args.size_mb))
            nbytes = sum(p.stat().st_size for p in ckpt.iterdir() if p.name != MANIFEST_NAME)
            rows.setdefault("disk read (cold)", []).append(read_folder(ckpt))
            def raw_boto3() -> None:  # the client alone: what the server and boto3 cost, without llm-box's code
                for path in sorted(ckpt.iterdir()):
                    s3.client.upload_file(str(path), bucket, f"raw{round_}/{path.name}", Config=s3.upload_config)

            drop_cache(ckpt)
            rows.setdefault("boto3 upload_file (raw)", []).append(timed(raw_boto3))
            for label, store in (("s3", s3), ("file", files)):
                run = f"r{round_}"
                drop_cache(ckpt)
                rows.setdefault(f"{label} upload (no verify)", []).append(timed(lambda: store.upload_checkpoint(run + "-nv", ckpt, verify=False)))
                drop_cache(ckpt)
                rows.setdefault(f"{label} upload (verified)", []).append(timed(lambda: store.upload_checkpoint(run, ckpt)))
                out = work / f"down-{label}-{round_}"
                rows.setdefault(f"{label} download (verified)", []).append(timed(lambda: store.download_checkpoint(run, step_dir_name(1000), out)))
                shutil.rmtree(out)
            shutil.rmtree(ckpt.parent.parent)
        disk = statistics.median(rows["disk write (fsync)"])
        print(f"\nstore benchmark: {nbytes / _MB:.0f} MiB checkpoint (2 files), rclone serve s3 on 127.0.0.1, median of {args.rounds}")
        print(f"{'operation':<26} {'seconds':>8} {'MiB/s':>8} {'x disk':>7}")
        for name, values in rows.items():
            t = statistics.median(values)
            print(f"{name:<26} {t:>8.2f} {nbytes / _MB / t:>8.0f} {t / disk:>7.2f}")
        worst = max(statistics.median(v) for k, v in rows.items() if not k.startswith("disk")) / disk
        print(f"\nslowest store operation: {worst:.2f}x the disk's write time (target <= 2.0): {'OK' if worst <= 2.0 else 'MISSED'}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
