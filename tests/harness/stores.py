"""Stores for tests: a checkpoint folder as the trainer writes it, and S3 stores on each S3
implementation the suite runs (rclone serve s3, moto's server, the strict B2-like proxy)."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from launcher.config import StorageConfig
from launcher.store.s3 import S3Store
from runcontract.manifest import write_manifest
from tests.harness.s3server import S3Endpoint

S3_KINDS = ["rclone", "moto", "b2"]  # b2: the strict B2-like proxy in front of rclone


def make_checkpoint(root: Path, step: int, sizes=(300_000, 2_000), final: bool = False) -> Path:
    folder = root / ("final" if final else f"checkpoints/step_{step:06d}")
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        (folder / f"part{i}.bin").write_bytes(os.urandom(size))
    (folder / "sub").mkdir()
    (folder / "sub" / "state.json").write_text(json.dumps({"step": step}))
    write_manifest(folder, meta={"step": step})
    return folder


def s3_storage(s3_server, bucket: str, prefix: str = "team/runs") -> StorageConfig:
    return StorageConfig(url=f"s3://{bucket}/{prefix}", endpoint_url=s3_server.endpoint_url, region=s3_server.region, addressing_style="path")


def s3_endpoint_for(request, kind: str) -> tuple[S3Endpoint, str]:
    """(endpoint, new bucket) of one S3 implementation: rclone, moto, or b2 (rclone behind the strict proxy)."""
    server = request.getfixturevalue("moto_server" if kind == "moto" else "s3_server")
    bucket = f"bucket-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=bucket)
    if kind == "b2":
        proxy = request.getfixturevalue("strict_proxy")
        server = S3Endpoint(proxy.url, server.access_key, server.secret_key, server.region, server.data_dir)
    return server, bucket


def s3_kind_store(request, kind: str, prefix: str = "team/runs") -> tuple[S3Store, S3Endpoint, str]:
    server, bucket = s3_endpoint_for(request, kind)
    return S3Store(s3_storage(server, bucket, prefix), env=server.env()), server, bucket
