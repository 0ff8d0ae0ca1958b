"""Benchmark `launcher run` on an SSH box that is already bootstrapped, and a no-change re-sync.

    python bench/launcher_run_bench.py [--repeats 2]

Starts the same real parts as the tests (OpenSSH on loopback as a non-root user, an S3 server,
the box's Python with torch), copies the project, runs `launcher up` and one `launcher run`
(tokenizer, data and benchmark are built, then training is stopped), then measures:
- seconds from `launcher run` to the first training step (status.json step >= 1), with every
  earlier stage skipped as up to date;
- bytes rsync sends for a re-sync with no change, against the size of the synced tree.
Prints a table. Run from the project folder as root (the test sshd needs it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINES: list[str] = []
sys.path.insert(0, str(ROOT))

from runcontract.run_folder import STATUS_FILE, run_rel  # noqa: E402
from tests.harness.box_python import ensure_box_python  # noqa: E402
from tests.harness.s3server import RcloneS3Server  # noqa: E402
from tests.harness.sshd import SSHServer  # noqa: E402
from tests.test_launcher_ssh import copy_project, launcher, s3_storage, ssh_config  # noqa: E402


def first_step_seconds(project: Path, target, workdir: str, name: str, env: dict, timeout: float = 300) -> tuple[float, float]:
    """(seconds to the first step, seconds the `launcher run` command itself took)."""
    status_path = f"{workdir}/{run_rel(name)}/{STATUS_FILE}"
    subprocess.run(target.ssh_argv(f"rm -f {status_path}"), check=True, capture_output=True)
    start = time.monotonic()
    run = launcher(project, "run", env=env)
    run_s = time.monotonic() - start
    if run.returncode != 0:
        raise SystemExit(f"launcher run failed:\n{run.stdout}\n{run.stderr}")
    STAGE_LINES[:] = [l for l in run.stdout.splitlines() if l.startswith("[") and ("done in" in l or "skipped" in l)]
    while time.monotonic() - start < timeout:
        out = subprocess.run(target.ssh_argv(f"cat {status_path} 2>/dev/null"), capture_output=True, text=True).stdout
        try:
            status = json.loads(out) if out.strip() else {}
        except ValueError:
            status = {}
        if (status.get("step") or 0) >= 1:
            return time.monotonic() - start, run_s
        time.sleep(0.2)
    raise SystemExit("no training step within the timeout")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sshd_dir = Path(tempfile.mkdtemp(prefix="llmbox-sshd-"))
    os.chmod(sshd_dir, 0o755)
    work = Path(tempfile.mkdtemp(prefix="llmbox-bench-"))
    server, s3 = SSHServer(sshd_dir), RcloneS3Server(work / "s3")
    target = server.start()
    endpoint = s3.start()
    bucket = "bench-bucket"
    endpoint.client().create_bucket(Bucket=bucket)
    project = copy_project(work / "project")
    name = f"bench{os.getpid()}"
    workdir = f"{target.home}/bench-{os.getpid()}"
    (project / "configs" / "bench.yaml").write_text(
        ssh_config(target, workdir, str(ensure_box_python()), name=name, storage=s3_storage(endpoint, bucket)))
    env = endpoint.env()
    rows = []
    try:
        t0 = time.monotonic()
        up = launcher(project, "up", "--config", "configs/bench.yaml", env=env)
        if up.returncode != 0:
            raise SystemExit(up.stdout + up.stderr)
        rows.append(("launcher up (fresh box: sync + bootstrap)", f"{time.monotonic() - t0:.1f} s"))
        t0 = time.monotonic()
        up_again = launcher(project, "up", env=env)
        if up_again.returncode != 0:
            raise SystemExit(up_again.stdout + up_again.stderr)
        rows.append(("launcher up again (bootstrapped)", f"{time.monotonic() - t0:.1f} s"))
        first, run_s = first_step_seconds(project, target, workdir, name, env)
        rows.append(("first launcher run -> first step (builds tokenizer, data, benchmark)", f"{first:.1f} s"))
        launcher(project, "stop", env=env, timeout=300)
        for i in range(args.repeats):
            first, run_s = first_step_seconds(project, target, workdir, name, env)
            rows.append((f"launcher run -> first step, bootstrapped box (#{i + 1})", f"{first:.1f} s (run command {run_s:.1f} s)"))
            launcher(project, "stop", env=env, timeout=300)

        from launcher.box.ssh import SSHBox
        from launcher.box.known_hosts import known_hosts_path
        from launcher.box.ssh_commands import SSHEndpoint

        box = SSHBox(SSHEndpoint(host=target.host, port=target.port, user=target.user, identity_file=str(target.identity_file),
                                 known_hosts=str(known_hosts_path(project))), workdir=workdir)
        stats = box.sync(project)
        box.close()
        rows.append(("re-sync, no change: bytes sent", f"{stats.bytes_sent:,} B of {stats.total_bytes:,} B tree "
                                                       f"({100 * stats.bytes_sent / stats.total_bytes:.2f}%, {stats.total_files} files, "
                                                       f"{stats.seconds:.2f} s)"))
    finally:
        launcher(project, "down", env=env, timeout=300)
        server.stop()
        s3.stop()
        subprocess.run(["rm", "-rf", workdir])
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sshd_dir, ignore_errors=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title="launcher run benchmark (SSH box on loopback, CPU)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
    print("stages of the last `launcher run`:")
    for line in STAGE_LINES:
        print("  " + line)


if __name__ == "__main__":
    main()
