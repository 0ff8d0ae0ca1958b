"""Resume across hardware: keep the global batch and the sample stream of a checkpoint.

A checkpoint's data_state.json (``TrainBatches.state_dict``) records the global batch in
sequences and what the stream depends on (train.bin's size and hash, seq_len, seed, sampling).
A resume with another micro-batch or number of ranks keeps the global batch by choosing the
gradient accumulation (lowering the micro-batch to a divisor when needed), so the run sees the
same global batches in the same order. Whatever would change the stream stops the run before
training, saying what changed and how to go on.
"""
from __future__ import annotations

from typing import Callable, Optional

from runcontract.errors import UserError

# Fields the stream is a function of: a change means other samples in another order.
STREAM_FIELDS = ("sampling", "seed", "seq_len", "train_tokens", "train_sha256")


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, max(1, limit)) + 1) if n % d == 0)


def keep_stream(saved: dict, current: dict, micro_batch: int, world_size: int, step: int,
                log: Callable[[str], None]) -> tuple[int, int]:
    """(micro_batch_size, grad_accum) that continue the checkpoint's stream on this hardware.

    ``saved`` is the checkpoint's data_state.json, ``current`` the same fields for this run.
    Raises UserError when the stream cannot be kept."""
    if "global_batch" not in saved:  # written by the sampler with replacement, before epochs
        log("warning: this checkpoint predates epoch sampling (its data_state.json has no global_batch); "
            f"the stream continues at step {step} of the epoch order, not where the old sampler was")
        return micro_batch, 0
    changed = [f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}" for key in STREAM_FIELDS
               if saved.get(key) is not None and current.get(key) is not None and saved[key] != current[key]]
    if changed:
        raise UserError(
            "cannot resume with the same sample stream: " + "; ".join(changed) + ". The checkpoint's training data "
            "order depends on these. Restore them (same data folder, train.seq_len, train.seed, train.sampling), "
            "or start a fresh run under a new train.run_name.")
    global_batch = int(saved["global_batch"])
    if int(saved.get("next_sample", step * global_batch)) != step * global_batch:
        raise UserError(f"the checkpoint's data position ({saved.get('next_sample')}) is not step {step} x global batch "
                        f"{global_batch}; its data_state.json does not belong to it. Resume from another checkpoint.")
    if global_batch % world_size:
        divisors = [d for d in range(1, global_batch + 1) if global_batch % d == 0]
        raise UserError(
            f"the checkpoint trained with a global batch of {global_batch} sequences per step, which {world_size} ranks "
            f"cannot share equally, so the sample stream cannot be kept. Resume with a number of processes that divides "
            f"{global_batch} (e.g. {', '.join(map(str, divisors[:8]))}), or start a fresh run under a new train.run_name.")
    per_rank = global_batch // world_size
    micro = largest_divisor_at_most(per_rank, micro_batch)
    if micro != micro_batch:
        log(f"micro-batch lowered from {micro_batch} to {micro} so that {world_size} rank(s) x accumulation keep "
            f"the checkpoint's global batch of {global_batch} sequences")
    return micro, per_rank // micro


def describe_change(saved: dict, micro_batch: int, grad_accum: int, world_size: int) -> Optional[str]:
    """A log line when the hardware layout differs from the checkpoint's, else None."""
    before = (saved.get("micro_batch_size"), saved.get("grad_accum"), saved.get("world_size"))
    if before == (micro_batch, grad_accum, world_size) or None in before:
        return None
    return (f"resuming on another layout: micro-batch {before[0]} x {before[1]} accumulation x {before[2]} ranks -> "
            f"{micro_batch} x {grad_accum} x {world_size}; the global batch ({saved['global_batch']} sequences) and "
            f"the sample stream are unchanged")
