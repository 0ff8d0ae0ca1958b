"""The throughput ledger's records: one per benchmark a run does, in the store beside the runs.

Appended by ``launcher run`` right after the benchmark stage (from the run's throughput.json,
the trainer's own JSON result) through ``launcher.store.ledger.Ledger``: append-only, one object
a record, so two runs appending at once both keep theirs. ``launcher plan`` reads them all.

A record (every field but the first three may be null):

    {"gpu_name": "NVIDIA GeForce RTX 4090", "gpu_count": 1, "tokens_per_second": 91234.5,
     "mfu": 0.39, "peak_flops": 1.652e14, "flops_per_token": 7.138e8, "model_config_hash": "ab12...",
     "micro_batch_size": 16, "seq_len": 1024, "torch_version": "2.4.0", "provider": "vastai",
     "host": "203.0.113.20", "instance_id": "7000001", "run": "c4-100m", "measured_at": "2026-12-03T08:00:00Z",
     "setup_seconds": 1260.0, "nccl_env": null}

``tokens_per_second`` is the whole box's speed at ``gpu_count`` processes: throughput.json's
``tokens_per_sec`` is one process's, measured while its ``gpu_count`` processes trained together
(a file from before gpu_count was recorded measured one). ``nccl_env`` is what the NCCL probe chose
(runcontract/run_files.py ``Throughput``). ``setup_seconds`` is the time from
the rental (``launcher up``) to the end of the benchmark: image pull, bootstrap, data.
"""
from __future__ import annotations

from typing import Any, Optional

from launcher.store.base import Store
from launcher.store.ledger import THROUGHPUT_LEDGER, Ledger
from runcontract.run_files import Throughput


def measured_processes(throughput: Throughput) -> int:
    return throughput.gpu_count or 1


def throughput_record(throughput: Throughput, *, provider: Optional[str], host: Optional[str],
                      instance_id: Optional[str], run: str, setup_seconds: Optional[float] = None) -> dict[str, Any]:
    """The ledger record of one benchmark (see the module docstring)."""
    processes = measured_processes(throughput)
    return {
        "gpu_name": throughput.device_name or throughput.device_type or "unknown",
        "gpu_count": processes,
        "tokens_per_second": float(throughput.tokens_per_sec * processes),
        "nccl_env": throughput.nccl_env,
        "mfu": throughput.mfu,
        "peak_flops": throughput.peak_flops,
        "flops_per_token": throughput.flops_per_token,
        "model_config_hash": throughput.model_config_hash,
        "micro_batch_size": throughput.micro_batch_size,
        "seq_len": throughput.seq_len,
        "torch_version": throughput.torch_version,
        "provider": provider,
        "host": host,
        "instance_id": instance_id,
        "run": run,
        "measured_at": throughput.measured_at,
        "setup_seconds": setup_seconds,
    }


def append_throughput(store: Store, record: dict[str, Any]) -> str:
    return Ledger(store, THROUGHPUT_LEDGER).append(record)


def read_throughput(store: Store) -> list[dict[str, Any]]:
    """Every readable record, oldest first (an unreadable object is skipped by the ledger)."""
    return Ledger(store, THROUGHPUT_LEDGER).read().items
