"""Whether a store can hold a run: write, read back and delete one small probe object under
``<run>/``, from wherever the run will store from.

`launcher run` probes from this machine before any stage runs, and from the box (``python -m
launcher.agent probe``) before the trainer starts: a store that is down, refuses the
credentials or drops writes is one clear error before training, never a run that trains and
stores nothing."""
from __future__ import annotations

import time
import uuid

from launcher.store.base import Store, StoreError

PROBE_NAME = ".llmbox-probe-"  # <run>/.llmbox-probe-<hex>: deleted by the probe itself


def probe_store(store: Store, run: str, where: str) -> None:
    """Raise one StoreError paragraph (the store, its endpoint, the step that failed and why) unless
    an object written under ``<run>/`` reads back the same and can be deleted."""
    key = f"{run}/{PROBE_NAME}{uuid.uuid4().hex[:12]}"
    payload = f"llm-box store probe from {where} at {time.time():.3f}\n".encode()
    step = "write"
    try:
        store.write_bytes(key, payload)
        step = "read-back"
        got = store.read_bytes(key)
        if got != payload:
            raise StoreError(f"it returned {'no object' if got is None else f'{len(got)} other bytes'} instead of the "
                             f"{len(payload)} bytes just written")
        step = "delete"
        store.delete(key)
    except Exception as exc:  # any failure is the answer: the store cannot take this run
        endpoint = f" (endpoint {store.endpoint})" if store.endpoint else ""
        raise StoreError(
            f"the store {store.describe(run)}{endpoint} cannot hold run {run!r}, checked from {where}: the probe's {step} "
            f"failed: {exc} Nothing was started. Check that the store is up and reachable from {where}, storage.url"
            f"{' and storage.endpoint_url' if store.endpoint else ''}, and the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or storage.profile); then run again."
        ) from None
