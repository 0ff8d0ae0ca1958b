"""Helpers shared by the launcher's end-to-end tests (SSH box, local box, the journeys).

A copy of the project as a user's checkout has it, the CLI run as a subprocess the way a user
runs it, launcher configs for the SSH and local boxes, polling, a shell on the SSH box, and a
bounded ``launcher logs --follow`` (Ctrl-C once a line shows up).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.s3server import S3Endpoint
from tests.harness.sshd import SSHTarget
from tests.harness.paths import REPO as ROOT

TRAIN_SETS = [
    "train.max_steps=100000", "train.log_interval=1", "train.checks.overfit_microset.enabled=false",
    "train.eval_interval=1000", "train.checkpoint_interval=1000", "train.eval_tokens=2048",
]


def copy_project(dest: Path) -> Path:
    """The project's files as a user's checkout has them (git's view: tracked + untracked, not ignored)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in out.decode().split("\0"):
        src = ROOT / rel
        if rel and src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def launcher_env(project: Path, env: dict | None = None) -> dict:
    """The environment the CLI runs with: this project on the path; store credentials only when given."""
    full_env = {**os.environ, "PYTHONPATH": str(project), "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **(env or {})}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return full_env


def launcher(project: Path, *args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=launcher_env(project, env),
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The result of a command that must succeed (its output in the failure message)."""
    assert result.returncode == 0, f"{result.args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result.stderr}"


def ssh_config(sshd: SSHTarget, workdir: str, python: str, *, name: str, storage: str, port: int | None = None,
               identity: str | None = None, sets=TRAIN_SETS, max_cost: float = 100.0, data_config: str | None = None) -> str:
    lines = [
        "box:", "  kind: ssh", f"  host: {sshd.host}", f"  port: {port or sshd.port}", f"  user: {sshd.user}",
        f"  identity_file: {identity or sshd.identity_file}", f"  workdir: {workdir}", f"  python: {python}",
        "  connect_timeout: 5",
        "run:", f"  name: {name}", f"  set: {json.dumps(list(sets))}", *([f"  data_config: {data_config}"] if data_config else []),
        "  tokenizer: {vocab_size: 4096, sample_bytes: 400000}", "  data: {train_tokens: 100000, val_tokens: 10000}",
        storage,
        f"budget: {{hourly_rate: 0.5, max_cost: {max_cost}}}",
    ]
    return "\n".join(lines) + "\n"


def s3_storage(s3: S3Endpoint, bucket: str) -> str:
    return (f"storage:\n  url: s3://{bucket}/runs\n  endpoint_url: {s3.endpoint_url}\n  addressing_style: path\n"
            f"  region: {s3.region}\n")


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def box_shell(sshd: SSHTarget, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(sshd.ssh_argv(command), capture_output=True, text=True, timeout=60)


def local_config(name: str, max_cost: float = 100.0) -> str:
    return (
        "box:\n  kind: local\n"
        f"run:\n  name: {name}\n  set: {json.dumps(TRAIN_SETS)}\n"
        "  tokenizer: {vocab_size: 4096, sample_bytes: 400000}\n  data: {train_tokens: 100000, val_tokens: 10000}\n"
        "storage:\n  url: file://.launcher/store\n"
        f"budget: {{hourly_rate: 0.5, max_cost: {max_cost}}}\n"
    )


@dataclass
class Followed:
    lines: list[str]  # stdout lines up to and including the awaited one
    stderr: str
    returncode: int


def follow_logs_until(project: Path, needle: str, timeout: float, env: dict | None = None,
                      args: tuple[str, ...] = ("logs", "--follow", "-n", "1000")) -> Followed:
    """``launcher logs --follow`` as a user watches it: Ctrl-C (SIGINT) once a line contains ``needle``."""
    proc = subprocess.Popen([sys.executable, "-m", "launcher", *args], cwd=project, env=launcher_env(project, env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: queue.Queue = queue.Queue()
    err: list[str] = []

    def pump_stdout() -> None:
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    readers = [threading.Thread(target=pump_stdout, daemon=True),
               threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while not lines or needle not in lines[-1]:
            try:
                line = out.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {needle!r} from `launcher logs --follow` within {timeout}s; "
                                     f"last lines: {lines[-5:]}; stderr: {''.join(err)}") from None
            if line is None:
                raise AssertionError(f"`launcher logs --follow` ended (exit {proc.wait()}) before a line with {needle!r}; "
                                     f"last lines: {lines[-5:]}; stderr: {''.join(err)}")
            lines.append(line.rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(5)
    return Followed(lines, "".join(err), code)
