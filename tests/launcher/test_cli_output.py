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
from launcher.stages.step_output import split_progress_lines
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
    """A bar's carriage-return updates redraw one terminal line; in a file each is a plain line and
    tqdm is asked for few of them (TQDM_MININTERVAL)."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from launcher.box_local import LocalBox
    from launcher.stages.step_output import TQDM_QUIET_INTERVAL, run_logged

    command = "printf 'start\\nbar 1%%\\rbar 50%%\\rbar 100%%\\n'; echo \"interval=$TQDM_MININTERVAL\""
    tty_out = io.StringIO()
    ctx = SimpleNamespace(console=Console(file=tty_out, force_terminal=True, width=100), box=LocalBox(tmp_path))
    run_logged(ctx, command, "test")
    screen = tty_out.getvalue()
    assert "\r      bar 1%" in screen and "\r      bar 50%" in screen
    assert "interval=" in screen and f"interval={TQDM_QUIET_INTERVAL}" not in screen  # tqdm left alone on a terminal

    file_out = io.StringIO()
    ctx = SimpleNamespace(console=Console(file=file_out, force_terminal=False, soft_wrap=True), box=LocalBox(tmp_path))
    text = run_logged(ctx, command, "test")
    assert file_out.getvalue() == ("      start\n      bar 1%\n      bar 50%\n      bar 100%\n"
                                   f"      interval={TQDM_QUIET_INTERVAL}\n")
    assert "\r" not in text


def test_status_says_where_the_report_card_is(tmp_path):
    """`report`: null until the run folder (on the box) or its stored copy holds report.json."""
    from types import SimpleNamespace

    from rich.console import Console

    from launcher.box_local import LocalBox
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
