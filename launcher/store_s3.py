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
  re-upload can skip what is already there.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

from launcher.store import ObjectInfo, Store, StoreError, TransferProgress, check_key
from launcher.store_file import max_bandwidth
from trainer.errors import UserError

_MB = 1024 * 1024
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403", "InvalidToken", "ExpiredToken"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


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
                connect_timeout=15,
                read_timeout=120,
                max_pool_connections=max(10, 2 * concurrency),
            ),
        )
        self.client = self._session.client("s3", **self._client_args)
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
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = self.describe(key)
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), error.get("Message", "")
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it or fix storage.url.") from None
            if code in _CREDENTIAL_CODES:
                raise StoreError(
                    f"{action} {where}: the store refused the credentials ({code}). Check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY (or the profile) and that the key may access this bucket."
                ) from None
            raise StoreError(f"{action} {where} failed at {self.endpoint}: {code} {message}".strip()) from None
        except NoCredentialsError:
            raise StoreError("no S3 credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or storage.profile.") from None
        except BotoCoreError as exc:
            raise StoreError(f"{action} {where}: cannot reach {self.endpoint} ({exc}). Check storage.endpoint_url and the network; retried already.") from None

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
            client.put_object(Bucket=self.bucket, Key=self._full(key), Body=b"", **extra)
        client.close()

    def put_file(self, local: Path, key: str, *, sha256: Optional[str] = None, progress: Optional[TransferProgress] = None) -> None:
        if Path(local).stat().st_size == 0:
            return self._put_empty(key, sha256)
        extra = {"Metadata": {"sha256": sha256}} if sha256 else None
        with self._errors("upload to", key):
            self.client.upload_file(
                str(local), self.bucket, self._full(key), ExtraArgs=extra, Config=self.upload_config,
                Callback=progress.advance if progress else None,
            )

    def get_file(self, key: str, local: Path, *, progress: Optional[TransferProgress] = None) -> None:
        from botocore.exceptions import ClientError

        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("download of", key):
            try:
                self.client.download_file(
                    self.bucket, self._full(key), str(local), Config=self.download_config,
                    Callback=progress.advance if progress else None,
                )
            except ClientError as exc:
                if self._missing(exc):
                    raise StoreError(f"{self.describe(key)} is not in the store.") from None
                raise

    def read_bytes(self, key: str) -> Optional[bytes]:
        from botocore.exceptions import ClientError

        with self._errors("read of", key):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()
            except ClientError as exc:
                if self._missing(exc):
                    return None
                raise

    def write_bytes(self, key: str, data: bytes) -> None:
        if not data:
            return self._put_empty(key)
        with self._errors("write of", key):
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def list(self, prefix: str) -> list[ObjectInfo]:
        result = []
        with self._errors("listing of", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full_prefix(prefix)):
                for obj in page.get("Contents", []):
                    result.append(ObjectInfo(self._rel(obj["Key"]), int(obj["Size"]), obj["LastModified"].timestamp()))
        return sorted(result, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        with self._errors("delete of", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def stat(self, key: str) -> Optional[ObjectInfo]:
        from botocore.exceptions import ClientError

        with self._errors("stat of", key):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                if self._missing(exc):
                    return None
                raise
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp(), meta.get("sha256"))
