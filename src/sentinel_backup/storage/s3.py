"""The S3 destinations: ``s3`` (AWS or any endpoint) and ``minio`` (an S3-compatible server).

Objects live under ``<prefix><key>`` in one bucket; keys may hold folders (``model.layout``).
The streaming writer and the resuming reader are in ``s3_transfer``.

Writes are streaming multipart uploads. Parts start at 16 MiB and double every 1,250
parts (16 MiB x 1,250 = 19.5 GiB, then 32 MiB, ... up to 2 GiB): 10,000 parts hold
4,980 GiB (5.3 TB, near S3's 5 TiB object limit), while a dump under 19 GiB never
buffers more than 16 MiB, one of 100 GiB 64 MiB, one of 1 TiB 512 MiB. One part
is buffered while the previous one uploads, so memory stays at about two parts. Each
part carries its SHA-256 (``x-amz-checksum-sha256``), which the store verifies before
accepting it; ``commit()`` completes the upload and compares the stored size and the
composite checksum with what was sent. A store without checksum support gets plain
uploads (``checksums=False``, or detected on the first refusal).

Transient failures (timeouts, 5xx, throttling, dropped connections) are retried by
botocore's "standard" mode; permanent ones (no bucket, access denied, bad keys, nothing
listening at the endpoint) fail at once as StorageError naming the destination, the
bucket, the store's error code and the fix. Secrets never appear in messages.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from sentinel_backup.errors import NotFound, ObjectLocked, StorageError, TransientStorageError
from sentinel_backup.storage.aws_env import botocore_session
from sentinel_backup.storage.base import Capabilities, ObjectInfo, check_key, put_via_writer, split_prefix
from sentinel_backup.storage.s3_transfer import (  # noqa: F401 - part sizes are part of this module's API
    MAX_PART_SIZE,
    PART_SIZE,
    PARTS_PER_STEP,
    FailFast,
    S3Reader,
    S3Writer,
    part_size_for,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class S3Config:
    """One S3 destination. Built and validated by ``registry``."""

    name: str  # "s3" or "minio"
    bucket: str
    prefix: str = ""  # "" or "some/prefix/"
    region: str | None = None
    endpoint_url: str | None = None
    access_key: str | None = field(default=None, repr=False)  # None: the standard AWS chain
    secret_key: str | None = field(default=None, repr=False)
    storage_class: str | None = None
    lock_days: int | None = None
    lock_mode: str = "GOVERNANCE"
    path_style: bool = False
    variable: str = "S3_BUCKET"  # the setting that names the bucket, for hints
    aws_env: Mapping[str, str] = field(default_factory=dict, repr=False)  # AWS_* from the .env (aws_env.py)


def _no_retry_on_refused(caught_exception: BaseException | None = None, **_: Any) -> None:
    """needs-retry hook: nothing listens at the endpoint (refused, unknown host) is permanent."""
    if isinstance(caught_exception, EndpointConnectionError):
        raise FailFast(caught_exception)


class S3Storage:
    """Storage protocol over one bucket/prefix."""

    capabilities = Capabilities(object_lock=True, store_checksums=True, multipart=True)

    def __init__(self, config: S3Config, *, part_size: int = PART_SIZE, checksums: bool = True) -> None:
        self.config = config
        self.name = config.name
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.part_size = part_size
        self.checksums = checksums
        session = boto3.session.Session(
            aws_access_key_id=config.access_key, aws_secret_access_key=config.secret_key,
            region_name=config.region, botocore_session=botocore_session(config.aws_env))
        self.client: S3Client = session.client(
            "s3", endpoint_url=config.endpoint_url,
            config=Config(
                retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
                connect_timeout=10, read_timeout=120,
                s3={"addressing_style": "path" if config.path_style else "auto"},
                request_checksum_calculation="when_required",
                signature_version="s3v4",
            ))
        self.client.meta.events.register_first("needs-retry.s3", _no_retry_on_refused)

    # --- helpers ---------------------------------------------------------------------
    def describe(self) -> str:
        where = f" at {self.config.endpoint_url}" if self.config.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def full_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def fail(self, exc: BaseException, action: str, key: str | None = None) -> NoReturn:
        raise self.error(exc, action, key) from None

    def error(self, exc: BaseException, action: str, key: str | None = None) -> StorageError | NotFound:
        """Translate a boto failure into a StorageError (or NotFound) a user can act on."""
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, FailFast):
            exc = exc.cause
        cfg, bucket = self.config, self.bucket
        what = f"{self.name}: cannot {action} " + (f"s3://{bucket}/{self.prefix}{key}" if key else f"bucket {bucket}")
        keys = ("MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or MINIO_SECRET_KEY_FILE)" if cfg.name == "minio"
                else "the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment or .env, "
                "AWS_PROFILE or the instance role)")
        endpoint_var = "MINIO_ENDPOINT" if cfg.name == "minio" else "S3_ENDPOINT_URL"
        region_var = "MINIO_REGION" if cfg.name == "minio" else "S3_REGION"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(err.get("Code") or status or "unknown")
            message = f"{what}: {code}" + (f" ({err['Message']})" if err.get("Message") else "")
            hints = {
                "NoSuchBucket": f"create bucket {bucket} or fix {cfg.variable}",
                "AccessDenied": f"grant these credentials s3:PutObject, s3:GetObject, s3:ListBucket, s3:DeleteObject "
                                f"and s3:AbortMultipartUpload (versioned buckets: s3:ListBucketVersions, "
                                f"s3:DeleteObjectVersion) on {bucket}/{self.prefix}*",
                "InvalidAccessKeyId": f"the store does not know this access key: check {keys}",
                "SignatureDoesNotMatch": f"the secret key is wrong: check {keys}",
                "RequestTimeTooSkewed": "fix this machine's clock (e.g. enable NTP)",
                "AuthorizationHeaderMalformed": f"set {region_var} to the bucket's region",
                "PermanentRedirect": f"the bucket is in another region: set {region_var} to it",
                "InvalidStorageClass": "set S3_STORAGE_CLASS to a class this store supports",
                "NoSuchUpload": "the upload was aborted meanwhile (e.g. by a lifecycle rule); run the backup again",
            }
            if code in ("NoSuchKey", "404", "NotFound") and key is not None:
                return NotFound(f"{what}: it does not exist", "run `sentinel-backup list` to see what is stored")
            if code in ("404", "NotFound"):
                code, message = "NoSuchBucket", f"{what}: NoSuchBucket"
            if code in hints:
                return StorageError(message, hints[code])
            failed = TransientStorageError if isinstance(status, int) and status >= 500 else StorageError
            return failed(message, f"the store failed ({code}) after {MAX_ATTEMPTS} attempts; check its health"
                          " and run again")
        if isinstance(exc, EndpointConnectionError):
            return StorageError(f"{what}: cannot connect to {cfg.endpoint_url or 'the S3 endpoint'}",
                                f"check {endpoint_var} and that the server is running and reachable")
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"{what}: no credentials found", f"provide {keys}")
        return TransientStorageError(f"{what}: {type(exc).__name__}: {exc}",
                                     "a network or store failure that persisted through retries; run again")

    def call(self, action: str, key: str | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError, FailFast) as exc:
            self.fail(exc, action, key)

    def artifact_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.config.storage_class:
            args["StorageClass"] = self.config.storage_class
        if self.config.lock_days:
            args["ObjectLockMode"] = self.config.lock_mode
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.config.lock_days)
        return args

    def _info(self, key: str, size: int, modified: datetime) -> ObjectInfo:
        return ObjectInfo(key, size, modified.astimezone(UTC))

    # --- the Storage protocol ------------------------------------------------------
    def prepare(self) -> None:
        """Prove the bucket exists and the credentials may list it (no write)."""
        self.call("list", None, self.client.list_objects_v2, Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def open_writer(self, key: str, *, artifact: bool = True) -> S3Writer:
        return S3Writer(self, key, self.artifact_args() if artifact else {})

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return put_via_writer(self, key, data)

    def open_reader(self, key: str) -> BinaryIO:
        return io.BufferedReader(S3Reader(self, key), buffer_size=1024 * 1024)

    def read_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as reader:
            return reader.read()

    def stat(self, key: str) -> ObjectInfo | None:
        full = self.full_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            self.fail(exc, "read", key)
        except (BotoCoreError, FailFast) as exc:
            self.fail(exc, "read", key)
        return self._info(key, head["ContentLength"], head["LastModified"])

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        """One ListObjectsV2 walk; without ``deep`` the store itself leaves out the folders below
        (``Delimiter``), so listing the root never reads the WAL archive's keys."""
        folder, _ = split_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = (paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix) if deep else
                 paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"))
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if name and (deep or "/" not in name[len(folder):]):
                        yield self._info(name, obj["Size"], obj["LastModified"])
        except (ClientError, BotoCoreError, FailFast) as exc:
            self.fail(exc, "list", None)

    def list_partials(self) -> Iterator[ObjectInfo]:
        return iter(())  # an unfinished multipart upload is no object (abort_stale_uploads)

    def delete(self, key: str) -> None:
        """Remove the object, every version of it where the bucket keeps versions.

        ObjectLocked when a retention or legal hold protects it (it stays listed)."""
        full = self.full_key(key)
        versions: list[str] = []
        try:
            listing = self.client.list_object_versions(Bucket=self.bucket, Prefix=full)
            for entry in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]:
                if entry["Key"] == full and entry.get("VersionId") not in (None, "null"):
                    versions.append(entry["VersionId"])
        except ClientError:
            pass  # no ListBucketVersions permission or not supported: delete the current object
        except (BotoCoreError, FailFast) as exc:
            self.fail(exc, "delete", key)
        if not versions:
            self.call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=full)
            return
        for version in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=version)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "AccessDenied" and self._locked(full, version):
                    raise ObjectLocked(f"{self.name}: s3://{self.bucket}/{full} is under object lock",
                                       "it can be removed when its retention ends") from None
                self.fail(exc, "delete", key)
            except (BotoCoreError, FailFast) as exc:
                self.fail(exc, "delete", key)

    def _locked(self, full: str, version: str) -> bool:
        try:
            retention = self.client.get_object_retention(Bucket=self.bucket, Key=full, VersionId=version)
        except ClientError:
            return True  # refused on a versioned object whose retention we may not read: assume the lock
        until = retention.get("Retention", {}).get("RetainUntilDate")
        return until is None or until > datetime.now(UTC)

    def is_locked(self, key: str) -> bool:
        """True while a retention date or legal hold protects the object (asked by retention)."""
        full = self.full_key(key)
        try:
            until = self.client.get_object_retention(Bucket=self.bucket, Key=full)["Retention"].get("RetainUntilDate")
            if until is not None and until > datetime.now(UTC):
                return True
        except ClientError:
            pass  # no lock configured on the bucket or none on this object
        except (BotoCoreError, FailFast) as exc:
            self.fail(exc, "read", key)
        try:
            hold = self.client.get_object_legal_hold(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError, FailFast):
            return False
        return hold.get("LegalHold", {}).get("Status") == "ON"

    def locate(self, key: str) -> dict[str, str]:
        return {"key": key}

    def local_path(self, key: str) -> Path | None:
        return None  # an object in a bucket is no file here

    # --- beyond the protocol ------------------------------------------------------
    def probe(self) -> str:
        """Write, read back and delete a small object; a summary, or StorageError."""
        key = f"sentinel-probe-{uuid.uuid4().hex}.tmp"
        payload = f"sentinel-backup probe {datetime.now(UTC).isoformat()}".encode()
        self.put_bytes(key, payload)
        try:
            if self.read_bytes(key) != payload:
                raise StorageError(f"{self.name}: the probe object read back from {self.describe()} differs",
                                   "the store corrupts data; check its health")
        finally:
            self.delete(key)
        return f"{self.name}: {self.describe()}: write, read and delete OK"

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        """Abort multipart uploads under the prefix started before now - older_than (crashed runs)."""
        cutoff, count = datetime.now(UTC) - older_than, 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        try:
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        count += 1
        except (ClientError, BotoCoreError, FailFast) as exc:
            self.fail(exc, "clean up uploads in", None)
        return count
