"""The NCCL probe: can the GPUs of this box all-reduce, and how fast? Run before training on several GPUs.

    python -m trainer.nccl_probe --gpu_count 2 --output_path runs/NAME/nccl_probe.json --box_id ID \
        [--size_mb 256] [--iterations 10] [--timeout_s 120] [--startup_timeout_s 300] [--min_busbw_gbps 1]

It starts ``gpu_count`` ranks through ``accelerate launch`` (runcontract.ddp_launch, as training
does), each all-reducing a ``size_mb`` tensor once untimed and ``iterations`` times timed, and
reports the bandwidth as nccl-tests defines it: algbw = bytes / seconds per all-reduce, busbw =
algbw x 2(n-1)/n (what each link carries in a ring). The attempt is bounded in time: the ranks
get ``startup_timeout_s`` to start (Python and torch loaded), then ``timeout_s`` to join the
process group and all-reduce; past either, the launch and every rank are killed (SIGKILL) and the attempt is a hang. A hang,
an error, or a bus under ``min_busbw_gbps`` is retried once with ``NCCL_P2P_DISABLE=1`` (hosts of
several RTX 4090s without working peer-to-peer hang in NCCL's P2P transport). Every attempt and
the environment that worked go to ``nccl_probe.json`` (runcontract.run_files.NcclProbe); the
launcher adds that environment to the benchmark and training launches. When no attempt works it
exits 1 with one paragraph naming what was tried, before anything trains.

A box with fewer CUDA GPUs than ``--gpu_count`` is refused before anything starts. Without CUDA,
``ACCELERATE_USE_CPU=1`` runs the same code on CPU ranks with gloo (NCCL_P2P_DISABLE is then
harmless): that is how the tests cover it.

Test-only knob: ``LLMBOX_PROBE_SIMULATE_HANG`` (read by this module only, never set in a real
run): ``p2p`` makes every rank sleep instead of all-reducing unless ``NCCL_P2P_DISABLE=1`` is
set (the multi-4090 hang), ``all`` makes every attempt hang.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from runcontract.atomic import atomic_write_json
from runcontract.ddp_launch import P2P_OFF, accelerate_launch_args
from runcontract.errors import UserError, cli_main
from runcontract.run_files import NcclProbe, ProbeAttempt

SIMULATE_HANG_ENV = "LLMBOX_PROBE_SIMULATE_HANG"  # test-only, see the module doc
ATTEMPTS: tuple[dict[str, str], ...] = ({}, P2P_OFF)  # NCCL's defaults first, then without peer-to-peer
RESULT_FILE = "result.json"  # rank 0's measurement, in the attempt's work folder
OUTPUT_TAIL_LINES = 200
EXIT_GRACE_S = 30  # the ranks' time to exit once the result is written


def bus_bandwidth(algbw: float, ranks: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce: algbw x 2(n-1)/n."""
    return algbw * 2 * (ranks - 1) / ranks


def env_label(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items()) or "NCCL defaults"


# -- the driver: one process that launches, watches and kills the ranks ---------------------------
def backend_for(gpu_count: int) -> str:
    """nccl when the box has the GPUs, gloo for CPU ranks (ACCELERATE_USE_CPU=1); else a UserError."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return "gloo"
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpu_count:
        raise UserError(
            f"run.gpu_count is {gpu_count} but torch sees {found} CUDA GPU(s) on this box (nvidia-smi -L lists them): "
            f"set run.gpu_count to {max(found, 1)} or rent a box with {gpu_count} GPUs."
        )
    return "nccl"


def _drain(stream, tail: collections.deque) -> None:
    for raw in iter(stream.readline, b""):
        tail.append(raw.decode(errors="replace").rstrip())


def run_attempt(gpu_count: int, env: dict[str, str], size_bytes: int, iterations: int, timeout_s: float,
                startup_timeout_s: float, min_busbw_gbps: float) -> ProbeAttempt:
    """One launch of the ranks with ``env`` added; the launch and every rank are killed on a hang."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nccl-probe-") as work:
        argv = [sys.executable, *accelerate_launch_args(gpu_count, "trainer.nccl_probe"), "--worker",
                "--work_dir", work, "--size_bytes", str(size_bytes), "--iterations", str(iterations)]
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        tail: collections.deque = collections.deque(maxlen=OUTPUT_TAIL_LINES)  # the ranks' output, for a failure's detail
        reader = threading.Thread(target=_drain, args=(proc.stdout, tail), daemon=True)
        reader.start()
        try:
            hang = _watch(proc, Path(work), gpu_count, start, timeout_s, startup_timeout_s)
        except BaseException:  # Ctrl-C, or the SIGTERM/SIGHUP of a closed session: the ranks never outlive the probe
            _kill_launch(proc)
            raise
        reader.join(timeout=10)
        seconds = time.monotonic() - start
        if hang:
            return ProbeAttempt(nccl_env=env, outcome="hang", seconds=seconds, detail=hang)
        result = Path(work) / RESULT_FILE
        if not result.is_file():  # once written, the measurement stands (however the ranks then exit)
            return ProbeAttempt(nccl_env=env, outcome="failed", seconds=seconds,
                                detail=f"the ranks exited with code {proc.returncode}: {failure_lines(list(tail))}")
        measured = json.loads(result.read_text())
    busbw, algbw = measured["busbw_gbps"], measured["algbw_gbps"]
    slow = busbw < min_busbw_gbps
    return ProbeAttempt(nccl_env=env, outcome="slow" if slow else "ok", busbw_gbps=busbw, algbw_gbps=algbw, seconds=seconds,
                        detail=f"bus bandwidth {busbw:.2f} GB/s is under min_busbw_gbps {min_busbw_gbps}" if slow else None)


def failure_lines(output: list[str]) -> str:
    """What a failed launch said: the ranks' one-line errors (each once), else its last lines."""
    errors = [line for line in output if line.startswith("error:")]
    picked = list(dict.fromkeys(errors)) or [line for line in output if line.strip()][-3:]
    return " / ".join(picked) or "(no output)"


def _watch(proc: subprocess.Popen, work: Path, ranks: int, start: float, timeout_s: float, startup_timeout_s: float) -> Optional[str]:
    """Wait for the launch; past the deadline kill it and every rank, and say why (None: it ended or had measured)."""
    deadline, started, measured = start + startup_timeout_s, None, False
    while proc.poll() is None:
        now = time.monotonic()
        if started is None and len(list(work.glob("ready.*"))) >= ranks:
            started = now
            deadline = now + timeout_s  # the all-reduces' own budget starts once every rank is up
        if not measured and (work / RESULT_FILE).is_file():
            measured, deadline = True, min(deadline, now + EXIT_GRACE_S)
        if now > deadline:
            _kill_launch(proc)
            if measured:
                return None  # the ranks measured, then stuck on their way out
            if started is None:
                return f"the {ranks} ranks had not all started within startup_timeout_s {startup_timeout_s:g} s; killed"
            return f"no result within timeout_s {timeout_s:g} s of all {ranks} ranks starting; killed"
        time.sleep(0.2)
    return None


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc): torch's launcher starts each rank in a session of its own."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))  # the field after "(name) state" is ppid
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_launch(proc: subprocess.Popen) -> None:
    """SIGKILL the launch and every rank (one stuck in NCCL ignores SIGTERM), the tree read before anyone dies."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def probe(gpu_count: int, output_path: Path, box_id: str, size_bytes: int, iterations: int, timeout_s: float,
          startup_timeout_s: float, min_busbw_gbps: float) -> NcclProbe:
    """Try each environment of ATTEMPTS until one passes; write nccl_probe.json either way."""
    if gpu_count < 2:
        raise UserError(f"--gpu_count must be at least 2 for an all-reduce probe, got {gpu_count}.")
    backend = backend_for(gpu_count)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # the ranks run in their own session: end them on the way out
        signal.signal(sig, _interrupted)
    attempts: list[ProbeAttempt] = []
    for env in ATTEMPTS:
        print(f"probe: all-reduce of {size_bytes / 1e6:g} MB x {iterations} across {gpu_count} ranks ({backend}, {env_label(env)}) ...", flush=True)
        attempt = run_attempt(gpu_count, env, size_bytes, iterations, timeout_s, startup_timeout_s, min_busbw_gbps)
        attempts.append(attempt)
        figures = f"busbw {attempt.busbw_gbps:.2f} GB/s, algbw {attempt.algbw_gbps:.2f} GB/s" if attempt.busbw_gbps is not None else ""
        print(f"probe: {env_label(env)}: {attempt.outcome} in {attempt.seconds:.1f} s"
              + (f", {figures}" if figures else "") + (f" ({attempt.detail})" if attempt.detail and attempt.outcome != "failed" else ""), flush=True)
        if attempt.outcome == "ok":
            break
    passed = attempts[-1] if attempts[-1].outcome == "ok" else None
    result = NcclProbe(
        ok=passed is not None, gpu_count=gpu_count, backend=backend, box_id=box_id,
        nccl_env=passed.nccl_env if passed else {}, busbw_gbps=passed.busbw_gbps if passed else None,
        algbw_gbps=passed.algbw_gbps if passed else None, size_bytes=size_bytes, iterations=iterations,
        timeout_s=timeout_s, min_busbw_gbps=min_busbw_gbps, attempts=attempts,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    result.write(output_path)
    if passed is None:
        tried = "; ".join(f"{env_label(a.nccl_env)}: {a.outcome} ({a.detail})" for a in attempts)
        raise UserError(
            f"the {gpu_count} GPUs of this box could not all-reduce well enough to train together. Tried {tried}. "
            f"Training on them would hang or crawl, so nothing was started (every attempt is in {output_path}). "
            "Set run.gpu_count: 1 to train on one GPU, or rent another box."
        )
    return result


# -- a rank ------------------------------------------------------------------------------------------
def worker(work_dir: Path, size_bytes: int, iterations: int) -> None:
    """One rank under accelerate launch: all-reduce, time it, and (rank 0) write result.json."""
    import torch
    import torch.distributed as dist
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # up: from here the attempt's timeout runs (joining the group may already build NCCL's communicator and hang)
    (work_dir / f"ready.{os.environ.get('RANK', '0')}").write_text("")
    # joins the process group: nccl on GPUs, gloo on CPU ranks (Accelerator reads the flag itself, PartialState does not)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    rank, ranks, device = state.process_index, state.num_processes, state.device
    if ranks < 2:
        raise UserError("trainer.nccl_probe --worker runs under accelerate launch with several processes; run it without --worker.")
    simulate = os.environ.get(SIMULATE_HANG_ENV, "")
    if simulate == "all" or (simulate == "p2p" and os.environ.get("NCCL_P2P_DISABLE") != "1"):
        while True:  # what a rank stuck in NCCL looks like from outside: alive, silent, no result
            time.sleep(60)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    data = torch.ones(max(1, size_bytes // 4), dtype=torch.float32, device=device)
    dist.all_reduce(data)  # untimed: NCCL builds its communicator on the first collective
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(data)
    sync()
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's time is the collective's
    check = torch.full((1,), float(rank + 1), device=device)
    dist.all_reduce(check)
    if int(check.item()) != ranks * (ranks + 1) // 2:
        raise UserError(f"the all-reduce returned {check.item()} instead of {ranks * (ranks + 1) // 2}: the GPUs' transport corrupts data.")
    if state.is_main_process:
        bytes_moved = data.numel() * data.element_size()
        algbw = bytes_moved * iterations / float(elapsed.item()) / 1e9
        atomic_write_json(work_dir / RESULT_FILE, {"algbw_gbps": algbw, "busbw_gbps": bus_bandwidth(algbw, ranks),
                                                   "ranks": ranks, "seconds": float(elapsed.item())})
    state.wait_for_everyone()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.nccl_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu_count", type=int, help="GPUs (ranks) to probe, at least 2")
    parser.add_argument("--output_path", help="nccl_probe.json to write")
    parser.add_argument("--box_id", default="unknown", help="the launcher's identity of this box, recorded so the result is reused on it only")
    parser.add_argument("--size_mb", type=float, default=256, help="MB all-reduced per iteration")
    parser.add_argument("--iterations", type=int, default=10, help="timed all-reduces per attempt")
    parser.add_argument("--timeout_s", type=float, default=120, help="seconds to join and all-reduce once every rank is up (longer: a hang)")
    parser.add_argument("--startup_timeout_s", type=float, default=300, help="seconds for the ranks to start (Python and torch loaded)")
    parser.add_argument("--min_busbw_gbps", type=float, default=1.0, help="bus bandwidth under which the bus counts as crawling")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one rank, started by the probe itself
    parser.add_argument("--work_dir", help=argparse.SUPPRESS)
    parser.add_argument("--size_bytes", type=int, help=argparse.SUPPRESS)
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        worker(Path(args.work_dir), args.size_bytes, args.iterations)
        return 0
    if args.gpu_count is None or not args.output_path:
        raise UserError("trainer.nccl_probe needs --gpu_count N (at least 2) and --output_path FILE (nccl_probe.json).")
    if args.size_mb <= 0 or args.iterations < 1 or args.timeout_s <= 0 or args.startup_timeout_s <= 0:
        raise UserError("--size_mb, --timeout_s and --startup_timeout_s must be positive and --iterations at least 1.")
    result = probe(args.gpu_count, Path(args.output_path), args.box_id, int(args.size_mb * 1e6), args.iterations,
                   args.timeout_s, args.startup_timeout_s, args.min_busbw_gbps)
    print(f"probe passed with {env_label(result.nccl_env)}: busbw {result.busbw_gbps:.2f} GB/s; wrote {args.output_path}", flush=True)
    return 0
