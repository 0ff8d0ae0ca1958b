"""What the launcher prints (issue 18), checked without a box: the help lists every command with
its whole description, --version, the status --json schema against its documentation, progress
output split into lines, and no wrapping when the output is not a terminal."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from launcher.cli import cli, version
from launcher.commands.status import STATUS_FIELDS, typed
from launcher.run.step_output import split_progress_lines
from tests.harness.launcher_cli import ROOT, launcher_env


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=ROOT,
                          env={**launcher_env(ROOT), "COLUMNS": "80", **(env or {})}, capture_output=True, text=True, timeout=120)


def test_help_shows_every_command_whole_in_workflow_order():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "..." not in result.stdout.split("Commands:")[1], result.stdout  # click's truncation mark
    flat = " ".join(result.stdout.split())
    for name, cmd in cli.commands.items():
        first_paragraph = " ".join(cmd.help.strip().split("\n\n")[0].split())
        assert f"{name} {first_paragraph}" in flat, (name, result.stdout)
    listed = re.findall(r"^  ([a-z-]+)  ", result.stdout.split("Commands:")[1], re.M)
    assert listed == ["plan", "up", "run", "logs", "status", "stop", "fetch-checkpoint", "prune", "ssh", "down"], listed


def test_version():
    pyproject = (ROOT / "pyproject.toml").read_text()
    expected = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert version() == expected
    for flag in ("--version", "-V"):
        result = run_cli(flag)
        assert result.returncode == 0 and result.stdout.strip() == f"launcher (llm-box) {expected}", result


def test_status_json_schema_is_documented_and_typed():
    doc = (ROOT / "docs" / "status-json.md").read_text()
    fields = doc.split("## The run's phases")[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([a-z ]+?) \|", fields, re.M))
    assert rows == {name: " or ".join(types) for name, (types, _) in STATUS_FIELDS.items()}
    value = typed({"step": "12", "max_steps": 30.0, "exit_code": "0", "loss": 3, "session_alive": 0,
                   "instance": {"id": "x"}, "state": "running"})
    assert value["exit_code"] == 0 and type(value["exit_code"]) is int
    assert type(value["step"]) is int and type(value["max_steps"]) is int and type(value["loss"]) is float
    assert value["session_alive"] is False and value["instance"] == {"id": "x"} and value["eta_s"] is None
    assert set(value) == set(STATUS_FIELDS)
    from runcontract.run_folder import RUN_PHASES

    phases = doc.split("## The run's phases")[1]
    assert {p for p in RUN_PHASES if f"`{p}`" not in phases} == set(), phases


def test_progress_updates_are_split_from_lines():
    pieces, rest = split_progress_lines(b"start\nbar 1%\rbar 50%\rbar 100%\ndone\r\nnext 3%\r")
    assert pieces == [(b"start", False), (b"bar 1%", True), (b"bar 50%", True), (b"bar 100%", False), (b"done", False)]
    assert rest == b"next 3%\r"  # a trailing \r may be the first half of \r\n: wait for more


def test_console_off_a_terminal_does_not_wrap(tmp_path: Path):
    long_path = "/".join(["a-rather-long-folder-name"] * 12)
    script = ("from launcher.console import make_console; c = make_console(); "
              f"c.print('    $ python -m trainer.train --out {long_path}'); print(c.is_terminal)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**launcher_env(ROOT), "COLUMNS": "80"},
                         capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out == [f"    $ python -m trainer.train --out {long_path}", "False"]


def test_wandb_key_travels_as_a_secret_only(tmp_path: Path):
    from launcher.config import load_launcher_config
    from launcher.secrets import box_secret_env, render_env_file
    from runcontract.config import TrainConfig
    from runcontract.errors import UserError

    config = load_launcher_config(ROOT / "configs" / "quickstart.yaml")
    wandb_cfg = TrainConfig(trackers=["tensorboard", "wandb"])
    assert box_secret_env(config, {}, TrainConfig()) == {}  # TensorBoard alone needs no secret
    env = box_secret_env(config, {"WANDB_API_KEY": "k-123"}, wandb_cfg)
    assert env == {"WANDB_API_KEY": "k-123"} and "export WANDB_API_KEY=k-123" in render_env_file(env)
    assert box_secret_env(config, {"WANDB_MODE": "offline"}, wandb_cfg) == {"WANDB_MODE": "offline"}
    try:
        box_secret_env(config, {}, wandb_cfg)
        raise AssertionError("no error without WANDB_API_KEY")
    except UserError as exc:
        assert "WANDB_API_KEY" in str(exc) and "WANDB_MODE=offline" in str(exc)

    # the dry run shows how the key travels (a mode-600 file sourced in the session), never the key
    from tests.harness.launcher_cli import copy_project, launcher

    project = copy_project(tmp_path / "project")
    secret = "wandb-key-that-must-not-show"
    dry = launcher(project, "run", "--dry-run", "--set", 'run.set=["train.run_name=quickstart", "train.trackers=[tensorboard, wandb]"]',
                   env={"WANDB_API_KEY": secret, "HOME": str(tmp_path)})
    assert dry.returncode == 0, dry.stderr
    assert secret not in dry.stdout + dry.stderr and ".launcher/secrets.env" in dry.stdout
    assert not (project / ".launcher").exists()


def test_trainer_output_on_a_terminal_and_in_a_file(tmp_path: Path):
    """A real trainer progress bar (trainer/corpus/progress.py) run on the box as a stage runs it: on a
    terminal its carriage-return updates redraw one line; in a file it writes a plain line about
    every tenth, never tqdm's 0%/100% pair (issue 23)."""
    import io
    import shlex
    from types import SimpleNamespace

    from rich.console import Console

    from launcher.box.local import LocalBox
    from launcher.run.step_output import run_logged

    script = ("import time; from trainer.corpus.progress import progress_bar\n"
              "print('start', flush=True)\n"
              "with progress_bar(2000, 'tokenizing', unit='tok', unit_scale=True, mininterval=0) as bar:\n"
              "    for _ in range(2000): bar.update(1)\n"
              "print('done', flush=True)\n")
    command = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    tty_out = io.StringIO()
    ctx = SimpleNamespace(console=Console(file=tty_out, force_terminal=True, width=100), box=LocalBox(tmp_path))
    run_logged(ctx, command, "test")
    screen = tty_out.getvalue()
    assert screen.count("\r      tokenizing:") > 10 and "2.00k/2.00k" in screen, screen  # tqdm, redrawn in place

    file_out = io.StringIO()
    ctx = SimpleNamespace(console=Console(file=file_out, force_terminal=False, soft_wrap=True), box=LocalBox(tmp_path))
    text = run_logged(ctx, command, "test")
    lines = file_out.getvalue().splitlines()
    assert lines[0] == "      start" and lines[-1] == "      done", lines
    expected = ["200", "400", "600", "800", "1.0k", "1.2k", "1.4k", "1.6k", "1.8k", "2.0k"]
    assert lines[1:-1] == [f"      tokenizing: {10 * t}% ({done} tok of 2.0k tok)" for t, done in enumerate(expected, 1)], lines
    assert "\r" not in text and "0%|" not in text


def test_tenth_lines_for_any_counter():
    from runcontract.progress import TenthLines

    written: list[str] = []
    counter = TenthLines("download", 5_000_000, written.append, unit="B")
    for _ in range(5000):
        counter.update(1000)
    assert written[:3] == ["download: 10% (500.0 KB of 5.0 MB)", "download: 20% (1.0 MB of 5.0 MB)", "download: 30% (1.5 MB of 5.0 MB)"]
    assert len(written) == 10 and written[-1] == "download: 100% (5.0 MB of 5.0 MB)", written
    resumed = TenthLines("tokenizing", 100, written.clear() or written.append, initial=45)
    resumed.update(10)
    assert written == ["tokenizing: 50% (55 of 100)"]  # from where it resumed: no 10%..40% again


def test_status_says_where_the_report_card_is(tmp_path):
    """`report`: null until the run folder (on the box) or its stored copy holds report.json."""
    from types import SimpleNamespace

    from rich.console import Console

    from launcher.box.local import LocalBox
    from launcher.commands.status import read_run, read_run_from_store, render, summarize
    from launcher.config import StorageConfig

    run = tmp_path / "runs" / "rc"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"state": "finished", "phase": "finished", "step": 2}')
    box = LocalBox(tmp_path)
    config = SimpleNamespace(storage=StorageConfig(url=f"file://{tmp_path / 'store'}"))
    (tmp_path / "store" / "rc").mkdir(parents=True)
    (tmp_path / "store" / "rc" / "status.json").write_text((run / "status.json").read_text())
    assert read_run(box, "rc")["report"] is None and read_run_from_store(config, tmp_path, "rc")["report"] is None
    (run / "report.json").write_text("{}")
    (tmp_path / "store" / "rc" / "report.json").write_text("{}")
    assert read_run(box, "rc")["report"] == "runs/rc/report.md on the box"
    stored = read_run_from_store(config, tmp_path, "rc")
    assert stored["report"] == "rc/report.md in the store"
    summary = summarize("local", "rc", stored, None, None)
    assert typed(summary)["report"] == "rc/report.md in the store"
    console = Console(width=200, record=True)
    console.print(render(summary))
    shown = console.export_text()
    assert "report card" in shown and "rc/report.md in the store (launcher fetch-checkpoint brings it)" in shown
