"""The fencing generation of a managed run: never two trainers writing one run.

    <store>/<run>/fence.json   {"generation": N, "box": "<provider> <id>", "at": <unix time>}

The controller is the only writer: before it starts the run on a new box it raises the
generation by one and hands the new number to that box (store.json's ``fence_generation``).
The box's agent is the only thing that writes the run into the store, and it reads this object
before every checkpoint upload, again right before the checkpoint's manifest (the object that
makes a stored checkpoint complete, and so resumable) and at every mirror pass. A box whose
generation is older than the stored one is stale (a box declared lost that came back): its
agent writes nothing more, leaves ``runs/<run>/fenced`` for the trainer (which then writes no
further checkpoint) and stops the trainer. What is left is one store PUT between the last
check and the manifest; the controller raises the generation only after the old box was ended
through its provider, so a stale box normally has no processes left to race with.
"""
from __future__ import annotations

import json
import time
from typing import Optional

from launcher.store.base import Store
from runcontract.run_folder import FENCE_FILE


def fence_key(run: str) -> str:
    return f"{run}/{FENCE_FILE}"


def read_generation(store: Store, run: str) -> int:
    """The run's current generation (0 when the run was never managed)."""
    data = store.read_bytes(fence_key(run))
    if not data:
        return 0
    try:
        return int(json.loads(data.decode("utf-8")).get("generation", 0))
    except (ValueError, AttributeError, UnicodeDecodeError):
        return 0


def advance(store: Store, run: str, box: str) -> int:
    """Raise the generation by one for the box about to start; returns the new generation."""
    generation = read_generation(store, run) + 1
    store.write_bytes(fence_key(run), json.dumps({"generation": generation, "box": box, "at": time.time()}).encode())
    return generation


def is_current(store: Store, run: str, generation: Optional[int]) -> bool:
    """Whether a box holding ``generation`` may still write (a run that is not managed always may)."""
    return generation is None or read_generation(store, run) <= generation
