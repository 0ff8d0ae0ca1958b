"""The real parts themselves work: SSH as a non-root user, tmux on the box, S3 round trips."""
from __future__ import annotations

import hashlib
import os
import subprocess

from tests.harness.s3server import S3Endpoint
from tests.harness.sshd import SSHTarget


def test_ssh_runs_a_command_as_the_non_root_user(sshd: SSHTarget):
    result = subprocess.run(sshd.ssh_argv("id -un; id -u; echo $HOME"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    user, uid, home = result.stdout.split()
    assert user == sshd.user
    assert int(uid) != 0
    assert home == str(sshd.home)


def test_tmux_runs_on_the_box(sshd: SSHTarget):
    session = f"harness-{os.getpid()}"
    script = (
        f"tmux new-session -d -s {session} 'echo from-tmux > /tmp/{session}.out; sleep 30' && "
        f"sleep 0.5 && tmux has-session -t {session} && cat /tmp/{session}.out && tmux kill-session -t {session}"
    )
    result = subprocess.run(sshd.ssh_argv(script), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from-tmux"


def test_s3_server_round_trips_a_multipart_object(s3_server: S3Endpoint, s3_bucket: str, tmp_path):
    from boto3.s3.transfer import TransferConfig

    payload = os.urandom(12 * 1024 * 1024)
    source = tmp_path / "blob.bin"
    source.write_bytes(payload)
    client = s3_server.client()
    multipart = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    client.upload_file(str(source), s3_bucket, "dir/blob.bin", Config=multipart)
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert listed == ["dir/blob.bin"]
    target = tmp_path / "back.bin"
    client.download_file(s3_bucket, "dir/blob.bin", str(target))
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
