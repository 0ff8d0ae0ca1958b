"""What a run writes as it goes: train.log (also printed), metrics.jsonl, status.json.

Only the main process writes; on other ranks every method does nothing, so callers need no
``if is_main`` of their own.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from runcontract.errors import UserError
from runcontract.run_files import MetricsRecord, StatusFile, metrics_line
from runcontract.run_folder import ENDED_STATES, FINISHED, LOSS_CURVE_FILE, METRICS_FILE, SAMPLES_FILE, STATUS_FILE, TRAIN_LOG


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._log_file = None
        self._console = True
        self.phase_name = "setup"  # status.json's "phase": what the run is doing now (docs/status-json.md)
        self._status_fields: dict = {}
        self.tracker_sink: Optional[Callable[[dict], None]] = None  # TensorBoard / W&B (trainer/training/trackers.py)
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.run_dir / TRAIN_LOG, "a", encoding="utf-8", buffering=1)

    def log(self, message: str) -> None:
        """A human line: to stdout and train.log, stamped with the wall-clock time."""
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        self._log_file.write(line + "\n")
        if self._console:
            try:
                print(line, flush=True)
            except OSError:  # the terminal went away (closed pipe, dropped SSH): keep training, keep train.log
                self._console = False

    def error(self, message: str) -> None:
        """Into train.log only: errors go to stderr through runcontract.errors.cli_main."""
        if self.enabled:
            self._log_file.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] error: {message}\n")

    def metrics(self, record: MetricsRecord) -> None:
        """One line in metrics.jsonl (runcontract.run_files: TrainMetrics or EvalMetrics); also to the trackers."""
        if not self.enabled:
            return
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(metrics_line(record))
        if self.tracker_sink is not None:
            self.tracker_sink(record.model_dump())

    def status(self, state: str, **fields) -> None:
        """Replace status.json (read by ``launcher status``) in one rename. An ended state is also the phase."""
        if not self.enabled:
            return
        progress = None
        if state in ENDED_STATES:
            if state != FINISHED and self.phase_name not in ENDED_STATES:
                progress = f"{state} during {self.phase_name}"  # the phase it ended in stays readable
            self.phase_name = state
        self._status_fields = fields
        self._state = state
        self._write_status(progress)

    def phase(self, name: str, progress: Optional[str] = None) -> None:
        """Enter a phase (or report progress in it): status.json keeps the last figures, with the new phase."""
        if not self.enabled:
            return
        self.phase_name = name
        self._write_status(progress)

    def end_before_training(self, state: str, progress: str) -> None:
        """End a run that never got to train (a refused resume): status.json keeps the figures the
        last run left there, with this ended state and ``progress`` saying why."""
        if not self.enabled:
            return
        try:
            previous = StatusFile.read(self.run_dir / STATUS_FILE).to_json()
        except UserError:
            previous = {}
        self.phase_name = state
        StatusFile(**{**previous, "state": state, "phase": state, "progress": progress, "updated": time.time(),
                      "pid": os.getpid()}).write(self.run_dir / STATUS_FILE)

    def _write_status(self, progress: Optional[str]) -> None:
        StatusFile(state=getattr(self, "_state", "running"), phase=self.phase_name, progress=progress,
                   **self._status_fields, updated=time.time(), pid=os.getpid()).write(self.run_dir / STATUS_FILE)

    def append_sample(self, text: str) -> None:
        if self.enabled:
            with open(self.run_dir / SAMPLES_FILE, "a", encoding="utf-8") as f:
                f.write(text.rstrip("\n") + "\n\n")

    def plot_loss_curve(self) -> None:
        """Redraw runs/<name>/loss_curve.png from metrics.jsonl; a plotting failure only warns."""
        if not self.enabled:
            return
        try:
            from trainer.evaluation.loss_plot import plot_loss_curve  # lazy: matplotlib is slow to import

            plot_loss_curve(self.run_dir / METRICS_FILE, self.run_dir / LOSS_CURVE_FILE)
        except Exception as exc:  # noqa: BLE001 - a plot must never stop training
            self.log(f"warning: could not draw loss_curve.png ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_line(step: int, max_steps: int, loss: float, lr: float, grad_norm: float, tokens_per_sec: float,
               mfu: Optional[float], elapsed_s: float, cost: float) -> str:
    mfu_text = f" | MFU {100 * mfu:.1f}%" if mfu is not None else ""
    return (f"step {step}/{max_steps} | loss {loss:.4f} | lr {lr:.3e} | grad norm {grad_norm:.3f} | "
            f"{tokens_per_sec:,.0f} tok/s{mfu_text} | {format_duration(elapsed_s)} | ${cost:.2f}")


