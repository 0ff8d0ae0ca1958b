"""The store, both kinds: file:// and real S3 servers over HTTP: rclone serve s3, moto's server,
and a strict proxy that refuses what Backblaze B2 refuses (tests/harness/s3proxy.py).

Checkpoints are uploaded files first and manifest last; `latest` is the newest whose manifest
exists and whose files are all stored; downloads verify every sha256 and are resumable.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from launcher.config import LauncherConfig, StorageConfig
from launcher.secrets import box_secret_env, render_env_file, write_env_file
from launcher.store.base import ChecksumError, StoreError, TransferProgress
from launcher.store.factory import open_store
from launcher.store.file import FileStore
from launcher.store.s3 import S3Store
from runcontract.errors import UserError
from runcontract.manifest import read_manifest, sha256_file, verify_manifest, write_manifest
from tests.harness.stores import S3_KINDS, make_checkpoint, s3_endpoint_for, s3_kind_store, s3_storage

RUN = "demo"


@pytest.fixture(params=["file", *S3_KINDS])
def store(request, tmp_path):
    if request.param == "file":
        return FileStore(tmp_path / "store")
    server, bucket = s3_endpoint_for(request, request.param)
    return S3Store(s3_storage(server, bucket), env=server.env())


def test_small_objects_round_trip(store, tmp_path):
    assert store.read_text(f"{RUN}/train.log") is None
    store.write_text(f"{RUN}/train.log", "step 1\n")
    assert store.read_text(f"{RUN}/train.log") == "step 1\n"
    store.sync_bytes(f"{RUN}/train.log", b"step 1\nstep 2\n", append=True)
    assert store.read_text(f"{RUN}/train.log") == "step 1\nstep 2\n"
    store.sync_bytes(f"{RUN}/train.log", b"rewritten\n", append=True)  # not a prefix: replaced whole
    assert store.read_text(f"{RUN}/train.log") == "rewritten\n"
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1234)
    store.put_file(src, f"{RUN}/dir/a.bin")
    listed = store.list(f"{RUN}/")
    assert [(o.key, o.size) for o in listed] == [(f"{RUN}/dir/a.bin", 1234), (f"{RUN}/train.log", 10)]
    assert all(o.mtime > 0 for o in listed)
    store.get_file(f"{RUN}/dir/a.bin", tmp_path / "back" / "a.bin")
    assert (tmp_path / "back" / "a.bin").read_bytes() == b"x" * 1234
    store.delete(f"{RUN}/dir/a.bin")
    assert store.stat(f"{RUN}/dir/a.bin") is None
    with pytest.raises(StoreError, match="not in the store"):
        store.get_file(f"{RUN}/dir/a.bin", tmp_path / "gone.bin")


def test_upload_fetch_and_verify_a_checkpoint(store, tmp_path):
    local = tmp_path / "runs" / RUN
    first = make_checkpoint(local, 100)
    second = make_checkpoint(local, 200)
    assert store.latest_checkpoint(RUN) is None
    assert store.upload_checkpoint(RUN, first) > 0
    assert store.upload_checkpoint(RUN, second) > 0
    assert store.upload_checkpoint(RUN, second) == 0  # already stored: nothing sent again
    listed = store.checkpoints(RUN)
    assert [(c.name, c.step, c.complete) for c in listed] == [("step_000100", 100, True), ("step_000200", 200, True)]
    assert listed[1].size_bytes == sum(p.stat().st_size for p in second.rglob("*") if p.is_file() and p.name != "manifest.json")
    latest = store.latest_checkpoint(RUN)
    assert (latest.name, latest.step) == ("step_000200", 200)

    out = tmp_path / "fetched" / "step_000200"
    manifest = store.download_checkpoint(RUN, latest.name, out)
    assert manifest.meta["step"] == 200
    verify_manifest(out, check_hashes=True)
    for path in second.rglob("*"):
        if path.is_file():
            assert sha256_file(out / path.relative_to(second)) == sha256_file(path)
    assert not (out.parent / ".step_000200.partial").exists()


def test_final_is_latest_on_a_tie_and_restore_can_skip_it(store, tmp_path):
    local = tmp_path / "runs" / RUN
    store.upload_checkpoint(RUN, make_checkpoint(local, 300))
    store.upload_checkpoint(RUN, make_checkpoint(local, 300, final=True))
    assert store.latest_checkpoint(RUN).name == "final"
    assert store.latest_checkpoint(RUN, include_final=False).name == "step_000300"


def test_checkpoint_without_manifest_is_not_latest(store, tmp_path):
    local = tmp_path / "runs" / RUN
    store.upload_checkpoint(RUN, make_checkpoint(local, 100))
    newer = make_checkpoint(local, 200)
    for name, entry in read_manifest(newer).files.items():  # every file but the manifest: an interrupted upload
        store.put_file(newer / name, f"{RUN}/checkpoints/step_000200/{name}", sha256=entry["sha256"])
    listed = {c.name: c for c in store.checkpoints(RUN)}
    assert listed["step_000200"].complete is False
    assert store.latest_checkpoint(RUN).name == "step_000100"
    # a manifest whose files are not all stored is not complete either
    third = make_checkpoint(local, 300)
    store.put_file(third / "manifest.json", f"{RUN}/checkpoints/step_000300/manifest.json")
    store.put_file(third / "part0.bin", f"{RUN}/checkpoints/step_000300/part0.bin")
    assert store.latest_checkpoint(RUN).name == "step_000100"
    # the next upload finishes it, sending only what is missing
    sent = store.upload_checkpoint(RUN, newer)
    assert sent == 0  # the files were there: only the manifest went up
    assert store.latest_checkpoint(RUN).name == "step_000200"


def test_corrupted_object_is_detected_and_refused(store, tmp_path):
    local = tmp_path / "runs" / RUN
    ckpt = make_checkpoint(local, 100)
    store.upload_checkpoint(RUN, ckpt)
    original = (ckpt / "part0.bin").read_bytes()
    flipped = bytes([original[0] ^ 0xFF]) + original[1:]  # same size: only the hash can tell
    store.write_bytes(f"{RUN}/checkpoints/step_000100/part0.bin", flipped)
    assert store.latest_checkpoint(RUN).name == "step_000100"  # sizes match: listed...
    out = tmp_path / "fetched"
    with pytest.raises(ChecksumError, match="part0.bin"):  # ...but never handed out
        store.download_checkpoint(RUN, "step_000100", out)
    assert not out.exists()
    partial = tmp_path / ".fetched.partial"
    assert not (partial / "part0.bin").exists() and not (partial / "part0.bin.part").exists()


def test_interrupted_download_resumes_with_verified_files(store, tmp_path):
    local = tmp_path / "runs" / RUN
    ckpt = make_checkpoint(local, 100)
    store.upload_checkpoint(RUN, ckpt)
    out = tmp_path / "fetched"
    partial = tmp_path / ".fetched.partial"
    partial.mkdir()
    good = partial / "part0.bin"
    good.write_bytes((ckpt / "part0.bin").read_bytes())  # finished before the interruption
    (partial / "part1.bin.part").write_bytes(b"half")  # cut off mid-file
    (partial / "stray.bin").write_bytes(b"not in the manifest")
    inode = good.stat().st_ino
    store.download_checkpoint(RUN, "step_000100", out)
    verify_manifest(out, check_hashes=True)
    assert (out / "part0.bin").stat().st_ino == inode  # reused, not downloaded again
    assert not (out / "stray.bin").exists() and not (out / "part1.bin.part").exists()
    assert not partial.exists()


def test_download_into_a_different_existing_folder_is_refused(store, tmp_path):
    local = tmp_path / "runs" / RUN
    store.upload_checkpoint(RUN, make_checkpoint(local, 100))
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists"):
        store.download_checkpoint(RUN, "step_000100", out)
    assert (out / "mine.txt").read_text() == "keep me"


def test_file_store_is_relative_to_the_project(tmp_path):
    store = open_store(StorageConfig(url="file://.launcher/store"), tmp_path)
    store.write_text("r/x.txt", "hi")
    assert (tmp_path / ".launcher" / "store" / "r" / "x.txt").read_text() == "hi"


def test_s3_store_keys_live_under_the_prefix(s3_server, s3_bucket, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    store = open_store(s3_storage(s3_server, s3_bucket, "a/b"), Path("."))
    assert isinstance(store, S3Store)
    store.write_text(f"{RUN}/metrics.jsonl", "{}\n")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"a/b/{RUN}/metrics.jsonl"]
    assert [o.key for o in store.list(f"{RUN}/")] == [f"{RUN}/metrics.jsonl"]


def test_s3_errors_are_clear(s3_server, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        S3Store(s3_storage(s3_server, s3_bucket), env={})
    wrong = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with pytest.raises(StoreError, match="refused the credentials"):
        S3Store(s3_storage(s3_server, s3_bucket), env=wrong).list("x/")
    missing = S3Store(StorageConfig(url="s3://no-such-bucket-here/p", endpoint_url=s3_server.endpoint_url, addressing_style="path"), env=s3_server.env())
    with pytest.raises(StoreError, match="does not exist"):
        missing.write_text("x/y", "z")


def test_s3_profile_credentials(s3_server, s3_bucket, tmp_path, monkeypatch):
    creds = tmp_path / "credentials"
    creds.write_text(f"[llmbox]\naws_access_key_id = {s3_server.access_key}\naws_secret_access_key = {s3_server.secret_key}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    storage = s3_storage(s3_server, s3_bucket).model_copy(update={"credentials": "profile", "profile": "llmbox"})
    store = S3Store(storage, env={})
    store.write_text("p/x", "via profile")
    assert store.read_text("p/x") == "via profile"
    config = LauncherConfig(storage=storage)
    assert box_secret_env(config, env={}) == {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    bad = LauncherConfig(storage=storage.model_copy(update={"profile": "nope"}))
    with pytest.raises(UserError, match="'nope'"):
        box_secret_env(bad, env={})


def test_box_secret_env_and_env_file(tmp_path):
    s3 = LauncherConfig(storage=StorageConfig(url="s3://b/p"))
    with pytest.raises(UserError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        box_secret_env(s3, env={"AWS_ACCESS_KEY_ID": "k"})
    secret = "s3cr3t 'quoted' $HOME `x`"
    env = box_secret_env(s3, env={"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": secret, "OTHER": "no"})
    assert env == {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": secret}
    assert box_secret_env(LauncherConfig(), env={"AWS_SECRET_ACCESS_KEY": "x"}) == {}  # file:// store: nothing
    rented = LauncherConfig.model_validate({"box": {"kind": "runpod"}, "agent": {"shutdown_when_done": True}})
    with pytest.raises(UserError, match="RUNPOD_API_KEY"):
        box_secret_env(rented, env={})
    assert box_secret_env(rented, env={"RUNPOD_API_KEY": "rp"}) == {"RUNPOD_API_KEY": "rp"}
    path = write_env_file(tmp_path / "llm-box" / "secrets.env", env)
    assert (path.stat().st_mode & 0o777) == 0o600
    shown = subprocess.run(["bash", "-c", 'source "$0" && bash -c \'printf %s "$AWS_SECRET_ACCESS_KEY"\'', str(path)],
                           capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=True)
    assert shown.stdout == secret  # quoted right, and exported to children
    with pytest.raises(UserError):
        render_env_file({"BAD NAME": "x"})


def test_the_hub_token_and_endpoint_reach_the_box_offline_flags_do_not(tmp_path):
    """HF_TOKEN (else the token `hf auth login` stored in $HF_TOKEN_PATH or $HF_HOME/token) and
    HF_ENDPOINT go into the box's secrets file; the laptop's offline flags stay on the laptop."""
    home = {"HF_HOME": str(tmp_path / "hf")}
    assert box_secret_env(LauncherConfig(), env=home) == {}
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("hf_stored\n")
    assert box_secret_env(LauncherConfig(), env=home) == {"HF_TOKEN": "hf_stored"}
    env = {**home, "HF_TOKEN": "hf_exported", "HF_ENDPOINT": "https://mirror.example", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    assert box_secret_env(LauncherConfig(), env=env) == {"HF_TOKEN": "hf_exported", "HF_ENDPOINT": "https://mirror.example"}
    (tmp_path / "elsewhere").write_text("hf_from_path")
    assert box_secret_env(LauncherConfig(), env={**home, "HF_TOKEN_PATH": str(tmp_path / "elsewhere")})["HF_TOKEN"] == "hf_from_path"


def test_empty_objects_do_not_stall_the_next_request(store, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    started = time.monotonic()
    store.write_text(f"{RUN}/a.log", "")
    store.put_file(empty, f"{RUN}/b.log")
    store.write_text(f"{RUN}/c.log", "after")
    assert time.monotonic() - started < 3
    assert store.read_text(f"{RUN}/a.log") == "" and store.read_text(f"{RUN}/b.log") == ""
    assert store.read_text(f"{RUN}/c.log") == "after"


# ----------------------------------------------------------------------------- issue 14
@pytest.mark.parametrize("kind", S3_KINDS)
def test_multipart_upload_passes_a_strict_vendor(request, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMBOX_S3_CHUNK_MB", "5")  # 12 MB: three parts (CreateMultipartUpload, UploadPart, Complete)
    store, _, _ = s3_kind_store(request, kind)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    store.put_file(big, f"{RUN}/big.bin", sha256=sha256_file(big))
    assert store.hash_object(f"{RUN}/big.bin") == sha256_file(big)
    assert store.object_sha256(f"{RUN}/big.bin") == sha256_file(big)


def test_boto_default_checksums_are_refused_by_the_strict_proxy(request, strict_proxy, tmp_path):
    """The proxy is strict for real: boto3's defaults (CRC32 trailers) are refused as B2 does."""
    server, bucket = s3_endpoint_for(request, "b2")
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name=server.region,
                          config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_supported"))
    with pytest.raises(Exception, match="Unsupported header 'x-amz-"):
        client.put_object(Bucket=bucket, Key="x", Body=b"data")
    assert strict_proxy.refused
    strict_proxy.refused.clear()  # expected here; the fixture fails a test on any other refusal


def test_a_broken_response_is_retried(request, strict_proxy, tmp_path):
    """Issue 18 item 10: a body cut short (IncompleteRead) or a reset connection is tried again."""
    store, _, _ = s3_kind_store(request, "b2")
    store.write_text(f"{RUN}/metrics.jsonl", '{"step": 1}\n' * 2000)
    strict_proxy.inject("GET", "metrics.jsonl", "truncate")
    assert store.read_text(f"{RUN}/metrics.jsonl") == '{"step": 1}\n' * 2000
    strict_proxy.inject("GET", "metrics.jsonl", "reset")
    assert store.read_text(f"{RUN}/metrics.jsonl").count("\n") == 2000
    strict_proxy.inject("PUT", "train.log", "reset")
    store.write_text(f"{RUN}/train.log", "after a reset\n")
    assert store.read_text(f"{RUN}/train.log") == "after a reset\n"
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(300_000))
    store.put_file(src, f"{RUN}/a.bin")
    strict_proxy.inject("GET", "a.bin", "truncate")
    store.get_file(f"{RUN}/a.bin", tmp_path / "back.bin")
    assert sha256_file(tmp_path / "back.bin") == sha256_file(src)
    assert strict_proxy.requests.count(f"GET /{store.bucket}/team/runs/{RUN}/metrics.jsonl") >= 4
    strict_proxy.inject("GET", "metrics.jsonl", "truncate", count=100)  # broken for good: a clear error
    with pytest.raises(StoreError, match="kept breaking"):
        store.read_text(f"{RUN}/metrics.jsonl")


def test_every_s3_failure_is_a_store_error(request, strict_proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMBOX_S3_CHUNK_MB", "5")
    store, _, _ = s3_kind_store(request, "b2")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    strict_proxy.inject("PUT", "uploadId=", "error:400:InvalidRequest", count=100)  # every UploadPart refused
    with pytest.raises(StoreError, match=r"upload to .*big.bin failed at .*InvalidRequest") as info:
        store.put_file(big, f"{RUN}/big.bin")
    assert type(info.value).__module__ == "launcher.store.base"  # not boto3's S3UploadFailedError


def test_clock_skew_is_named_not_blamed_on_credentials(request, strict_proxy):
    store, _, _ = s3_kind_store(request, "b2")
    store.write_text(f"{RUN}/x.txt", "x")
    strict_proxy.clock_offset = 3600.0  # the store's clock is an hour ahead: ours looks an hour behind
    with pytest.raises(StoreError, match=r"clock is off by about 60 minutes .*RequestTimeTooSkewed.*sync the clock"):
        store.list(f"{RUN}/")
    with pytest.raises(StoreError, match=r"clock is off by about 60 minutes") as info:  # HEAD: a bare 403, no error code
        store.stat(f"{RUN}/x.txt")
    assert "credentials" not in str(info.value)
    strict_proxy.clock_offset = 0.0
    assert store.stat(f"{RUN}/x.txt").size == 1


@pytest.mark.parametrize("kind", S3_KINDS)
def test_stale_multipart_uploads_under_the_run_are_aborted(request, kind):
    store, server, bucket = s3_kind_store(request, kind)
    client = server.client()
    mine = client.create_multipart_upload(Bucket=bucket, Key=f"team/runs/{RUN}/checkpoints/step_000200/model.bin")["UploadId"]
    client.upload_part(Bucket=bucket, Key=f"team/runs/{RUN}/checkpoints/step_000200/model.bin", UploadId=mine, PartNumber=1, Body=b"x" * 1024)
    other = client.create_multipart_upload(Bucket=bucket, Key="team/runs/other-run/big.bin")["UploadId"]
    assert store.abort_stale_uploads(f"{RUN}/") == [f"{RUN}/checkpoints/step_000200/model.bin"]
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other]
    assert store.abort_stale_uploads(f"{RUN}/") == []


def test_file_store_removes_cut_off_copies(tmp_path):
    store = FileStore(tmp_path / "store")
    store.write_text(f"{RUN}/checkpoints/step_000100/a.bin", "kept")
    cut = tmp_path / "store" / RUN / "checkpoints" / "step_000100" / ".b.bin.x1y2.tmp"
    cut.write_bytes(b"half")
    assert store.abort_stale_uploads(f"{RUN}/") == [f"{RUN}/checkpoints/step_000100/.b.bin.x1y2.tmp"]
    assert not cut.exists() and store.read_text(f"{RUN}/checkpoints/step_000100/a.bin") == "kept"


def test_reupload_repairs_a_stored_object_whose_bytes_changed(store, tmp_path):
    local = tmp_path / "runs" / RUN
    ckpt = make_checkpoint(local, 100)
    store.upload_checkpoint(RUN, ckpt)
    key = f"{RUN}/checkpoints/step_000100/part0.bin"
    good = store.read_bytes(key)
    store.write_bytes(key, bytes([good[0] ^ 0x01]) + good[1:])  # one flipped bit; size (and S3 metadata) unchanged...
    if isinstance(store, S3Store):  # ...as bit rot leaves it: the recorded sha256 still claims the old bytes
        store.client.copy_object(Bucket=store.bucket, Key=store._full(key), CopySource={"Bucket": store.bucket, "Key": store._full(key)},
                                 Metadata={"sha256": sha256_file(ckpt / "part0.bin")}, MetadataDirective="REPLACE")
    assert store.hash_object(key) != sha256_file(ckpt / "part0.bin")
    assert store.upload_checkpoint(RUN, ckpt) == len(good)  # only the bad object is sent again
    assert store.hash_object(key) == sha256_file(ckpt / "part0.bin")
    assert store.latest_checkpoint(RUN).name == "step_000100"
    store.download_checkpoint(RUN, "step_000100", tmp_path / "fetched")


class RewriteDuringUpload(TransferProgress):
    """Rewrites the checkpoint folder (new bytes, new manifest) once the first bytes are sent."""

    def __init__(self, folder: Path):
        self.folder, self.done = folder, False

    def advance(self, nbytes: int) -> None:
        if not self.done:
            self.done = True
            (self.folder / "part0.bin").write_bytes(os.urandom(300_000))
            (self.folder / "part1.bin").write_bytes(os.urandom(5_000))  # a different size too
            write_manifest(self.folder, meta={"step": 100, "rewritten": True})


def test_a_folder_rewritten_during_its_upload_is_uploaded_again_whole(store, tmp_path):
    ckpt = make_checkpoint(tmp_path / "runs" / RUN, 100)
    store.upload_checkpoint(RUN, ckpt, progress=RewriteDuringUpload(ckpt))
    stored = store.read_manifest(f"{RUN}/checkpoints/step_000100")
    assert stored.meta.get("rewritten") is True
    assert stored.files == read_manifest(ckpt).files
    out = tmp_path / "fetched"
    store.download_checkpoint(RUN, "step_000100", out)  # every sha256 matches the stored manifest
    assert sha256_file(out / "part0.bin") == sha256_file(ckpt / "part0.bin")


def test_newest_verifying_checkpoint_is_chosen_and_the_bad_one_named(store, tmp_path):
    local = tmp_path / "runs" / RUN
    store.upload_checkpoint(RUN, make_checkpoint(local, 100))
    store.upload_checkpoint(RUN, make_checkpoint(local, 200))
    key = f"{RUN}/checkpoints/step_000200/part1.bin"
    store.write_bytes(key, bytes(len(store.read_bytes(key))))
    skipped = []
    chosen, out = store.download_newest_verified(RUN, lambda c: tmp_path / "out" / c.name, on_skip=lambda c, why: skipped.append((c.name, why)))
    assert chosen.name == "step_000100" and out == tmp_path / "out" / "step_000100"
    verify_manifest(out, check_hashes=True)
    assert [name for name, _ in skipped] == ["step_000200"] and "part1.bin" in skipped[0][1]
    assert not (tmp_path / "out" / "step_000200").exists() and not (tmp_path / "out" / ".step_000200.partial").exists()


def test_bit_rot_inside_the_server_is_found_and_repaired(request, tmp_path):
    """Bytes changed on the S3 server's own disk (metadata untouched) are caught by verification."""
    store, server, bucket = s3_kind_store(request, "rclone")
    ckpt = make_checkpoint(tmp_path / "runs" / RUN, 100)
    store.upload_checkpoint(RUN, ckpt)
    on_disk = server.data_dir / bucket / "team" / "runs" / RUN / "checkpoints" / "step_000100" / "part0.bin"
    with open(on_disk, "r+b") as f:  # in place: the server's metadata (kept beside the file) stays
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0x01]))
    assert store.upload_checkpoint(RUN, ckpt) == (ckpt / "part0.bin").stat().st_size
    assert on_disk.read_bytes() == (ckpt / "part0.bin").read_bytes()


def test_storage_keep_defaults_to_three_and_is_checked():
    from runcontract.configlib import validate
    from runcontract.errors import ConfigError

    assert validate(StorageConfig, {}, "run.yaml: storage").keep == 3
    with pytest.raises(ConfigError, match="keep"):
        validate(StorageConfig, {"keep": 0}, "run.yaml: storage")
