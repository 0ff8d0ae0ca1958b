"""The launcher's hand on the box: mirror a run folder to the store, watch budget and idle time,
and restore a run from the store onto a fresh box.

    python -m launcher.agent mirror  --run_dir runs/NAME --store_config runs/NAME/store.json
    python -m launcher.agent restore --run_dir runs/NAME --store_config runs/NAME/store.json

``mirror`` runs in its own process beside training (same tmux session), so training steps never
wait on an upload; it runs at idle CPU priority (SCHED_IDLE) so training threads come first. Every ``agent.sync_interval`` seconds it
uploads changed small files (logs, metrics, status, config, ...); a background thread uploads
each new checkpoint once its manifest exists (files first, manifest last) and, once, the
prepared ``tokenizer/`` and ``data/`` folders. Each checkpoint is verified in the store before
its manifest marks it complete, then retention (``storage.keep``, launcher/store/retention.py)
deletes the stored checkpoints the run no longer keeps. Unfinished multipart uploads of the run
(a killed agent's) are aborted when the agent starts and after a failed upload. When training ends (status.json says
finished/failed/stopped, its pid is gone, or the tmux window wrote train.exit), or on SIGTERM/SIGINT/SIGHUP, it makes a final flush,
logs "agent: final flush done" and exits 0. Budget: the trainer owns the stop (it ends in
``final/``); the agent acts only when the trainer is hung (spent cost >= ``budget.max_cost`` and
no status.json write for ``agent.hang_minutes``: SIGTERM, then SIGKILL) or gone over budget, and
then ends the run the same way: the newest complete checkpoint becomes ``final/``, state stopped. Idle watch:
after training ends on a rented box with ``agent.shutdown_when_done``, it waits
``agent.idle_minutes`` and terminates the instance through the provider.

``restore`` downloads the latest complete checkpoint that verifies (a corrupt newer one is
skipped, with a line saying which and why), the run's logs and metrics
(metrics cut at the checkpoint's step, so the resumed curve has no duplicates), and the prepared
tokenizer and data when stored.

store.json (written by ``launcher run``; ``store_config_json`` builds it) holds no secrets:
credentials come from the environment (see launcher/secrets.py). No torch here.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from pydantic import Field

from launcher.config import RENTED_KINDS, AgentConfig, StorageConfig
from launcher.store.base import PREPARED, RichProgress, Store, StoreError, TransferProgress, human_bytes
from launcher.store.factory import open_store
from runcontract.atomic import atomic_dir, atomic_write_bytes
from runcontract.budget import spent
from runcontract.errors import UserError, cli_main
from runcontract.manifest import MANIFEST_NAME, Manifest, is_complete, read_manifest, sha256_file
from runcontract.run_files import ProviderRecord, StatusFile, StoreFile, StoreHealth, parse_metrics_line
from runcontract.run_folder import (
    AGENT_LOG, CHECKPOINTS_DIR, CONFIG_FILE, COST_FILE, DATA_META_FILE, ENDED_STATES, EVAL_FILE, FENCED_FILE, FINAL_DIR, FINISHED,
    LOSS_CURVE_FILE, METRICS_FILE, SAMPLES_FILE, STATUS_FILE, STOPPED, STORE_CONFIG_FILE, STORE_HEALTH_FILE, THROUGHPUT_FILE, TRAIN_LOG,
    TOKENIZER_META_FILE, TRAINER_EXIT_FILE, checkpoint_rel, latest_complete_checkpoint,
)

log = logging.getLogger("launcher.agent")

# Run files mirrored every sync; the append-only ones are extended in place where the store can.
APPEND_ONLY = {TRAIN_LOG, METRICS_FILE, AGENT_LOG}
RUN_FILES = (
    CONFIG_FILE, THROUGHPUT_FILE, COST_FILE, METRICS_FILE, TRAIN_LOG, STATUS_FILE,
    SAMPLES_FILE, LOSS_CURVE_FILE, EVAL_FILE, AGENT_LOG,
)
NOT_MIRRORED = {STORE_CONFIG_FILE}
RESTORED_FILES = (CONFIG_FILE, THROUGHPUT_FILE, COST_FILE, METRICS_FILE, TRAIN_LOG, SAMPLES_FILE, EVAL_FILE, LOSS_CURVE_FILE)
SMALL_FILE_LIMIT = 256 * 1024 * 1024
STOP_GRACE_S = 60.0  # between SIGTERM and SIGKILL to a hung trainer (capped at agent.hang_minutes)
PREPARED_DIRS = {"tokenizer": TOKENIZER_META_FILE, "data": DATA_META_FILE}


# ----------------------------------------------------------------------------- store.json
class AgentStoreFile(StoreFile):
    """store.json as the agent reads it: the launcher's storage and agent sections typed."""

    storage: StorageConfig = Field(..., description="Where the run is mirrored.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Sync interval, hang watch, idle shutdown.")
    fence_generation: Optional[int] = Field(None, description="A managed run's fencing generation for this box (launcher/managed/fence.py); null: not managed.")


def store_config_json(config, run_name: str, instance_id: Optional[str], fence_generation: Optional[int] = None) -> str:
    """The agent's store.json for a run: where to store, budget, agent settings, provider, fence. No secrets."""
    kind = config.box.kind if config.box.kind in RENTED_KINDS else None
    return AgentStoreFile(storage=config.storage, run_name=run_name, budget=config.budget, agent=config.agent,
                          provider=ProviderRecord(kind=kind, instance_id=instance_id if kind else None),
                          fence_generation=fence_generation).to_text()


class Fenced(StoreError):
    """The store's fencing generation is newer than this box's: another box owns the run now."""


def load_store_config(path: Path) -> AgentStoreFile:
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist: `launcher run` writes it next to the run; pass --store_config.")
    return AgentStoreFile.read(path)


# ----------------------------------------------------------------------------- helpers
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_status(run_dir: Path) -> tuple[Optional[StatusFile], float]:
    """The run's status.json and its mtime; (None, 0.0) while there is none (or it is not whole)."""
    path = run_dir / STATUS_FILE
    try:
        return StatusFile.read(path), path.stat().st_mtime
    except (OSError, UserError):
        return None, 0.0


def stop_process(pid: int, grace_s: float) -> None:
    """SIGTERM (a trainer honours it at its next step), then SIGKILL after ``grace_s`` (a hung one does not)."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, signum)
        except OSError as exc:
            log.warning("agent: could not send %s to pid %d: %s", signal.Signals(signum).name, pid, exc)
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if not pid_alive(pid):
            return
        log.info("agent: pid %d still runs %.0f s after %s", pid, grace_s, signal.Signals(signum).name)


def promote_to_final(run_dir: Path) -> Optional[Path]:
    """Make the run's newest complete checkpoint its ``final/`` (as the trainer's own budget stop
    would have); returns what was promoted, or None when final/ already is the newest or there is none.
    Files are hard-linked where the filesystem can (checkpoints are never changed in place)."""
    newest = latest_complete_checkpoint(run_dir)
    if newest is None or newest.name == FINAL_DIR:
        return None

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    with atomic_dir(run_dir / FINAL_DIR) as tmp:
        shutil.copytree(newest, tmp, dirs_exist_ok=True, copy_function=link_or_copy)  # the manifest too: same files
    return newest


def setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("launcher.agent")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    for handler in (logging.FileHandler(run_dir / AGENT_LOG), logging.StreamHandler(sys.stdout)):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.propagate = False


class LogProgress(TransferProgress):
    """Upload progress as log lines (the agent's output is a log, not a terminal)."""

    def __init__(self, every: float = 10.0):
        self.every, self.total, self.done, self.name, self.last = every, 0, 0, "", 0.0
        self.lock = threading.Lock()

    def start(self, description: str, total: int) -> None:
        self.name, self.total, self.done, self.last = description, total, 0, time.monotonic()

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.done += nbytes
            if time.monotonic() - self.last >= self.every:
                self.last = time.monotonic()
                log.info("agent: %s: %s / %s", self.name, human_bytes(self.done), human_bytes(self.total))


# ----------------------------------------------------------------------------- mirror
class Mirror:
    def __init__(self, run_dir: Path, store: Store, cfg: AgentStoreFile, project_root: Path, wait_start: float):
        self.run_dir, self.store, self.cfg, self.project_root = run_dir, store, cfg, project_root
        self.run = cfg.run_name
        self.interval = float(cfg.agent.sync_interval)
        self.hang_s = float(cfg.agent.hang_minutes) * 60
        self.wait_start = wait_start
        self.started = time.time()
        self.stop = threading.Event()  # SIGTERM / SIGINT
        self.flush = threading.Event()  # the checkpoint thread's last pass
        self.synced: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) last uploaded
        self.synced_at: dict[str, float] = {}
        self.uploaded: set[tuple[str, float]] = set()  # (checkpoint rel, manifest created)
        self.prepared_done: set[str] = set()
        self.failures = 0
        # upload health (store_health.json): what `launcher status` shows about the store during and after the run
        self.last_upload: Optional[float] = None
        self.file_errors: dict[str, str] = {}  # run file -> why its last upload failed (until one succeeds)
        self.last_error: Optional[tuple[float, str]] = None
        self.budget_hit = False
        self.worker_error: Optional[str] = None
        self.keep = int(cfg.storage.keep)
        self.fenced = False

    # -- the fence: a stale box (declared lost, then back) writes nothing more ----------------
    def check_fence(self) -> None:
        """Raise Fenced (once stale: marker for the trainer, trainer stopped) when another box owns the run.
        A run that is not managed has no generation and is never fenced (no store read)."""
        from launcher.managed.fence import is_current, read_generation

        generation = self.cfg.fence_generation
        if generation is None:
            return
        if self.fenced or not is_current(self.store, self.run, generation):
            if not self.fenced:
                self.fenced = True
                log.error("agent: the store's fencing generation is %d, this box's is %d: another box owns run %s now; "
                          "this box writes nothing more and stops its trainer", read_generation(self.store, self.run), generation, self.run)
                atomic_write_bytes(self.run_dir / FENCED_FILE, b"stale fencing generation\n")
                self.stop.set()
                status, _ = read_status(self.run_dir)
                if status is not None and status.pid and pid_alive(status.pid):
                    threading.Thread(target=stop_process, args=(status.pid, STOP_GRACE_S), daemon=True).start()
            raise Fenced(f"run {self.run} is fenced: another box owns it")

    def fence_ok(self) -> bool:
        try:
            self.check_fence()
            return True
        except Fenced:
            return False
        except Exception as exc:  # the store being unreachable is not a fence: the upload itself will fail and retry
            log.warning("agent: could not read the fencing generation: %s", exc)
            return True

    # -- small files -----------------------------------------------------------
    def sync_small(self, force: bool = False) -> None:
        if not self.fence_ok():
            return
        failed: Optional[str] = None  # the store failed this pass: the files after it wait for the next one
        for path in sorted(self.run_dir.iterdir()):
            name = path.name
            if name.startswith(".") or name in NOT_MIRRORED or not path.is_file():
                continue
            try:
                st = path.stat()
                if st.st_size > SMALL_FILE_LIMIT and name not in RUN_FILES:
                    continue
                sig = (st.st_size, st.st_mtime_ns)
                if self.synced.get(name) == sig:
                    continue
                if failed is not None:
                    # a dead store costs the client's whole retry time per request: one such wait per pass,
                    # so the watches (training ended, a hung trainer over budget) keep running
                    self.file_errors.setdefault(name, f"not tried: the upload of {failed} failed in the same pass")
                    continue
                # bounded re-uploads of growing files: one per interval per 4 MB
                gap = self.interval * max(1, st.st_size // (4 * 1024 * 1024))
                if not force and time.monotonic() - self.synced_at.get(name, -1e9) < gap:
                    continue
                data = path.read_bytes()  # a snapshot: the trainer may be appending
                self.store.sync_bytes(f"{self.run}/{name}", data, append=name in APPEND_ONLY)
                self.synced[name] = (len(data), st.st_mtime_ns) if len(data) == st.st_size else (len(data), 0)
                self.synced_at[name] = time.monotonic()
                self.uploaded_ok()
                self.file_errors.pop(name, None)
            except FileNotFoundError:
                self.file_errors.pop(name, None)  # gone: nothing left to store
                continue
            except Exception as exc:  # a store hiccup must not kill the mirror
                self.failures += 1
                self.file_errors[name] = str(exc)
                self.upload_failed(f"{name}: {exc}")
                failed = name
                log.warning("agent: could not upload %s: %s (will retry)", name, exc)

    # -- upload health ---------------------------------------------------------
    def uploaded_ok(self) -> None:
        self.last_upload = time.time()

    def upload_failed(self, why: str) -> None:
        self.last_error = (time.time(), why)

    def write_health(self, ended: bool = False) -> StoreHealth:
        """store_health.json: the last successful upload, what waits, the last unresolved error (at the
        end: what is not stored). Written locally: it must be readable when the store is not."""
        waiting_checkpoints = [p.name for p in self.pending_checkpoints()]
        unresolved = bool(self.file_errors or self.worker_error)
        error_at, error = self.last_error if (self.last_error and unresolved) else (None, None)
        health = StoreHealth(store=self.store.describe(self.run), last_upload=self.last_upload, waiting_files=sorted(self.file_errors),
                             waiting_checkpoints=waiting_checkpoints, last_error=error, last_error_at=error_at, ended=ended,
                             updated=time.time())
        try:
            health.write(self.run_dir / STORE_HEALTH_FILE)
        except OSError as exc:
            log.warning("agent: could not write %s: %s", STORE_HEALTH_FILE, exc)
        return health

    # -- checkpoints and prepared data -----------------------------------------
    def pending_checkpoints(self) -> list[Path]:
        folders = []
        ckpt_root = self.run_dir / CHECKPOINTS_DIR
        if ckpt_root.is_dir():
            folders += [p for p in ckpt_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if (self.run_dir / FINAL_DIR).is_dir():
            folders.append(self.run_dir / FINAL_DIR)
        result = []
        for folder in folders:
            if not (folder / MANIFEST_NAME).is_file():
                continue  # still being written
            try:
                checkpoint_rel(folder.name)
                created = read_manifest(folder).created
            except UserError:
                continue
            if (folder.name, created) not in self.uploaded:
                result.append(folder)

        def order(p: Path):
            return (p.name == FINAL_DIR, p.name)

        return sorted(result, key=order)

    def upload_checkpoints(self) -> None:
        for folder in self.pending_checkpoints():
            if not self.fence_ok():
                return
            try:
                manifest = read_manifest(folder)
                if self.pruned_on_arrival(folder, manifest):
                    log.info("agent: checkpoint %s is older than the %d kept in the store (storage.keep); not uploaded", folder.name, self.keep)
                    self.uploaded.add((folder.name, manifest.created))
                    continue
                log.info("agent: uploading checkpoint %s (%s) to %s", folder.name, human_bytes(manifest.total_bytes), self.store.describe(f"{self.run}/{checkpoint_rel(folder.name)}"))
                started = time.monotonic()
                sent = self.store.upload_checkpoint(self.run, folder, progress=LogProgress(), before_manifest=self.check_fence)  # verified before its manifest goes up
                self.uploaded.add((folder.name, manifest.created))
                self.uploaded_ok()
                took = time.monotonic() - started
                log.info("agent: checkpoint %s stored and verified (%s sent in %.1fs)", folder.name, human_bytes(sent), took)
                self.apply_retention()
            except Fenced:
                log.error("agent: checkpoint %s not made complete in the store: this box is fenced", folder.name)
                return
            except FileNotFoundError:
                log.info("agent: checkpoint %s vanished before its upload finished (pruned by the trainer); skipped", folder.name)
            except Exception as exc:
                self.failures += 1
                self.worker_error = f"{folder.name}: {exc}"
                self.upload_failed(self.worker_error)
                log.warning("agent: upload of checkpoint %s failed: %s (will retry)", folder.name, exc)
                self.abort_stale_uploads()

    def abort_stale_uploads(self) -> None:
        """Unfinished multipart uploads of this run are billed and invisible: abort them (only
        called when no upload of this agent is running: at start and after a failed upload).
        A fenced box leaves them alone: they may be the current box's."""
        if not self.fence_ok():
            return
        try:
            aborted = self.store.abort_stale_uploads(f"{self.run}/")
        except Exception as exc:
            log.warning("agent: could not list or abort unfinished uploads: %s (a bucket lifecycle rule cleans them up; see the README)", exc)
            return
        for key in aborted:
            log.info("agent: aborted an unfinished upload of %s", key)

    def pruned_on_arrival(self, folder: Path, manifest: Manifest) -> bool:
        """An old local checkpoint that retention would delete as soon as it is stored."""
        if folder.name == FINAL_DIR:
            return False
        from launcher.store.base import CheckpointInfo
        from launcher.store.retention import would_be_pruned

        val_loss = manifest.meta.get("val_loss")
        candidate = CheckpointInfo(self.run, folder.name, int(manifest.meta.get("step", -1)), manifest.total_bytes, manifest.created, True,
                                   float(val_loss) if isinstance(val_loss, (int, float)) else None)
        return would_be_pruned(self.store.checkpoints(self.run), candidate, self.keep)

    def apply_retention(self) -> None:
        from launcher.store.retention import prune

        plan = prune(self.store, self.run, self.keep)
        for ckpt, why in plan.delete:
            log.info("agent: deleted stored checkpoint %s (%s, %s freed; storage.keep: %d)", ckpt.name, why, human_bytes(ckpt.size_bytes), self.keep)

    def upload_prepared(self) -> None:
        if not self.fence_ok():
            return
        for sub, meta_name in PREPARED_DIRS.items():
            local = self.project_root / sub
            if sub in self.prepared_done or not (local / meta_name).is_file():
                continue
            prefix = f"{self.run}/{PREPARED}/{sub}"
            try:
                stored = self.store.read_manifest(prefix)
                meta_sha = sha256_file(local / meta_name)
                if stored is not None and stored.files.get(meta_name, {}).get("sha256") == meta_sha and self.store.tree_complete(prefix, stored):
                    self.prepared_done.add(sub)
                    continue
                manifest = Manifest(meta={"kind": sub}, created=time.time())
                for path in sorted(local.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):
                        rel = path.relative_to(local).as_posix()
                        manifest.files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
                log.info("agent: uploading prepared %s/ (%s) once", sub, human_bytes(manifest.total_bytes))
                self.store.upload_tree(local, prefix, manifest, progress=LogProgress())
                self.prepared_done.add(sub)
                self.uploaded_ok()
                log.info("agent: prepared %s/ stored", sub)
            except Exception as exc:
                self.failures += 1
                self.upload_failed(f"prepared {sub}/: {exc}")
                log.warning("agent: upload of prepared %s/ failed: %s (will retry)", sub, exc)

    def worker(self) -> None:
        while True:
            last = self.flush.is_set()
            self.worker_error = None
            self.upload_checkpoints()
            self.upload_prepared()
            if last:
                return
            self.flush.wait(self.interval)

    # -- watches ---------------------------------------------------------------
    def training_ended(self) -> Optional[str]:
        exit_file = self.run_dir / TRAINER_EXIT_FILE  # the tmux train window writes the trainer's exit code
        try:
            if exit_file.stat().st_mtime >= self.started - 2:
                return f"trainer exited with code {exit_file.read_text().strip() or '?'}"
        except OSError:
            pass
        status, mtime = read_status(self.run_dir)
        if status is None or mtime < self.started - 2:
            if time.time() - self.started > self.wait_start:
                if status is None:
                    return f"no status.json from the trainer after {self.wait_start:.0f}s"
            else:
                return None  # a previous run's status, or the trainer has not started yet
        if status.state in ENDED_STATES:
            return f"training {status.state}"
        pid = status.pid
        if pid is not None and pid > 0 and not pid_alive(pid):
            return f"trainer pid {pid} is gone"
        return None

    # -- the budget: the trainer stops itself (final/); the agent acts only for a hung or dead one
    def spent_now(self, status: StatusFile, mtime: float) -> float:
        """$ spent by now: the trainer's last figure, plus the box's price since it wrote it."""
        rate = self.cfg.budget.hourly_rate
        at_write = status.cost_spent if status.cost_spent is not None else spent(status.elapsed_s or 0.0, rate)
        return at_write + spent(max(0.0, time.time() - (status.updated or mtime)), rate)

    def watch_hung_trainer(self) -> None:
        """A trainer over budget whose status.json has not moved for ``agent.hang_minutes`` is hung:
        stop it (it then ends as below). A live one that writes progress stops itself."""
        if self.budget_hit:
            return
        status, mtime = read_status(self.run_dir)
        if status is None or status.state != "running" or not status.pid or mtime < self.started - 2 or not pid_alive(status.pid):
            return
        stale = time.time() - (status.updated or mtime)
        cost = self.spent_now(status, mtime)
        if stale < self.hang_s or not self.cfg.budget.reached(cost):
            return
        self.budget_hit = True
        log.info("agent: spent $%.2f >= max_cost $%.2f and the trainer (pid %d) wrote no status for %.0f s: it is hung; stopping it",
                 cost, self.cfg.budget.max_cost, status.pid, stale)
        stop_process(status.pid, grace_s=min(STOP_GRACE_S, self.hang_s))

    def end_over_budget(self) -> None:
        """The trainer is gone (or was stopped above) over budget without its own final/: end the run
        as the trainer's budget stop would, in final/ (the newest complete checkpoint) and state stopped."""
        status, mtime = read_status(self.run_dir)
        if status is None or status.state == FINISHED:
            return
        if not self.budget_hit:
            if status.state != "running" or not self.cfg.budget.reached(self.spent_now(status, mtime)):
                return  # it ended on its own terms, never trained, or died under budget (a failure, not a budget stop)
            self.budget_hit = True
            log.info("agent: the trainer is gone and the budget is spent ($%.2f of max_cost $%.2f)", self.spent_now(status, mtime), self.cfg.budget.max_cost)
        try:
            promoted = promote_to_final(self.run_dir)
        except OSError as exc:
            log.error("agent: could not make the newest checkpoint final/: %s", exc)
            promoted = None
        if promoted is not None:
            log.info("agent: budget reached: the newest complete checkpoint %s is now %s/ (the model the budget bought)", promoted.name, FINAL_DIR)
        if status.state not in ENDED_STATES:
            ended = status.model_copy(update={"state": STOPPED, "phase": STOPPED, "progress": f"{STOPPED} during {status.phase or 'training'}",
                                              "updated": time.time()})
            ended.write(self.run_dir / STATUS_FILE)

    def terminate_instance(self, why: str) -> None:
        # the provider recorded with the instance (store.json is written from the record, which
        # `launcher run` checked against its config); its own API base when the record names one
        provider = self.cfg.provider
        kind, instance_id = provider.kind, provider.instance_id
        log.info("agent: %s: terminating %s instance %s", why, kind, instance_id)
        try:
            from launcher.providers import terminate_by_id

            terminate_by_id(kind, instance_id, provider.api_base)  # returns only once confirmed gone
            log.info("agent: %s confirmed instance %s is gone: billing stopped", kind, instance_id)
        except Exception as exc:
            log.error("agent: could not terminate %s instance %s: %s. It may still be running: terminate it to stop charges.", kind, instance_id, exc)

    # -- the loop --------------------------------------------------------------
    def loop(self) -> int:
        log.info("agent: mirroring %s to %s every %.0fs", self.run_dir, self.store.describe(self.run), self.interval)
        self.abort_stale_uploads()  # a killed agent's multipart uploads
        worker = threading.Thread(target=self.worker, name="checkpoint-uploads", daemon=True)
        worker.start()
        reason = None
        while not self.stop.is_set():
            self.sync_small()
            self.write_health()
            reason = self.training_ended()
            if reason:
                self.end_over_budget()
                break
            self.watch_hung_trainer()
            self.stop.wait(self.interval)
        if self.fenced:
            self.flush.set()
            worker.join()
            log.error("agent: fenced: another box owns run %s; this box wrote nothing more to the store", self.run)
            return 3
        reason = reason or "stopped by signal"
        log.info("agent: %s; final flush", reason)
        self.flush.set()
        worker.join()
        if self.worker_error:  # one more try for what failed in the last pass
            self.upload_checkpoints()
            self.upload_prepared()
        self.sync_small(force=True)
        health = self.write_health(ended=True)
        incomplete = health.waiting_checkpoints + health.waiting_files
        if incomplete:
            log.error("agent: final flush incomplete: %s not stored in %s (last error: %s); they are only on this box",
                      ", ".join(incomplete), self.store.describe(self.run), health.last_error or "see the warnings above")
        else:
            log.info("agent: final flush done")
        self.sync_small(force=True)  # agent.log with the line above
        if self.cfg.provider.kind and self.cfg.provider.instance_id:
            if self.budget_hit:
                self.terminate_instance("budget reached")
            elif self.cfg.agent.shutdown_when_done and not self.stop.is_set():
                minutes = float(self.cfg.agent.idle_minutes)
                log.info("agent: training ended; shutting the box down after %.0f idle minutes", minutes)
                self.sync_small(force=True)
                if not self.stop.wait(minutes * 60):
                    self.terminate_instance(f"idle for {minutes:.0f} minutes after training ended")
                else:
                    log.info("agent: stopped during the idle wait; the box stays up")
            self.sync_small(force=True)
        return 1 if incomplete else 0


# ----------------------------------------------------------------------------- restore
def restore(run_dir: Path, store: Store, run: str, project_root: Path, progress: TransferProgress) -> list[str]:
    restored: list[str] = []
    ckpt = store.latest_checkpoint(run)  # the newest step (final/ when it is the newest): no finished step is redone
    if ckpt is not None:
        target = run_dir / ckpt.rel
        if target.is_dir() and is_complete(target, check_hashes=False):
            print(f"checkpoint {ckpt.name} (step {ckpt.step}) is already here")
        else:
            def skipped(bad, why: str) -> None:
                print(f"skipped stored checkpoint {bad.name} (step {bad.step}): {why}", flush=True)

            def target_of(c):
                folder = run_dir / c.rel
                if folder.exists() and not is_complete(folder, check_hashes=False):
                    import shutil

                    shutil.rmtree(folder)  # an incomplete local copy: the stored one replaces it
                return folder

            found = store.download_newest_verified(run, target_of, progress=progress, on_skip=skipped)
            if found is None:
                raise StoreError(f"no stored checkpoint of run {run!r} verifies (see the lines above): every complete one has a "
                                 f"corrupt or missing file in {store.describe(run)}. Start the run afresh, or repair the store from a copy.")
            ckpt, target = found
            restored.append(f"checkpoint {ckpt.name} (step {ckpt.step}, {human_bytes(ckpt.size_bytes)}, sha256 verified) -> {target}")
    for name in RESTORED_FILES:
        local = run_dir / name
        if local.exists():
            continue
        data = store.read_bytes(f"{run}/{name}")
        if data is None:
            continue
        if name == METRICS_FILE and ckpt is not None:
            data = _metrics_until(data, ckpt.step)
        atomic_write_bytes(local, data)
        restored.append(f"{name} ({human_bytes(len(data))})")
    for sub, meta_name in PREPARED_DIRS.items():
        local = project_root / sub
        prefix = f"{run}/{PREPARED}/{sub}"
        if (local / meta_name).is_file() or store.read_manifest(prefix) is None:
            continue
        manifest = store.download_tree(prefix, local, progress=progress, keep_manifest=False, merge=True)
        restored.append(f"prepared {sub}/ ({human_bytes(manifest.total_bytes)}, sha256 verified) -> {local}")
    return restored


def _metrics_until(data: bytes, step: int) -> bytes:
    """Lines logged after the checkpoint's step are dropped: the resumed run logs them again."""
    kept = []
    for line in data.decode("utf-8", errors="replace").splitlines(keepends=True):
        try:
            record = parse_metrics_line(line)
        except ValueError:
            continue  # a torn last line
        if record is not None and record.step > step:
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept).encode()


def yield_cpu() -> str:
    """Give training the CPU first: SCHED_IDLE (Linux: run only on otherwise idle CPU time), else
    nice 19. ``LLMBOX_AGENT_SCHED=nice`` keeps the ordinary scheduler at nice 10."""
    if os.environ.get("LLMBOX_AGENT_SCHED", "idle") == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:
            pass
    try:
        os.nice(19 if os.environ.get("LLMBOX_AGENT_SCHED", "idle") == "idle" else 10)
    except OSError:
        pass
    return f"nice {os.nice(0)}"


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher.agent", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (("mirror", "mirror the run folder to the store until training ends"), ("restore", "restore a run from the store before resuming"),
                       ("probe", "check that the store takes the run: write, read back and delete a probe object under <run>/")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run_dir", required=True, help="The run folder, e.g. runs/NAME.")
        p.add_argument("--store_config", required=True, help="store.json written by launcher run.")
        p.add_argument("--project_root", default=".", help="Project folder: file:// stores and tokenizer/, data/ are relative to it.")
        if name == "mirror":
            p.add_argument("--wait_start", type=float, default=600.0, help="Seconds to wait for a fresh status.json before treating the trainer as gone.")
    return parser


@cli_main
def main(argv: Optional[list[str]] = None) -> None:
    args = _parser().parse_args(argv)
    run_dir, project_root = Path(args.run_dir), Path(args.project_root).resolve()
    cfg = load_store_config(Path(args.store_config))
    store = open_store(cfg.storage, project_root)
    if args.action == "probe":
        from launcher.store.probe import probe_store

        probe_store(store, cfg.run_name, "the box")
        print(f"store {store.describe(cfg.run_name)}: write, read-back and delete work from the box")
        return
    if args.action == "restore":
        progress = RichProgress() if sys.stderr.isatty() else TransferProgress()
        restored = restore(run_dir, store, cfg.run_name, project_root, progress)
        if not restored:
            print(f"nothing stored for run {cfg.run_name} (in {store.describe(cfg.run_name)})")
        for line in restored:
            print(f"restored {line}")
        return
    setup_logging(run_dir)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: dump every thread's stack
    priority = yield_cpu()
    mirror = Mirror(run_dir, store, cfg, project_root, args.wait_start)
    log.info("agent: pid %d, CPU priority %s", os.getpid(), priority)

    def on_signal(signum, frame):
        log.info("agent: got %s", signal.Signals(signum).name)
        mirror.stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: the tmux session was killed
        signal.signal(signum, on_signal)
    sys.exit(mirror.loop())


if __name__ == "__main__":
    main()
