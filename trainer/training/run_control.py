"""Keeping a run's processes in step: the run-folder lock, stop signals, errors found on the
main rank only (the run's states and phases are named in runcontract.run_folder).
"""
from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path
from typing import Callable, Optional

from runcontract.errors import UserError


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run folder for the life of the process."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        raise UserError(f"another trainer is using {run_dir} (pid {handle.read().strip() or 'unknown'}); stop it first or use another train.run_name.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class StopSignals:
    """SIGTERM / SIGINT set a flag that the loop reads at the next step boundary; a second
    Ctrl-C interrupts at once."""

    def __init__(self, log: Callable[[str], None]):
        self.requested: Optional[str] = None
        self._log = log
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._log(f"{self.requested} received: stopping at the end of this step with a checkpoint (Ctrl-C again to abort now)")

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def share_main_result(accelerator, fn: Callable[[], object]):
    """Run ``fn`` on the main process only; a UserError there is raised on every rank (so no rank
    waits forever in a collective for one that has exited)."""
    from accelerate.utils import broadcast_object_list

    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except UserError as exc:
            error = exc
    if accelerator.num_processes > 1:
        box = [(type(error), str(error)) if error is not None else None]
        broadcast_object_list(box, from_process=0)
        if box[0] is not None and error is None:
            error = box[0][0](box[0][1])
    if error is not None:
        raise error
    return result
