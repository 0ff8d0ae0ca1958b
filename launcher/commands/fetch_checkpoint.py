"""``launcher fetch-checkpoint``: download a complete checkpoint from the store, verified.

    launcher fetch-checkpoint                       # the run's latest complete checkpoint
    launcher fetch-checkpoint --step 500 --out ckpt # a given step, into ckpt/
    launcher fetch-checkpoint --list                # step, size, date of every stored checkpoint, the run's total

Files go to a temporary folder next to --out and every sha256 is checked against the
checkpoint's manifest; the folder is renamed to --out only when all match. An interrupted
download keeps its temporary folder and the next call downloads only what is missing.
Without --step, a latest checkpoint that does not verify is skipped (saying which and why)
and the next older complete one is fetched. A checkpoint whose manifest is missing may still be
uploading (fetch waits, bounded, for the one training ended at); one whose manifest is there but
unreadable will not mend: it is skipped at once, saying why.
The run's report card (report.json, report.md: docs/report-card.md), when the store has it, is
written beside the checkpoint folder.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from launcher.store.base import RichProgress, human_bytes, format_time
from launcher.store.factory import open_store
from runcontract.errors import UserError
from runcontract.run_files import StatusFile
from runcontract.atomic import atomic_write_bytes
from runcontract.run_folder import FINAL_DIR, FINISHED, REPORT_JSON, REPORT_MD, STATUS_FILE, STOPPED, recency


@click.command("fetch-checkpoint")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="Launcher config (default: the last run's, else configs/quickstart.yaml).")
@click.option("--run", "run_name", default=None, help="Run name (default: the last `launcher run`'s, unless --config names another config: then its run.name).")
@click.option("--step", type=int, default=None, help="Fetch the checkpoint of this step.")
@click.option("--latest", is_flag=True, help="Fetch the newest complete checkpoint (the default).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Destination folder (default: checkpoints/<run>/<checkpoint>).")
@click.option("--list", "list_only", is_flag=True, help="List the run's stored checkpoints instead.")
def command(config_path, run_name, step, latest, out_dir, list_only) -> None:
    """Download a complete checkpoint from the store (sha256-verified, resumable)."""
    from launcher.state import load_command_context, run_name as recorded_run

    if step is not None and latest:
        raise UserError("give either --step N or --latest, not both.")
    root = Path.cwd()
    config, _, state = load_command_context(root, config_path)
    run = run_name or _run_of(config, config_path, state, root, recorded_run)
    store = open_store(config.storage, root)
    checkpoints = store.checkpoints(run)
    if list_only:
        _print_list(store, run, checkpoints)
        return
    if step is None:
        chosen = _latest_once_uploaded(store, run)
        if chosen is None:
            what = "only incomplete checkpoints" if checkpoints else "no checkpoints"
            raise UserError(f"run {run!r} has {what} in {store.describe(run)}; check --run, or wait for the first checkpoint upload.")
        candidates = [c for c in store.checkpoints(run) if c.complete and recency(c.step, c.name) <= recency(chosen.step, chosen.name)]

        def target(c):
            click.echo(f"fetching {run}/{c.rel} (step {c.step}, {human_bytes(c.size_bytes)}) from {store.describe(run)}")
            return Path(out_dir) if out_dir else Path("checkpoints") / run / c.name

        def skipped(c, why: str) -> None:
            click.echo(f"skipped {c.name} (step {c.step}): {why}", err=True)

        found = store.download_newest_verified(run, target, progress=RichProgress(), on_skip=skipped, candidates=candidates)
        if found is None:
            raise UserError(f"no complete checkpoint of run {run!r} verifies: each has a corrupt or missing file (see above). "
                            "The store's copies are damaged; re-upload from the box if it still has them.")
        chosen, out = found
        for broken in _unreadable_newer(store.checkpoints(run), chosen):
            click.echo(f"skipped {broken.name}/: manifest unreadable ({broken.unreadable}); fetched {chosen.name} instead")
        click.echo(f"wrote {out} ({chosen.name}, step {chosen.step}, every sha256 verified)")
        _fetch_report(store, run, out.parent)
        return
    matches = [c for c in checkpoints if c.step == step]
    complete = [c for c in matches if c.complete]
    if not complete:
        steps = ", ".join(str(c.step) for c in checkpoints if c.complete) or "none"
        state = "is incomplete in the store (its manifest is missing or files are absent)" if matches else "is not in the store"
        raise UserError(f"step {step} of run {run!r} {state}. Complete checkpoints: {steps}.")
    chosen = next((c for c in complete if c.name != FINAL_DIR), complete[0])
    out = Path(out_dir) if out_dir else Path("checkpoints") / run / chosen.name
    click.echo(f"fetching {run}/{chosen.rel} (step {chosen.step}, {human_bytes(chosen.size_bytes)}) from {store.describe(run)}")
    manifest = store.download_checkpoint(run, chosen.name, out, progress=RichProgress())
    click.echo(f"wrote {out} ({len(manifest.files)} files, every sha256 verified)")
    _fetch_report(store, run, out.parent)


def _fetch_report(store, run: str, folder: Path) -> None:
    """The run's report card beside the fetched checkpoint, when the store has one."""
    fetched = []
    for name in (REPORT_JSON, REPORT_MD):
        data = store.read_bytes(f"{run}/{name}")
        if data is not None:
            atomic_write_bytes(folder / name, data)
            fetched.append(str(folder / name))
    if fetched:
        click.echo(f"wrote {' and '.join(fetched)} (the run's report card)")


def _run_of(config, config_path, state: dict, root: Path, recorded_run) -> str:
    """--config naming another file than the recorded run's: that config's run.name (its run
    is what the user asks for); otherwise the run `launcher run` started last, else run.name."""
    recorded_config = state.get("config_path")
    if config_path and not (recorded_config and (root / config_path).resolve() == (root / recorded_config).resolve()):
        return config.run.name
    return recorded_run(config, state)


def _latest_once_uploaded(store, run: str, wait_s: float = 120.0, poll_s: float = 2.0):
    """The latest complete checkpoint; when the stored status says training ended at a later
    step, first wait (bounded) for the agent to finish uploading that last checkpoint."""
    chosen = store.latest_checkpoint(run)
    try:
        status = StatusFile.parse(store.read_text(f"{run}/{STATUS_FILE}") or "", f"{run}/{STATUS_FILE}")
    except UserError:
        return chosen
    ended_at = status.step if status.state in (FINISHED, STOPPED) else None
    if ended_at is None or (chosen is not None and chosen.step >= ended_at):
        return chosen
    if _unreadable_newer(store.checkpoints(run), chosen):
        return chosen  # the last checkpoint is there with a broken manifest: waiting will not mend it
    click.echo(f"training ended at step {ended_at}; waiting up to {wait_s:.0f} s for the agent to store that checkpoint")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        chosen = store.latest_checkpoint(run)
        if chosen is not None and chosen.step >= ended_at:
            return chosen
    click.echo(f"the checkpoint of step {ended_at} is not in the store yet; fetching the newest complete one")
    return chosen


def _unreadable_newer(checkpoints, chosen) -> list:
    """The stored checkpoints newer than ``chosen`` whose manifest is there but unreadable (a
    final/ whose manifest cannot say its step counts as newer): missing may still come, these will not."""
    return [c for c in checkpoints if c.unreadable is not None
            and (chosen is None or c.name == FINAL_DIR or recency(c.step, c.name) > recency(chosen.step, chosen.name))]


def _print_list(store, run: str, checkpoints) -> None:
    from rich.console import Console
    from rich.table import Table

    if not checkpoints:
        click.echo(f"no checkpoints stored for run {run!r} in {store.describe(run)}")
        return
    latest = store.latest_checkpoint(run)
    table = Table(title=f"checkpoints of {run} in {store.describe(run)}")
    for column in ("name", "step", "size", "date", "state"):
        table.add_column(column, justify="right" if column in ("step", "size") else "left")
    for c in checkpoints:
        state = "latest" if latest is not None and c.name == latest.name else ("complete" if c.complete else "incomplete")
        table.add_row(c.name, str(c.step), human_bytes(c.size_bytes), format_time(c.created), state)
    Console(width=120).print(table)
    everything = store.list(f"{run}/")
    ckpt_bytes = sum(c.size_bytes for c in checkpoints)
    click.echo(f"checkpoints: {len(checkpoints)}, {human_bytes(ckpt_bytes)}; run total in the store: "
               f"{human_bytes(sum(o.size for o in everything))} in {len(everything)} objects (logs and prepared data included)")
