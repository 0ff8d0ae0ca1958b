"""What is wrong with a managed run right now, from what the provider, SSH and status.json say.

A pure function (no I/O), so every case is a table test:

    BOX_LOST      the provider says stopped, exited, gone or outbid; or SSH has been unreachable
                  for longer than managed.ssh_grace_s; or the run folder is gone from a box that
                  answers (its disk was wiped or replaced)   -> end the box, rent the next
    TRAINER_HUNG  status.json older than managed.hang_s while the box answers -> the same
    RUN_FAILED    the trainer exited non-zero (or its process is gone) in a failure phase
                  -> retried once on the same box; the same failure twice stops everything
    FINISHED      the run finished                              -> end the box, done
    HEALTHY       training (or its stages) going on; also SSH down within the grace period
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from launcher.providers.base import STOPPED, TERMINATED, Instance
from runcontract.run_files import StatusFile
from runcontract.run_folder import FAILED, FINISHED as FINISHED_STATE, STOPPED as STOPPED_STATE

HEALTHY, FINISHED, BOX_LOST, TRAINER_HUNG, RUN_FAILED = "healthy", "finished", "box lost", "trainer hung", "run failed"


@dataclass
class Diagnosis:
    kind: str
    reason: str
    signature: Optional[str] = None  # RUN_FAILED: what makes two failures "the same" (phase, exit code)


@dataclass
class Observation:
    """One look at the run: ``instance`` None means the provider says it no longer exists;
    ``provider_error`` set means the provider could not be asked (not a verdict)."""

    instance: Optional[Instance]
    provider_error: Optional[str] = None
    ssh_ok: bool = True
    ssh_down_for_s: float = 0.0
    status: Optional[StatusFile] = None
    session_alive: bool = False
    exit_code: Optional[int] = None
    status_age_s: Optional[float] = None
    stderr_tail: str = ""
    trainer_traces: bool = True  # the run folder holds the started trainer's files (status, exit code or stderr log)


def diagnose(obs: Observation, ssh_grace_s: float, hang_s: float) -> Diagnosis:
    if obs.provider_error is None:
        if obs.instance is None:
            return Diagnosis(BOX_LOST, "the provider says the instance is gone (host vanished or reclaimed)")
        if obs.instance.state in (STOPPED, TERMINATED):
            raw = obs.instance.raw_state or obs.instance.state
            return Diagnosis(BOX_LOST, f"the provider says the instance is {raw} (preempted, outbid or its host died)")
    if not obs.ssh_ok:
        if obs.ssh_down_for_s >= ssh_grace_s:
            return Diagnosis(BOX_LOST, f"SSH unreachable for {obs.ssh_down_for_s:.0f} s (grace {ssh_grace_s:.0f} s)")
        return Diagnosis(HEALTHY, f"SSH unreachable for {obs.ssh_down_for_s:.0f} s, within the grace period")
    status = obs.status
    state = status.state if status is not None else None
    if state == FINISHED_STATE:
        return Diagnosis(FINISHED, "the run finished")
    failed_exit = obs.exit_code is not None and obs.exit_code != 0 and not obs.session_alive
    if status is None and not obs.session_alive and not obs.trainer_traces:
        return Diagnosis(BOX_LOST, "the run folder is gone from the box (its disk was wiped or replaced)")
    vanished = not obs.session_alive and (state in ("running", "preparing") or status is None)  # started, now neither process nor status
    if state in (FAILED, STOPPED_STATE) or failed_exit or vanished:
        phase = (status.phase if status is not None else None) or "start"
        progress = (status.progress if status is not None else None) or ""
        last = obs.stderr_tail.strip().splitlines()[-1] if obs.stderr_tail.strip() else ""
        signature = f"{phase}|{obs.exit_code}|{last}"
        what = f"exit code {obs.exit_code}" if obs.exit_code is not None else (state or "process gone")
        return Diagnosis(RUN_FAILED, f"the trainer failed ({what}) {progress or 'during ' + phase}"
                         + (f": {last}" if last else ""), signature)
    if state == "running" and obs.status_age_s is not None and obs.status_age_s >= hang_s:
        return Diagnosis(TRAINER_HUNG, f"status.json not written for {obs.status_age_s:.0f} s while the box answers "
                         f"(limit {hang_s:.0f} s)")
    return Diagnosis(HEALTHY, state or "starting")
