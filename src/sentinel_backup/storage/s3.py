"""The S3 destinations: ``s3`` (AWS or any endpoint) and ``minio`` (an S3-compatible server).

Objects live under ``<prefix><key>`` in one bucket; keys are flat names.

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

import base64
import contextlib
import hashlib
import io
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from sentinel_backup.errors import NotFound, ObjectLocked, StorageError
from sentinel_backup.storage.aws_env import botocore_session
from sentinel_backup.storage.base import Capabilities, ObjectInfo, check_key, put_via_writer, split_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024
PARTS_PER_STEP = 1250
MAX_PART_SIZE = 5 * 1024**3
MAX_ATTEMPTS = 4
READ_RESUMES = 3
_NO_CHECKSUM_CODES = {"NotImplemented", "InvalidArgument", "InvalidRequest", "XNotImplemented"}


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


def part_size_for(part_number: int, base: int = PART_SIZE) -> int:
    """Size of part ``part_number`` (1-based): doubles every PARTS_PER_STEP parts."""
    return min(base << ((part_number - 1) // PARTS_PER_STEP), MAX_PART_SIZE)


class _FailFast(Exception):  # an internal signal, translated before it leaves this module
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _no_retry_on_refused(caught_exception: BaseException | None = None, **_: Any) -> None:
    """needs-retry hook: nothing listens at the endpoint (refused, unknown host) is permanent."""
    if isinstance(caught_exception, EndpointConnectionError):
        raise _FailFast(caught_exception)


def _b64sha(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


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
        if isinstance(exc, _FailFast):
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
            hint = hints.get(code) or (f"the store failed ({code}) after {MAX_ATTEMPTS} attempts; "
                                       "check its health and run again")
            return StorageError(message, hint)
        if isinstance(exc, EndpointConnectionError):
            return StorageError(f"{what}: cannot connect to {cfg.endpoint_url or 'the S3 endpoint'}",
                                f"check {endpoint_var} and that the server is running and reachable")
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"{what}: no credentials found", f"provide {keys}")
        return StorageError(f"{what}: {type(exc).__name__}: {exc}",
                            "a network or store failure that persisted through retries; run again")

    def call(self, action: str, key: str | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError, _FailFast) as exc:
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
        except (BotoCoreError, _FailFast) as exc:
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
        except (ClientError, BotoCoreError, _FailFast) as exc:
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
        except (BotoCoreError, _FailFast) as exc:
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
            except (BotoCoreError, _FailFast) as exc:
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
        except (BotoCoreError, _FailFast) as exc:
            self.fail(exc, "read", key)
        try:
            hold = self.client.get_object_legal_hold(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError, _FailFast):
            return False
        return hold.get("LegalHold", {}).get("Status") == "ON"

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
        except (ClientError, BotoCoreError, _FailFast) as exc:
            self.fail(exc, "clean up uploads in", None)
        return count


class S3Writer:
    """A streaming upload: a single PutObject when it fits in one part, multipart otherwise.

    ``verified_by_store`` is true after commit when the store confirmed the SHA-256 of every part."""

    def __init__(self, storage: S3Storage, key: str, extra: dict[str, Any]) -> None:
        self.storage, self.key, self.extra = storage, key, extra
        self.full = storage.full_key(key)
        self.buffer = bytearray()
        self.size = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.digests: list[bytes] = []
        self.pending: Future[None] | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.done = False
        self.verified_by_store = False

    def write(self, data: bytes) -> None:
        if self.done:
            raise StorageError(f"{self.storage.name}: write to {self.key} after commit/abort", "this is a bug")
        self.buffer += data
        self.size += len(data)
        try:
            while len(self.buffer) >= part_size_for(len(self.parts) + 1, self.storage.part_size):
                limit = part_size_for(len(self.parts) + 1, self.storage.part_size)
                chunk = bytes(self.buffer[:limit])
                del self.buffer[:limit]
                self._send_part(chunk)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, Exception):
                raise self.storage.error(exc, "upload", self.key) from None
            raise

    def _start(self) -> None:
        s = self.storage
        kwargs: dict[str, Any] = {"Bucket": s.bucket, "Key": self.full, **self.extra}
        if s.checksums:
            try:
                self.upload_id = s.client.create_multipart_upload(**kwargs, ChecksumAlgorithm="SHA256")["UploadId"]
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _NO_CHECKSUM_CODES:
                    raise
                log.warning("%s: the store refuses SHA-256 checksums (%s); uploading without", s.name, exc)
                s.checksums = False
        self.upload_id = s.client.create_multipart_upload(**kwargs)["UploadId"]

    def _send_part(self, chunk: bytes) -> None:
        if self.upload_id is None:
            self._start()
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"s3-{self.storage.name}")
        self._wait()
        number = len(self.parts) + 1
        digest = hashlib.sha256(chunk).digest()
        part: dict[str, Any] = {"PartNumber": number}
        self.parts.append(part)
        self.digests.append(digest)
        assert self.pool is not None
        self.pending = self.pool.submit(self._upload_part, chunk, part, digest)

    def _upload_part(self, chunk: bytes, part: dict[str, Any], digest: bytes) -> None:
        s = self.storage
        kwargs: dict[str, Any] = {"Bucket": s.bucket, "Key": self.full, "UploadId": self.upload_id,
                                  "PartNumber": part["PartNumber"], "Body": chunk}
        if s.checksums:
            kwargs["ChecksumSHA256"] = _b64sha(digest)
        response = s.client.upload_part(**kwargs)
        part["ETag"] = response["ETag"]
        if s.checksums:
            part["ChecksumSHA256"] = kwargs["ChecksumSHA256"]
            part["confirmed"] = response.get("ChecksumSHA256") == kwargs["ChecksumSHA256"]

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def commit(self) -> ObjectInfo:
        if self.done:
            raise StorageError(f"{self.storage.name}: commit of {self.key} after commit/abort", "this is a bug")
        s = self.storage
        try:
            expected = self._put_single() if self.upload_id is None else self._complete()
            head = s.client.head_object(Bucket=s.bucket, Key=self.full, ChecksumMode="ENABLED")
        except BaseException as exc:
            self.abort()
            if isinstance(exc, Exception):
                raise s.error(exc, "upload", self.key) from None
            raise
        self.done = True
        self._close_pool()
        stored = head.get("ChecksumSHA256")
        if head["ContentLength"] != self.size or (expected and stored and stored != expected):
            with contextlib.suppress(StorageError):
                s.delete(self.key)
            raise StorageError(f"{s.name}: s3://{s.bucket}/{self.full} was stored as {head['ContentLength']} bytes "
                               f"(checksum {stored}) instead of {self.size} bytes (checksum {expected})",
                               "the store lost data; check its health and run again")
        self.verified_by_store = bool(expected and stored == expected)
        return s._info(self.key, self.size, head["LastModified"])

    def _put_single(self) -> str | None:
        s = self.storage
        body = bytes(self.buffer)
        self.buffer = bytearray()
        kwargs: dict[str, Any] = {"Bucket": s.bucket, "Key": self.full, "Body": body, **self.extra}
        if s.checksums:
            expected = _b64sha(hashlib.sha256(body).digest())
            try:
                s.client.put_object(**kwargs, ChecksumSHA256=expected)
                return expected
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _NO_CHECKSUM_CODES:
                    raise
                s.checksums = False
        s.client.put_object(**kwargs)
        return None

    def _complete(self) -> str | None:
        s = self.storage
        if self.buffer:
            chunk, self.buffer = bytes(self.buffer), bytearray()
            self._send_part(chunk)
        self._wait()
        parts = [{k: v for k, v in p.items() if k != "confirmed"} for p in self.parts]
        s.client.complete_multipart_upload(Bucket=s.bucket, Key=self.full, UploadId=self.upload_id or "",
                                           MultipartUpload={"Parts": parts})  # type: ignore[typeddict-item]
        self.upload_id = None
        if not s.checksums or not all(p.get("confirmed") for p in self.parts):
            return None
        return f"{_b64sha(hashlib.sha256(b''.join(self.digests)).digest())}-{len(self.parts)}"

    def _close_pool(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def abort(self) -> None:
        """Discard the upload; never raises (a failure is logged: the store's lifecycle rule or
        ``abort_stale_uploads`` removes what is left)."""
        self.done = True
        self.buffer = bytearray()
        with contextlib.suppress(Exception):
            self._wait()
        self._close_pool()
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        s = self.storage
        try:
            s.client.abort_multipart_upload(Bucket=s.bucket, Key=self.full, UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                log.warning("%s: could not abort the upload of %s: %s", s.name, self.key, s.error(exc, "abort"))
        except (BotoCoreError, _FailFast) as exc:
            log.warning("%s: could not abort the upload of %s: %s", s.name, self.key, s.error(exc, "abort"))


class S3Reader(io.RawIOBase):
    """The object's bytes; a dropped connection resumes at the same offset of the same version."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        super().__init__()
        self.storage, self.key, self.full = storage, key, storage.full_key(key)
        self.pos = 0
        self.etag: str | None = None
        self.resumes = 0
        self.body: Any = self._open()

    def _open(self) -> Any:
        s = self.storage
        kwargs: dict[str, Any] = {"Bucket": s.bucket, "Key": self.full}
        if self.etag is not None:
            kwargs.update(IfMatch=self.etag, Range=f"bytes={self.pos}-")
        response = s.call("read", self.key, s.client.get_object, **kwargs)
        self.etag = response.get("ETag")
        return response["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            try:
                data = self.body.read(len(view))
                break
            except (BotoCoreError, OSError) as exc:
                if self.resumes >= READ_RESUMES:
                    raise self.storage.error(exc, "read", self.key) from None
                self.resumes += 1
                log.warning("%s: reading %s failed at byte %d (%s); resuming", self.storage.name,
                            self.key, self.pos, exc)
                with contextlib.suppress(Exception):
                    self.body.close()
                self.body = self._open()
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self.body.close()
        super().close()
