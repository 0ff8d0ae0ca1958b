"""Shared fixtures: real sshd, real S3 server, the box image's Python, and project paths.

Every real part is started for real and stopped by PID. If one cannot start, the fixture
errors (never skips), so CI fails loudly instead of passing without the part.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.harness.box_python import ensure_box_python
from tests.harness.s3proxy import StrictS3Proxy
from tests.harness.s3server import MotoS3Server, RcloneS3Server, S3Endpoint
from tests.harness.sshd import SSHServer, SSHTarget

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture
def run_python(tmp_path):
    """Run ``python -m ...`` (or a script) from the project root like a user would; returns the result."""

    def _run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300, check: bool = False):
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        result = subprocess.run(
            [sys.executable, *args], cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    return _run


@pytest.fixture
def fake_hub():
    """A stand-in for the Hugging Face Hub on 127.0.0.1 (tests/harness/fake_hub.py); add repos to it."""
    from tests.harness.fake_hub import FakeHub

    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SSHTarget:
    """A real OpenSSH server on 127.0.0.1; log in as the non-root user with ``identity_file``."""
    if not shutil.which("tmux"):
        raise RuntimeError("tmux is not installed: apt-get install -y tmux (.ci/run does this)")
    # sshd reads authorized_keys as the user: pytest's tmp folders (mode 700) are closed to it
    workdir = Path(tempfile.mkdtemp(prefix="llmbox-sshd-"))
    os.chmod(workdir, 0o755)
    server = SSHServer(workdir)
    target = server.start()
    yield target
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def remote_workdir(sshd: SSHTarget):
    """A fresh project folder path on the SSH box, owned by the test user (not created)."""
    path = sshd.home / f"work-{uuid.uuid4().hex[:8]}"
    yield str(path)
    for made in sshd.home.glob(f"{path.name}*"):  # the folder and siblings a test derived from it
        shutil.rmtree(made, ignore_errors=True)  # the tests run as root; the box's user made them


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Endpoint:
    """A real S3-compatible server over HTTP (rclone serve s3)."""
    server = RcloneS3Server(tmp_path_factory.mktemp("s3"))
    endpoint = server.start()
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> S3Endpoint:
    """moto's S3 server, a second real S3 implementation beside rclone."""
    server = MotoS3Server(tmp_path_factory.mktemp("moto"))
    endpoint = server.start()
    yield endpoint
    server.stop()


@pytest.fixture
def strict_proxy(s3_server):
    """A B2-like proxy in front of rclone serve s3 (refuses checksum headers; clock; faults)."""
    proxy = StrictS3Proxy(s3_server.endpoint_url)
    proxy.url = proxy.start()
    yield proxy
    assert not proxy.refused, f"the strict proxy refused: {proxy.refused}"
    proxy.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> str:
    """A new, empty bucket on the S3 server, created through boto3."""
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def box_python() -> Path:
    """An interpreter with torch that the non-root SSH user can run (a GPU image's Python)."""
    return ensure_box_python()
