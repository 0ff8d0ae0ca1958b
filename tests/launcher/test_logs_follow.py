"""logs --follow survives a dropped SSH connection without losing or repeating a line.

A process on the box appends numbered lines to a file; the follower streams it over a real
sshd; mid-stream the sshd process serving the connection is killed (server side). The lines
collected must be exactly 1..N, in order, and the follower must have reconnected.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from launcher.box.ssh import SSHBox
from launcher.box.log_follow import LogFollower
from launcher.box.ssh_commands import SSHEndpoint
from tests.harness.sshd import SSHTarget
from tests.harness.sshd import session_processes

N = 120


def make_box(sshd: SSHTarget, known_hosts: Path, workdir: str) -> SSHBox:
    ep = SSHEndpoint(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=str(sshd.identity_file),
                     known_hosts=str(known_hosts), connect_timeout=10)
    return SSHBox(ep, workdir=workdir)


def test_follow_resumes_after_the_server_drops_the_connection(sshd: SSHTarget, remote_workdir: str, tmp_path: Path):
    known_hosts = tmp_path / "known_hosts"
    setup = make_box(sshd, known_hosts, remote_workdir)
    # the writer runs detached on the box (its own session), so killing connections spares it
    setup.run(
        f"rm -f app.log; setsid nohup bash -c 'for i in $(seq 1 {N}); do echo line-$i >> app.log; sleep 0.05; done' "
        ">/dev/null 2>&1 < /dev/null &", timeout=30,
    )
    setup.close()

    collected: list[str] = []
    notices: list[str] = []
    killed: list[int] = []

    def write(text: str) -> None:
        collected.extend(text.splitlines())
        if not killed and len(collected) >= 30:
            pids = session_processes(sshd)
            assert pids, "no sshd session process found to kill"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)

    follower = LogFollower(lambda: make_box(sshd, known_hosts, remote_workdir), "app.log", write=write,
                           notice=notices.append, should_stop=lambda: len(collected) >= N, max_backoff=1.0)
    start = time.monotonic()
    follower.follow()
    follower.close()
    assert killed, "the connection was never killed"
    assert follower.reconnects >= 1, notices
    assert any("reconnecting" in n for n in notices)
    assert collected == [f"line-{i}" for i in range(1, N + 1)]
    assert time.monotonic() - start < 60


def test_start_at_last_lines_then_follow(sshd: SSHTarget, remote_workdir: str, tmp_path: Path):
    box = make_box(sshd, tmp_path / "known_hosts", remote_workdir)
    box.run("printf 'a\\nb\\nc\\nd\\n' > x.log", timeout=30)
    collected: list[str] = []
    follower = LogFollower(lambda: box, "x.log", write=lambda t: collected.extend(t.splitlines()),
                           should_stop=lambda: len(collected) >= 3)
    assert follower.start_at_last(2) == len("a\nb\n")
    box.run("sleep 0.3; echo e >> x.log &", timeout=30)
    follower.follow()
    assert collected == ["c", "d", "e"]
    box.close()
