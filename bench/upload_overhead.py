"""Does a checkpoint upload slow training? Step time with vs without a concurrent upload by the
real agent, measured in the same run (same model, same process, phases interleaved).

    python bench/upload_overhead.py [--store s3|file] [--size_mb 512] [--rounds 3] [--device auto]

The smoke model (configs/model_smoke.yaml) trains on random tokens. Phase "idle": no upload.
Phase "upload": a checkpoint of --size_mb random bytes appears in the run folder and
`python -m launcher.agent mirror` (a separate, niced process, as on the box) uploads it to the
store (s3: a local `rclone serve s3`, itself niced as a stand-in for a remote endpoint; file: a
folder); only the steps that run while the agent logs the upload as in flight are counted.
Prints a table and the ratio of median step times (target: <= 1.05).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher.agent import store_config_json  # noqa: E402
from launcher.config import AgentConfig, LauncherConfig, StorageConfig  # noqa: E402
from runcontract.atomic import atomic_write_json  # noqa: E402
from runcontract.manifest import write_manifest  # noqa: E402
from runcontract.run_folder import AGENT_LOG, CHECKPOINTS_DIR, FINISHED, STATUS_FILE, STORE_CONFIG_FILE, run_rel, step_dir_name  # noqa: E402


def build(device: str, batch: int, seq_len: int):
    import torch

    from runcontract.config import ModelConfig
    from runcontract.configlib import read_yaml, validate
    from trainer.modeling.transformer import Transformer

    config = validate(ModelConfig, read_yaml(ROOT / "configs" / "model_smoke.yaml"), "configs/model_smoke.yaml")
    torch.manual_seed(0)
    model = Transformer(config).to(device)
    optimizer = model.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, device_type=device)
    data = torch.randint(0, config.vocab_size, (batch, seq_len + 1), device=device)

    def step() -> float:
        started = time.perf_counter()
        _, loss = model(data[:, :-1], data[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    return step


def write_status(run_dir: Path, state: str) -> None:
    atomic_write_json(run_dir / STATUS_FILE, {"state": state, "pid": os.getpid(), "step": 0})


def make_checkpoint(run_dir: Path, step: int, size_mb: int) -> None:
    tmp = run_dir / CHECKPOINTS_DIR / f".{step_dir_name(step)}.tmp"
    tmp.mkdir(parents=True)
    with open(tmp / "model.safetensors", "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    write_manifest(tmp, meta={"step": step})
    os.replace(tmp, run_dir / CHECKPOINTS_DIR / step_dir_name(step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["s3", "file"], default=None, help="Default: s3 when rclone is installed, else file.")
    parser.add_argument("--size_mb", type=int, default=512, help="Size of each uploaded checkpoint.")
    parser.add_argument("--rounds", type=int, default=3, help="Idle/upload phase pairs.")
    parser.add_argument("--idle_steps", type=int, default=30, help="Steps per idle phase.")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    work = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    server = None
    try:
        store_kind = args.store
        if store_kind is None:
            try:
                from tests.harness.s3server import rclone_binary

                rclone_binary()
                store_kind = "s3"
            except (ImportError, RuntimeError):
                store_kind = "file"
        if store_kind == "s3":
            from tests.harness.s3server import RcloneS3Server

            server = RcloneS3Server(work / "s3")
            endpoint = server.start()
            # a remote endpoint would not share our CPU: give the stand-in server idle priority
            for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
                os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))
            endpoint.client().create_bucket(Bucket="bench")
            env.update(endpoint.env())
            storage = StorageConfig(url="s3://bench/runs", endpoint_url=endpoint.endpoint_url, region=endpoint.region, addressing_style="path")
        else:
            storage = StorageConfig(url=f"file://{work / 'store'}")
        run_dir = work / "project" / run_rel("bench")
        run_dir.mkdir(parents=True)
        config = LauncherConfig(storage=storage, agent=AgentConfig(sync_interval=1.0))
        (run_dir / STORE_CONFIG_FILE).write_text(store_config_json(config, "bench", None))
        write_status(run_dir, "running")
        agent = subprocess.Popen(
            [sys.executable, "-m", "launcher.agent", "mirror", "--run_dir", str(run_dir), "--store_config", str(run_dir / STORE_CONFIG_FILE),
             "--project_root", str(work / "project")],
            cwd=work / "project", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        agent_log = run_dir / AGENT_LOG

        def log_text() -> str:
            try:
                return agent_log.read_text()
            except FileNotFoundError:
                return ""

        step = build(device, args.batch, args.seq_len)
        for _ in range(10):  # warm-up
            step()
        idle, busy, windows = [], [], []
        for round_ in range(1, args.rounds + 1):
            for _ in range(args.idle_steps):
                log_text()  # the same per-step check as in the upload phase
                idle.append(step())
            name = step_dir_name(round_)
            make_checkpoint(run_dir, round_, args.size_mb)
            while f"uploading checkpoint {name}" not in log_text():
                step()  # not counted: the agent has not started this upload yet
            started, count = time.monotonic(), 0
            while f"checkpoint {name} stored" not in log_text():
                busy.append(step())
                count += 1
                if agent.poll() is not None:
                    raise SystemExit(f"the agent exited with {agent.returncode}; see {agent_log}")
            windows.append((time.monotonic() - started, count))
            shutil.rmtree(run_dir / CHECKPOINTS_DIR / name)  # keep the disk use flat
        write_status(run_dir, FINISHED)
        agent.wait(120)

        if not busy:
            raise SystemExit("no step ran during an upload: raise --size_mb")
        med_idle, med_busy = statistics.median(idle), statistics.median(busy)
        print(f"\nupload overhead on {device} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores), store {store_kind}, "
              f"{args.size_mb} MB per checkpoint, {args.rounds} rounds")
        print(f"{'phase':<10}{'steps':>8}{'median ms':>12}{'mean ms':>10}{'p90 ms':>9}")
        for label, times in (("idle", idle), ("upload", busy)):
            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
            print(f"{label:<10}{len(times):>8}{1000 * statistics.median(times):>12.2f}{1000 * statistics.mean(times):>10.2f}{1000 * p90:>9.2f}")
        import re

        took = [float(t) for t in re.findall(r"checkpoint step_\d+ stored \(.*? sent in ([0-9.]+)s\)", log_text())]
        speeds = ", ".join(f"{args.size_mb / t:.0f}" for t in took if t > 0)
        print(f"upload windows seen by the trainer: {', '.join(f'{s:.1f}s/{n} steps' for s, n in windows)}; agent upload speed: {speeds} MB/s")
        ratio = med_busy / med_idle
        print(f"ratio (median step time with upload / without): {ratio:.3f}  ({'within' if ratio <= 1.05 else 'over'} the 5% target)")
        if min(n for _, n in windows) < 5:
            print("warning: fewer than 5 steps ran during an upload; raise --size_mb for a steadier figure")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
