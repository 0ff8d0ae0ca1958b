"""Which stored checkpoints a run keeps, and deleting the rest (``storage.keep``, ``launcher prune``).

Kept: the last ``keep`` complete step checkpoints, ``final/``, the one with the lowest validation
loss (from its manifest's meta), and always the newest complete checkpoint. Deleted: every
other complete step checkpoint, and incomplete ones older than the newest complete one (an
interrupted upload that a newer checkpoint superseded). An incomplete checkpoint newer than
that may still be uploading and is never touched.

A checkpoint is deleted manifest first, so it stops being complete before any file goes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from launcher.store.base import CheckpointInfo, Store
from runcontract.manifest import MANIFEST_NAME
from runcontract.run_folder import FINAL_DIR, checkpoint_rel, recency


@dataclass
class Plan:
    keep: list[tuple[CheckpointInfo, str]]  # (checkpoint, why it stays)
    delete: list[tuple[CheckpointInfo, str]]  # (checkpoint, why it goes)

    @property
    def freed_bytes(self) -> int:
        return sum(c.size_bytes for c, _ in self.delete)


def retention_plan(checkpoints: list[CheckpointInfo], keep: int) -> Plan:
    """Split ``checkpoints`` (as ``Store.checkpoints`` lists them, oldest first) into kept and deleted."""
    complete = [c for c in checkpoints if c.complete]
    newest = complete[-1] if complete else None
    reasons: dict[str, list[str]] = {}
    steps = [c for c in complete if c.name != FINAL_DIR]
    for c in steps[-keep:] if keep > 0 else []:
        reasons.setdefault(c.name, []).append(f"one of the last {keep}")
    for c in complete:
        if c.name == FINAL_DIR:
            reasons.setdefault(c.name, []).append("final")
    scored = [c for c in complete if c.val_loss is not None]
    if scored:
        best = min(scored, key=lambda c: (c.val_loss, -c.step))
        reasons.setdefault(best.name, []).append(f"best validation loss {best.val_loss:.4f}")
    if newest is not None:
        reasons.setdefault(newest.name, []).append("newest complete")
    plan = Plan([], [])
    for c in checkpoints:
        if c.name in reasons:
            plan.keep.append((c, ", ".join(reasons[c.name])))
        elif c.complete:
            plan.delete.append((c, f"older than the last {keep}"))
        elif newest is not None and c.step < newest.step:
            plan.delete.append((c, "incomplete upload, superseded"))
        else:
            plan.keep.append((c, "incomplete: may still be uploading"))
    return plan


def would_be_pruned(stored: list[CheckpointInfo], candidate: CheckpointInfo, keep: int) -> bool:
    """Whether ``candidate``, once stored complete, would be deleted right away by retention."""
    others = [c for c in stored if c.name != candidate.name]
    merged = sorted([*others, candidate], key=lambda c: (*recency(c.step, c.name), c.created))
    return any(c.name == candidate.name for c, _ in retention_plan(merged, keep).delete)


def delete_checkpoint(store: Store, run: str, name: str) -> int:
    """Delete one stored checkpoint, manifest first; returns the objects deleted."""
    prefix = f"{run}/{checkpoint_rel(name)}"
    store.delete(f"{prefix}/{MANIFEST_NAME}")
    objects = store.list(prefix + "/")
    for info in objects:
        store.delete(info.key)
    remove_tree = getattr(store, "remove_tree", None)
    if remove_tree is not None:  # file://: the emptied folders too
        remove_tree(prefix)
    return len(objects) + 1


def prune(store: Store, run: str, keep: int, dry_run: bool = False, checkpoints: Optional[list[CheckpointInfo]] = None) -> Plan:
    """Apply ``retention_plan`` to ``run`` in ``store`` (nothing deleted with ``dry_run``)."""
    plan = retention_plan(store.checkpoints(run) if checkpoints is None else checkpoints, keep)
    if not dry_run:
        for ckpt, _ in plan.delete:
            delete_checkpoint(store, run, ckpt.name)
    return plan
