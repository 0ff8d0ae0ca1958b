"""The quick start's training on a CPU that another process keeps busy: torch's default threads
(one per core) against the trainer's automatic choice (train.cpu_threads null, trainer/training/cpu_threads.py).

    python bench/cpu_sharing.py --data_dir runs-of-the-quickstart/data [--steps 60] [--busy 1]

Starts ``--busy`` CPU-bound processes (a Python busy loop each), then trains the quick start's
model and train config (configs/model_smoke.yaml, configs/train_smoke.yaml, no overfit check, no
trackers) for ``--steps`` steps twice, in alternating order: with train.cpu_threads set to the
number of cores ("before": what torch does by default) and with train.cpu_threads null (auto).
Prints wall seconds and mean tokens/s of each, measured in the same run, and the idle figure
(no busy process) for reference. The data is the quick start's (`launcher run` writes it to
data/ in the project).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runcontract.run_folder import METRICS_FILE, TRAIN_LOG  # noqa: E402

BUSY_LOOP = "while True: pass"


def train_once(data_dir: Path, steps: int, threads: str, workdir: Path, name: str) -> tuple[float, float, str]:
    """(wall seconds, mean tokens/s over the run's metrics lines, the trainer's CPU-threads line)."""
    args = ["--model_config", str(ROOT / "configs/model_smoke.yaml"), "--train_config", str(ROOT / "configs/train_smoke.yaml"),
            "--set", f"train.data_dir={data_dir}", "--set", f"train.runs_dir={workdir}", "--set", f"train.run_name={name}",
            "--set", f"train.max_steps={steps}", "--set", "train.checks.overfit_microset.enabled=false",
            "--set", "train.trackers=[]", "--set", f"train.cpu_threads={threads}", "--set", "train.tokenizer_model=null",
            "--set", f"train.eval_interval={steps}", "--set", f"train.checkpoint_interval={steps}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(workdir / "mpl")}
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "trainer.train", *args], cwd=workdir, env=env, check=True, capture_output=True)
    wall = time.monotonic() - start
    run_dir = workdir / name
    records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    tokens_per_sec = sum(r["tokens_per_sec"] for r in train) / len(train)
    threads_line = next(line for line in (run_dir / TRAIN_LOG).read_text().splitlines() if "CPU threads:" in line)
    return wall, tokens_per_sec, threads_line.split("] ", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True, help="the quick start's data/ (train.bin, val.bin)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes running beside training")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows.append(("idle, auto", *train_once(args.data_dir.resolve(), args.steps, "null", workdir, "idle")))
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.busy)]
        try:
            time.sleep(2)  # let the busy processes be seen as busy
            for i, (label, threads) in enumerate([("busy, before (one thread per core)", str(cores)), ("busy, after (auto)", "null"),
                                                  ("busy, after (auto)", "null"), ("busy, before (one thread per core)", str(cores))]):
                rows.append((label, *train_once(args.data_dir.resolve(), args.steps, threads, workdir, f"run{i}")))
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
    print(f"quick-start training, {args.steps} steps of 2,048 tokens, {cores} cores, {args.busy} busy process(es) beside it")
    print(f"| {'case':<36} | {'wall s':>7} | {'tokens/s':>9} | trainer's choice")
    print(f"|{'-' * 38}|{'-' * 9}|{'-' * 11}|{'-' * 40}")
    for label, wall, tps, line in rows:
        print(f"| {label:<36} | {wall:>7.1f} | {tps:>9,.0f} | {line}")


if __name__ == "__main__":
    main()
