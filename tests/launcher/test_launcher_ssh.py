"""The launcher against a real SSH box (OpenSSH on loopback, non-root user, real tmux and rsync).

up -> run (smoke config) -> status (step and loss) -> logs --follow across a killed connection
-> stop -> a second run after a one-line change (only that file travels) -> stop -> down;
--dry-run changes nothing; unreachable hosts, bad keys, changed host keys and a file:// store
on an SSH box give clear errors.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.harness.s3server import S3Endpoint
from tests.harness.sshd import SSHTarget
from tests.harness.launcher_cli import (
    assert_clean_error, box_shell, copy_project, launcher, s3_storage, ssh_config, wait_for,
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def test_up_run_logs_status_stop_rerun_down(sshd: SSHTarget, remote_workdir: str, box_python: Path, s3_server: S3Endpoint,
                                            s3_bucket: str, project: Path, fake_hub):
    from tests.harness.fake_hub import jsonl_dataset
    from tests.harness.sshd import session_processes

    name = f"ssh{os.getpid()}"
    # half of the data from a gated dataset on a hub mirror: the box's tokenizer and data steps must
    # get both HF_ENDPOINT and HF_TOKEN, which exist only in this shell
    hf_token = f"hf_e2e{os.getpid()}tok"
    words = ["river", "stone", "light", "paper", "winter", "garden", "signal", "engine"]
    fake_hub.add(jsonl_dataset("org/gated-web", {"en": [f"web page {i}: " + " ".join(words[(i * j) % 8] for j in range(60))
                                                       for i in range(2000)]}, gated=True, allowed_tokens=(hf_token,)))
    (project / "configs" / "data_hub_e2e.yaml").write_text(
        "sources:\n  - {name: stdlib, type: python_stdlib, weight: 0.5}\n"
        "  - {name: web, type: hub, path: org/gated-web, config: en, weight: 0.5}\nval_every: 20\n")
    processes_during_data: list[str] = []

    def snapshot_processes(method: str, path: str) -> None:  # the process list while the box's data step reads the hub
        if "/resolve/" in path and len(processes_during_data) < 3:
            processes_during_data.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)

    fake_hub.on_request = snapshot_processes
    cfg = project / "configs" / "ssh_e2e.yaml"
    cfg.write_text(ssh_config(sshd, remote_workdir, str(box_python), name=name, storage=s3_storage(s3_server, s3_bucket),
                              data_config="configs/data_hub_e2e.yaml"))
    env = {**s3_server.env(), "HF_TOKEN": hf_token, "HF_ENDPOINT": fake_hub.url}

    up = launcher(project, "up", "--config", "configs/ssh_e2e.yaml", env=env)
    assert up.returncode == 0, up.stderr + up.stdout
    assert "Debian" in up.stdout and "box ready" in up.stdout
    state = json.loads((project / ".launcher" / "state.json").read_text())
    assert state["box"]["port"] == sshd.port and state["config_path"] == "configs/ssh_e2e.yaml"
    # trust on first use: the key went into the project's own known_hosts
    assert f"[127.0.0.1]:{sshd.port}" in (project / ".launcher" / "known_hosts").read_text()
    up2 = launcher(project, "up", env=env)  # the second call is fast and changes nothing
    assert up2.returncode == 0 and "up to date" in up2.stdout, up2.stdout + up2.stderr

    try:
        run = launcher(project, "run", env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        for stage in ("sync", "setup", "tokenizer", "data", "benchmark", "cost", "train"):
            assert f"] {stage} " in run.stdout
        assert "Cost projection" in run.stdout and "training started" in run.stdout

        # the secrets reached the box as a mode-600 file, not in any process's argv or the synced tree
        secrets = box_shell(sshd, "stat -c %a ~/.llm-box/secrets.env")
        assert secrets.stdout.strip() == "600"
        ps = box_shell(sshd, f"ps -u {sshd.user} -o args")
        assert s3_server.secret_key not in ps.stdout and s3_server.access_key not in ps.stdout and hf_token not in ps.stdout
        for secret in (s3_server.secret_key, hf_token):
            grep = box_shell(sshd, f"grep -rl {secret} {remote_workdir} --exclude-dir=.venv; true")
            assert grep.stdout.strip() == "", grep.stdout
        # the hub's token and address reached the box's data steps (the gated dataset opened with it)
        # and nothing else: no command line while they ran, no log, no output
        hub_auth = {auth for _, path, auth in fake_hub.requests if "gated-web" in path}
        assert hub_auth == {f"Bearer {hf_token}"}, hub_auth
        data_meta = json.loads(box_shell(sshd, f"cat {remote_workdir}/data/data_meta.json").stdout)
        assert [s["name"] for s in data_meta["sources"]] == ["stdlib", "web"] and data_meta["sources"][1]["tokens"] > 0
        assert abs(data_meta["sources"][1]["token_share"] - 0.5) < 0.05, data_meta["sources"]
        assert processes_during_data and all(hf_token not in listing for listing in processes_during_data)
        assert processes_during_data and any("trainer." in listing for listing in processes_during_data)
        assert hf_token not in run.stdout + run.stderr + up.stdout + up.stderr

        def status():
            r = launcher(project, "status", "--json", env=env)
            assert r.returncode == 0, r.stderr
            data = json.loads(r.stdout)
            return data if data.get("step") and data.get("loss") is not None and data["state"] == "running" else None

        data = wait_for(status, 120, "training to report a step and a loss")
        assert data["box"] == f"{sshd.user}@127.0.0.1:{sshd.port}" and data["run"] == name
        assert data["cost_projected"] is not None and data["tokens_per_sec"] is not None
        table = launcher(project, "status", env=env)
        assert "running" in table.stdout and "loss" in table.stdout

        # logs --follow: kill the server side of its connection mid-stream; it reconnects and
        # neither loses nor repeats a line; Ctrl-C leaves training running and says so
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "logs", "--follow", "-n", "1000"], cwd=project,
                                env={**os.environ, "PYTHONPATH": str(project), "PYTHONUNBUFFERED": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []

        def read_until(predicate, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if line:
                    lines.append(line.rstrip("\n"))
                    if predicate():
                        return
            raise AssertionError(f"follow output stalled; got {lines[-5:]}")

        errors: list[str] = []
        threading.Thread(target=lambda: errors.extend(iter(proc.stderr.readline, "")), daemon=True).start()
        read_until(lambda: any("step " in l for l in lines), 90)
        for pid in session_processes(sshd):
            os.kill(pid, signal.SIGKILL)
        marks: list[int] = []

        def resumed() -> bool:
            if not marks and any("reconnecting" in e for e in errors):
                marks.append(len(lines))
            return bool(marks) and sum("step " in l for l in lines[marks[0]:]) >= 2

        read_until(resumed, 120)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        time.sleep(0.2)
        err = "".join(errors)
        assert "reconnecting" in err and "Training keeps running" in err, err
        assert len(lines) == len(set(lines)), "a line was repeated across the reconnect"
        log = box_shell(sshd, f"cat {remote_workdir}/runs/{name}/train.log").stdout.splitlines()
        start = log.index(lines[0])
        assert lines == log[start:start + len(lines)], "a line was lost across the reconnect"
        assert wait_for(status, 30, "training still running after Ctrl-C on logs")

        stop = launcher(project, "stop", env=env, timeout=300)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped" in stop.stdout
        after = json.loads(launcher(project, "status", "--json", env=env).stdout)
        assert after["state"] == "stopped" and after["step"] >= data["step"]
        assert box_shell(sshd, f"ls {remote_workdir}/runs/{name}/checkpoints").stdout.strip()

        # a one-line code change: the second run sends only that file
        target = project / "launcher" / "__init__.py"
        target.write_text(target.read_text() + "# a one-line change\n")
        rerun = launcher(project, "run", env=env)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        sync_line = next(l for l in rerun.stdout.splitlines() if "] sync done" in l)
        assert " 1 of " in sync_line, sync_line
        for stage in ("setup", "tokenizer", "data", "benchmark"):
            assert f"] {stage} skipped" in rerun.stdout, rerun.stdout
        assert box_shell(sshd, f"tail -1 {remote_workdir}/launcher/__init__.py").stdout.strip() == "# a one-line change"
        box_stats = __import__("re").search(r"\(([\d.]+)% of", sync_line)
        assert box_stats and float(box_stats.group(1)) < 2.0, sync_line
    finally:
        down = launcher(project, "down", env=env, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert box_shell(sshd, f"tmux has-session -t =llmbox-{name}").returncode != 0
    assert box_shell(sshd, "test -e ~/.llm-box/secrets.env").returncode != 0
    assert json.loads((project / ".launcher" / "state.json").read_text())["box"] is None
    # the store has the run (mirrored by the agent)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert f"runs/{name}/train.log" in keys and f"runs/{name}/status.json" in keys
    # with the box gone from the state, status falls back to the stored copy
    cfg_only = launcher(project, "status", "--json", "--config", "configs/ssh_e2e.yaml",
                        env={**env})
    assert cfg_only.returncode == 0, cfg_only.stderr


def test_dry_run_changes_nothing(sshd: SSHTarget, remote_workdir: str, box_python: Path, project: Path):
    cfg = project / "configs" / "dry.yaml"
    cfg.write_text(ssh_config(sshd, remote_workdir, str(box_python), name="dry",
                              storage="storage:\n  url: s3://nowhere/runs\n"))
    result = launcher(project, "run", "--config", "configs/dry.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    for text in ("rsync", "infra/bootstrap.sh", "trainer.tokenizer", "trainer.data", "trainer.benchmark",
                 "trainer.cost", "trainer.train", "tmux new-session"):
        assert text in result.stdout, text
    assert box_shell(sshd, f"test -e {remote_workdir}").returncode == 1  # nothing created on the box
    assert not (project / ".launcher").exists()  # no state, no known_hosts: not even a connection
    assert "--extras trainer" in result.stdout and "--extras trainer,eval" not in result.stdout
    # a run that writes a report card bootstraps the eval extra too
    cfg.write_text(ssh_config(sshd, remote_workdir, str(box_python), name="dry",
                              sets=["train.eval.tasks=[arc_easy]"], storage="storage:\n  url: s3://nowhere/runs\n"))
    result = launcher(project, "run", "--config", "configs/dry.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "infra/bootstrap.sh" in result.stdout and "--extras trainer,eval" in result.stdout


def test_unreachable_host_and_bad_key_and_changed_host_key(sshd: SSHTarget, remote_workdir: str, box_python: Path,
                                                           project: Path, tmp_path: Path):
    from tests.harness.procs import free_port

    storage = "storage:\n  url: s3://nowhere/runs\n"
    closed = free_port()
    (project / "configs" / "closed.yaml").write_text(
        ssh_config(sshd, remote_workdir, str(box_python), name="x", storage=storage, port=closed))
    result = launcher(project, "up", "--config", "configs/closed.yaml")
    assert_clean_error(result, f"could not connect to 127.0.0.1:{closed} as {sshd.user}: connection refused",
                       "`launcher up` to check")

    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    (project / "configs" / "badkey.yaml").write_text(
        ssh_config(sshd, remote_workdir, str(box_python), name="x", storage=storage, identity=str(stranger)))
    result = launcher(project, "up", "--config", "configs/badkey.yaml")
    assert_clean_error(result, f"could not connect to 127.0.0.1:{sshd.port} as {sshd.user}", "refused the key",
                       str(stranger))

    missing = launcher(project, "up", "--config", "configs/badkey.yaml", "--set", f"box.identity_file={tmp_path}/nope")
    assert_clean_error(missing, "does not exist", "identity_file")

    # a changed host key is refused, naming the file and the line to remove
    (project / "configs" / "ok.yaml").write_text(ssh_config(sshd, remote_workdir, str(box_python), name="x", storage=storage))
    kh = project / ".launcher" / "known_hosts"
    kh.parent.mkdir(parents=True, exist_ok=True)
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    kh.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    result = launcher(project, "up", "--config", "configs/ok.yaml")
    assert_clean_error(result, "CHANGED", str(kh), f"[127.0.0.1]:{sshd.port}")


def test_file_store_on_an_ssh_box_and_vocab_mismatch_are_refused(sshd: SSHTarget, remote_workdir: str, box_python: Path,
                                                                 project: Path):
    (project / "configs" / "filestore.yaml").write_text(
        ssh_config(sshd, remote_workdir, str(box_python), name="x", storage="storage:\n  url: file://.launcher/store\n"))
    result = launcher(project, "run", "--config", "configs/filestore.yaml")
    assert_clean_error(result, "file://", "s3://")
    result = launcher(project, "run", "--config", "configs/filestore.yaml", "--set", "storage.url=s3://b/p",
                      "--set", "run.tokenizer.vocab_size=8000")
    assert_clean_error(result, "vocab_size", "8000", "4096")


def test_sync_only_sends_changes_and_sftp_fallback(sshd: SSHTarget, remote_workdir: str, project: Path, tmp_path: Path):
    from launcher.box.ssh import SSHBox
    from launcher.box.ssh_commands import SSHEndpoint

    ep = SSHEndpoint(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=str(sshd.identity_file),
                     known_hosts=str(tmp_path / "kh"))
    (project / "runs").mkdir()
    (project / "runs" / "big.bin").write_bytes(b"x" * 100000)  # excluded: never travels
    (project / "notes.secret").write_text("no")
    (project / ".launcherignore").write_text((project / ".launcherignore").read_text() + "*.secret\n")
    for method, use_rsync in (("rsync", True), ("sftp", False)):
        box = SSHBox(ep, workdir=f"{remote_workdir}-{method}", use_rsync=use_rsync)
        first = box.sync(project)
        assert first.method == method and first.files == first.total_files > 20
        again = box.sync(project)
        assert again.files == 0 and again.bytes_sent < 0.01 * again.total_bytes, again
        changed = project / "runcontract" / "errors.py"
        changed.write_text(changed.read_text() + f"# {method}\n")
        third = box.sync(project)
        assert third.files == 1, third
        assert box.run("test ! -e runs/big.bin && test ! -e notes.secret && test ! -e .git && echo ok").stdout.strip() == "ok"
        box.close()


def test_a_connection_cut_mid_command_is_connection_lost_not_a_crash(sshd: SSHTarget, tmp_path: Path):
    """The box's port closes and its connections are cut while a command runs (a preempted box):
    the launcher sees ConnectionLost (a BoxError the managed controller counts as SSH down), never
    paramiko's bare EOFError, which ended the controller with click's "Aborted!"."""
    from launcher.box.base import ConnectionLost
    from launcher.box.ssh import SSHBox
    from launcher.box.ssh_commands import SSHEndpoint
    from tests.harness.fake_providers import LateSshd

    with LateSshd(sshd.port, resets=0, host=sshd.host) as port:
        ep = SSHEndpoint(host=sshd.host, port=port.port, user=sshd.user, identity_file=str(sshd.identity_file),
                         known_hosts=str(tmp_path / "kh"), connect_timeout=5)
        box = SSHBox(ep, workdir="~")
        assert box.run("echo up", cwd=False).stdout.strip() == "up"
        assert box.get_file("~/no-such-file") is None and box.get_file("~/.bashrc") is not None
        threading.Timer(1.0, port.close).start()
        with pytest.raises(ConnectionLost, match="dropped while running"):
            box.run("sleep 20", cwd=False, timeout=60)
        box.close()
