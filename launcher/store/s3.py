"""``s3://bucket/prefix`` on any S3-compatible endpoint (AWS S3, Cloudflare R2, Backblaze B2,
MinIO, SeaweedFS, rclone) through boto3.

- Client: ``endpoint_url``, ``region``, ``addressing_style`` from the StorageConfig; botocore
  retries in "standard" mode (transient errors and throttling are retried with backoff).
- Credentials: ``env`` reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/AWS_SESSION_TOKEN)
  from the environment; ``profile`` reads a named profile, falling back to those variables
  where the profile does not exist (the box gets the profile's keys in its environment).
- Large files go multipart, parts in parallel (s3transfer). Tunable by environment:
  ``LLMBOX_S3_CHUNK_MB`` (part size, default 16), ``LLMBOX_S3_CONCURRENCY`` (parts in flight,
  default 8), ``LLMBOX_UPLOAD_MAX_BANDWIDTH`` / ``LLMBOX_DOWNLOAD_MAX_BANDWIDTH`` (bytes/s caps,
  default none).
- Each uploaded file carries its sha256 in the object's metadata (``x-amz-meta-sha256``), so a
  re-upload can skip what is already there; ``hash_object`` reads the stored bytes back and
  hashes them, which is what verification trusts.
- Checksums: botocore >= 1.36 adds CRC32 checksums to every upload by default
  (``x-amz-sdk-checksum-algorithm``, ``x-amz-trailer``, ``Content-Encoding: aws-chunked``).
  Backblaze B2 and other S3-compatible servers refuse them ("Unsupported header
  'x-amz-sdk-checksum-algorithm' received for this API call": boto/boto3#4409, #4396,
  cloudflare/cloudflare-docs#19236; https://www.backblaze.com/docs/cloud-storage-s3-compatible-api
  "Unsupported Features"). The client sets ``request_checksum_calculation`` and
  ``response_checksum_validation`` to ``when_required`` (botocore Config, documented at
  https://botocore.amazonaws.com/v1/documentation/api/latest/reference/config.html, read
  2026-11-25): checksums only where an operation requires one. Integrity comes from our own
  sha256 read-back instead.
- Transient transport errors (a connection reset, a body cut short: IncompleteRead) are retried
  with backoff around each call (``_TRANSIENT``), on top of botocore's own retries, which do not
  cover a response body that breaks while it is being read.
- Stale multipart uploads (a kill mid-upload leaves parts that are billed and invisible to
  listings) are found with ListMultipartUploads under a prefix and aborted
  (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html and
  API_AbortMultipartUpload.html, read 2026-11-25).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

from launcher.store.base import ObjectInfo, Store, StoreError, TransferProgress, check_key
from launcher.store.file import max_bandwidth
from runcontract.errors import UserError

_MB = 1024 * 1024
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403", "InvalidToken", "ExpiredToken"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_SKEW_CODES = {"RequestTimeTooSkewed", "RequestExpired"}
_SKEW_WARN_S = 5 * 60  # AWS allows 15 minutes; a clock this far off explains a refusal
_RETRIES = 5
T = TypeVar("T")


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Transport errors worth another try: a body that broke while it was read. (botocore retries
    connection errors and timeouts before a response itself: not repeated here, or a wrong
    endpoint would take minutes to fail.)"""
    import http.client

    from botocore.exceptions import IncompleteReadError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    return (IncompleteReadError, ResponseStreamingError, ProtocolError, http.client.IncompleteRead, ConnectionResetError, BrokenPipeError)


def _env_int(name: str, default: int, low: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a whole number.") from None
    if value < low:
        raise UserError(f"{name}={value} is below the smallest allowed value {low}.")
    return value


def env_credentials(env: Optional[dict] = None) -> Optional[dict[str, str]]:
    """The AWS key pair (and session token) from the environment, or None when incomplete."""
    env = os.environ if env is None else env
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    creds = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    if env.get("AWS_SESSION_TOKEN"):
        creds["aws_session_token"] = env["AWS_SESSION_TOKEN"]
    return creds


def make_session(storage, env: Optional[dict] = None):
    """A boto3 Session with the credentials the StorageConfig names (see the module doc)."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    region = storage.region or (env or os.environ).get("AWS_DEFAULT_REGION") or "us-east-1"
    creds = env_credentials(env)
    if storage.credentials == "profile":
        try:
            session = boto3.Session(profile_name=storage.profile, region_name=region)
            if session.get_credentials() is None:
                raise StoreError(f"AWS profile {storage.profile!r} has no credentials; add aws_access_key_id/aws_secret_access_key to it (~/.aws/credentials).")
            return session
        except ProfileNotFound:
            if creds is None:
                raise StoreError(
                    f"storage credentials: profile {storage.profile!r} is not in ~/.aws/config or ~/.aws/credentials "
                    "(and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set). Create the profile "
                    f"(aws configure --profile {storage.profile}) or fix storage.profile."
                ) from None
    if creds is None:
        raise StoreError(
            "storage credentials: env needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
            "(the keys of your S3/R2/B2 bucket). Export them in this shell, or set storage.credentials: profile "
            "with storage.profile naming an AWS profile. Never put keys in the config file."
        )
    return boto3.Session(region_name=region, **creds)


class S3Store(Store):
    def __init__(self, storage, env: Optional[dict] = None):
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config as BotoConfig

        rest = storage.url[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise UserError(f"storage url {storage.url!r} names no bucket: use s3://bucket/prefix.")
        self.prefix = prefix.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.endpoint = storage.endpoint_url or "AWS S3"
        concurrency = _env_int("LLMBOX_S3_CONCURRENCY", 8, 1)
        chunk = _env_int("LLMBOX_S3_CHUNK_MB", 16, 5) * _MB
        self._session = make_session(storage, env)
        self._client_args = dict(
            endpoint_url=storage.endpoint_url,
            config=BotoConfig(
                s3={"addressing_style": storage.addressing_style},
                retries={"mode": "standard", "max_attempts": 8},  # transient 5xx, throttling, resets
                request_checksum_calculation="when_required",  # B2 & co. refuse the default CRC32 trailers
                response_checksum_validation="when_required",
                connect_timeout=15,
                read_timeout=120,
                max_pool_connections=max(10, 2 * concurrency),
            ),
        )
        self.client = self._session.client("s3", **self._client_args)
        from concurrent.futures import ThreadPoolExecutor

        self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="local-etag")
        self._hashing: dict = {}  # (path, size, mtime_ns) -> Future of _local_etags
        self._hash_lock = threading.Lock()
        self.upload_config = TransferConfig(
            multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=concurrency,
            max_bandwidth=max_bandwidth(), use_threads=True,
        )
        self.download_config = TransferConfig(
            multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=concurrency,
            max_bandwidth=max_bandwidth("download"), use_threads=True,
        )

    # -- names and errors ------------------------------------------------------
    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _full_prefix(self, prefix: str) -> str:
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    @contextlib.contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        """Turn every boto failure into one StoreError paragraph that says what to do."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = self.describe(key)
        try:
            yield
        except ClientError as exc:
            raise self._client_error(action, where, exc) from None
        except _transient_errors() as exc:  # before BotoCoreError: some of these are BotoCoreErrors
            raise StoreError(f"{action} {where}: the connection to {self.endpoint} kept breaking ({type(exc).__name__}: {exc}); "
                             f"tried {_RETRIES} times. Check the network (and storage.endpoint_url), then retry.") from None
        except NoCredentialsError:
            raise StoreError("no S3 credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or storage.profile.") from None
        except BotoCoreError as exc:
            raise StoreError(f"{action} {where}: cannot reach {self.endpoint} ({exc}). Check storage.endpoint_url and the network; retried already.") from None
        except Boto3Error as exc:  # S3UploadFailedError / S3TransferFailedError wrap the ClientError's text
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError):
                raise self._client_error(action, where, cause) from None
            raise StoreError(
                f"{action} {where} failed at {self.endpoint}: {exc}. The transfer was retried; if the store refuses "
                "this request every time, check that storage.endpoint_url is an S3-compatible endpoint and the bucket allows writes."
            ) from None

    def _client_error(self, action: str, where: str, exc) -> StoreError:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), error.get("Message", "")
        skew = _clock_offset(exc.response)
        if code in _SKEW_CODES or (code in _CREDENTIAL_CODES and skew is not None and abs(skew) > _SKEW_WARN_S):
            off = f" by about {abs(skew) / 60:.0f} minutes ({'behind' if skew > 0 else 'ahead of'} the store)" if skew is not None else ""
            return StoreError(
                f"{action} {where}: the store refused the request because this machine's clock is off{off} ({code or 'HTTP 403'}). "
                "S3 signatures are valid only within 15 minutes of the server's time: sync the clock "
                "(timedatectl set-ntp true, or chronyd/ntpd) and retry."
            )
        if code == "NoSuchBucket":
            return StoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it or fix storage.url.")
        if code in _CREDENTIAL_CODES:
            return StoreError(
                f"{action} {where}: the store refused the credentials ({code}). Check AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY (or the profile) and that the key may access this bucket."
            )
        if code == "InvalidArgument" and "Unsupported header" in message:
            return StoreError(
                f"{action} {where}: {self.endpoint} refused a header ({message}). This store does not accept a header "
                "boto3 sends; upgrade llm-box, and report the header if it persists."
            )
        return StoreError(f"{action} {where} failed at {self.endpoint}: {code or 'HTTP error'} {message}".rstrip()
                          + ". Check the bucket's permissions and the storage settings, then retry.")

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call()``, tried again with backoff when the transport breaks (see the module doc)."""
        transient = _transient_errors()
        for attempt in range(_RETRIES):
            try:
                return call()
            except transient:
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(min(0.2 * 2 ** attempt, 5.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _missing(exc) -> bool:
        return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_CODES

    # -- primitives ------------------------------------------------------------
    def _put_empty(self, key: str, sha256: Optional[str] = None) -> None:
        """An empty object through a throwaway client: rclone serve s3 (1.75) leaves a kept-alive
        connection stalled after an empty PUT, so the next request on it would wait for a timeout."""
        client = self._session.client("s3", **self._client_args)
        extra = {"Metadata": {"sha256": sha256}} if sha256 else {}
        with self._errors("write of", key):
            self._retrying(lambda: client.put_object(Bucket=self.bucket, Key=self._full(key), Body=b"", **extra))
        client.close()

    def _local_hashes(self, local: Path) -> tuple[str, str, str]:
        """``_local_etags`` of ``local``: computed beside its upload when put_file started it."""
        st = local.stat()
        with self._hash_lock:
            pending = self._hashing.pop((str(local), st.st_size, st.st_mtime_ns), None)
        return pending.result() if pending is not None else _local_etags(local, self.upload_config.multipart_chunksize)

    def will_verify(self, local: Path) -> None:
        """Hash ``local`` (``_local_etags``) on a thread while it uploads, for ``verify_object``."""
        st = Path(local).stat()
        if st.st_size == 0:
            return
        with self._hash_lock:
            if len(self._hashing) > 64:  # never collected (a failed upload): do not grow without bound
                self._hashing.clear()
            self._hashing[(str(local), st.st_size, st.st_mtime_ns)] = self._hash_pool.submit(
                _local_etags, Path(local), self.upload_config.multipart_chunksize)

    def put_file(self, local: Path, key: str, *, sha256: Optional[str] = None, progress: Optional[TransferProgress] = None) -> None:
        if Path(local).stat().st_size == 0:
            return self._put_empty(key, sha256)
        extra = {"Metadata": {"sha256": sha256}} if sha256 else None
        with self._errors("upload to", key):
            self._retrying(lambda: self.client.upload_file(
                str(local), self.bucket, self._full(key), ExtraArgs=extra, Config=self.upload_config,
                Callback=progress.advance if progress else None,
            ))

    def get_file(self, key: str, local: Path, *, progress: Optional[TransferProgress] = None) -> None:
        from botocore.exceptions import ClientError

        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("download of", key):
            try:
                self._retrying(lambda: self.client.download_file(
                    self.bucket, self._full(key), str(local), Config=self.download_config,
                    Callback=progress.advance if progress else None,
                ))
            except ClientError as exc:
                if self._missing(exc):
                    raise StoreError(f"{self.describe(key)} is not in the store.") from None
                raise

    def _get_body(self, key: str, consume: Callable) -> Optional[object]:
        """GET ``key`` and hand its streaming body to ``consume``; None when missing. The whole
        request is tried again when the body breaks mid-read (issue 18: a read raced a re-upload)."""
        from botocore.exceptions import ClientError

        def once():
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
            except ClientError as exc:
                if self._missing(exc):
                    return None
                raise
            with contextlib.closing(body):
                return consume(body)

        with self._errors("read of", key):
            return self._retrying(once)

    def read_bytes(self, key: str) -> Optional[bytes]:
        return self._get_body(key, lambda body: body.read())

    def hash_object(self, key: str) -> Optional[str]:
        def digest(body) -> str:
            h = hashlib.sha256()
            for chunk in body.iter_chunks(1 << 20):
                h.update(chunk)
            return h.hexdigest()

        return self._get_body(key, digest)

    def verify_object(self, key: str, local: Path, sha256: str) -> bool:
        """The store's own checksum first: S3 servers report an ETag that is the MD5 of the stored
        bytes (single PUT; rclone for any object) or the MD5 of the parts' MD5s plus "-N"
        (multipart: AWS, moto). One pass over the local file computes both, and its sha256: if
        the ETag matches and the local file still hashes to ``sha256``, the stored bytes do too.
        Any other ETag (other vendors, SSE-KMS) means nothing: the object is read back and hashed."""
        head = self._head(key)
        if head is None:
            return False
        etag = str(head.get("ETag") or "").strip('"')
        if etag and Path(local).is_file() and Path(local).stat().st_size == int(head["ContentLength"]):
            whole, parts, digest = self._local_hashes(Path(local))
            if etag in (whole, parts) and digest == sha256:
                return True
        return self.hash_object(key) == sha256

    def write_bytes(self, key: str, data: bytes) -> None:
        if not data:
            return self._put_empty(key)
        with self._errors("write of", key):
            self._retrying(lambda: self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data))

    def list(self, prefix: str) -> list[ObjectInfo]:
        def once() -> list[ObjectInfo]:
            result = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full_prefix(prefix)):
                for obj in page.get("Contents", []):
                    result.append(ObjectInfo(self._rel(obj["Key"]), int(obj["Size"]), obj["LastModified"].timestamp()))
            return result

        with self._errors("listing of", prefix):
            return sorted(self._retrying(once), key=lambda o: o.key)

    def delete(self, key: str) -> None:
        with self._errors("delete of", key):
            self._retrying(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._full(key)))

    def _head(self, key: str) -> Optional[dict]:
        from botocore.exceptions import ClientError

        def once():
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                if self._missing(exc):
                    return None
                raise

        with self._errors("stat of", key):
            return self._retrying(once)

    def stat(self, key: str) -> Optional[ObjectInfo]:
        head = self._head(key)
        if head is None:
            return None
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp(), meta.get("sha256"))

    def abort_stale_uploads(self, prefix: str) -> list[str]:
        """Abort every unfinished multipart upload under ``prefix`` (ListMultipartUploads, then
        AbortMultipartUpload per upload); returns the keys whose uploads were aborted."""
        aborted = []
        with self._errors("listing of unfinished uploads under", prefix):
            paginator = self.client.get_paginator("list_multipart_uploads")
            uploads = [u for page in self._retrying(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self._full_prefix(prefix))))
                       for u in page.get("Uploads", [])]
        for upload in uploads:
            key = self._rel(upload["Key"])
            with self._errors("abort of the unfinished upload of", key):
                self._retrying(lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]))
            aborted.append(key)
        return aborted


def _local_etags(path: Path, part_size: int) -> tuple[str, str, str]:
    """(the ETags S3 would give ``path``: its MD5, and MD5 of its ``part_size`` parts' MD5s plus
    "-N"; its sha256), in one read. sha256 runs on a second thread (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    whole, digest, part_md5s = hashlib.md5(), hashlib.sha256(), []
    with open(path, "rb") as f, ThreadPoolExecutor(1) as pool:
        while chunk := f.read(part_size):
            pending = pool.submit(digest.update, chunk)
            whole.update(chunk)
            part_md5s.append(hashlib.md5(chunk).digest())
            pending.result()
    return whole.hexdigest(), f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}", digest.hexdigest()


def _clock_offset(response: dict) -> Optional[float]:
    """Seconds the server's clock (its Date header) is ahead of ours, or None when it sent none."""
    date = (response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).timestamp() - time.time()
    except (TypeError, ValueError):
        return None
