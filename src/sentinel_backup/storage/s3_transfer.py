"""The S3 transfers: a streaming multipart writer and a resuming reader (see ``s3`` for the
part sizes and the checksums the store verifies)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from sentinel_backup.errors import StorageError
from sentinel_backup.storage.base import ObjectInfo

if TYPE_CHECKING:
    from sentinel_backup.storage.s3 import S3Storage

log = logging.getLogger("sentinel_backup.storage.s3")

PART_SIZE = 16 * 1024 * 1024
PARTS_PER_STEP = 1250
MAX_PART_SIZE = 5 * 1024**3
READ_RESUMES = 3
_NO_CHECKSUM_CODES = {"NotImplemented", "InvalidArgument", "InvalidRequest", "XNotImplemented"}


def part_size_for(part_number: int, base: int = PART_SIZE) -> int:
    """Size of part ``part_number`` (1-based): doubles every PARTS_PER_STEP parts."""
    return min(base << ((part_number - 1) // PARTS_PER_STEP), MAX_PART_SIZE)


class FailFast(Exception):
    """An internal signal (nothing listens at the endpoint), translated to StorageError before it
    leaves the S3 modules."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _b64sha(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


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
        except (BotoCoreError, FailFast) as exc:
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
