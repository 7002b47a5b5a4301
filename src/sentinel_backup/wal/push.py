"""wal-push: store one WAL file on every enabled destination (for ``archive_command``).

Exit 0 only when every enabled destination holds a durable copy ("required" = every
enabled destination, as pgBackRest does with several repositories). When one of two
destinations is down the push fails: PostgreSQL keeps the file in pg_wal and calls again,
so nothing is lost; the copy that did reach the healthy destination stays, and the retry
finds it (same plaintext SHA-256) and writes only where it is missing.

One pass over the file: it is read in 1 MiB chunks, hashed (the key carries the plaintext
SHA-256) and compressed/encrypted into a buffer (memory up to ``SPILL`` bytes, a temporary
file beyond), then, once the key is known, written to each destination's atomic writer
(local: temporary name, fsync, rename; S3: one upload under the final key, nothing to
rename). A name already archived is decided from the listing and the hash, before anything
is written; what is stored is exactly what was hashed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sentinel_backup import log
from sentinel_backup.errors import SentinelError, StorageError
from sentinel_backup.model.layout import Handle, is_wal_name, key_for
from sentinel_backup.storage.base import ObjectWriter, Storage
from sentinel_backup.streams.base import CHUNK, NullSink, Sink
from sentinel_backup.streams.digest import Digest
from sentinel_backup.wal.archive import check_no_conflict, stored_copies
from sentinel_backup.wal.segment import (
    LONG_HEADER_SIZE,
    WalFileError,
    check_segment,
    control_system_id,
    is_segment,
    parse_header,
)

if TYPE_CHECKING:  # the settings schema (pydantic) is not needed to identify or spool a file
    from sentinel_backup.config import Settings

_log = log.get("wal")
SPILL = 64 << 20  # an encoded WAL file larger than this (segments of 64 MB and more) waits in a temporary file


class PushFailed(SentinelError):
    """A required copy could not be made durable; PostgreSQL will call wal-push again."""


@dataclass
class WalFile:
    path: Path
    name: str
    system_id: str
    sha256: str
    size: int


@dataclass
class PushResult:
    file: WalFile
    stored: dict[str, str] = field(default_factory=dict)  # destination -> key written now
    present: dict[str, str] = field(default_factory=dict)  # destination -> key found (same content)
    failed: dict[str, SentinelError] = field(default_factory=dict)


class _Opened:
    """A WAL file opened and identified from its header; ``head`` is the first chunk, already read."""

    def __init__(self, path: Path, *, system_id: str | None, data_dir: Path | None) -> None:
        self.path = path
        self.name = path.name
        if not is_wal_name(self.name):
            raise WalFileError(f"{path} is not a WAL file name (segment, .history, .backup or .partial)",
                               "archive_command must be: sentinel-backup ... wal-push %p")
        try:
            self.file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise WalFileError(f"{path} does not exist",
                               "archive_command runs in the data directory and must pass %p") from None
        except OSError as exc:
            raise WalFileError(f"cannot read {path}: {exc.strerror}", "check the permissions of pg_wal") from None
        try:
            self.size = os.fstat(self.file.fileno()).st_size
            self.head = self._read()
            if self.name.endswith((".history", ".backup")):
                self.system_id = str(control_system_id(data_dir or Path.cwd())) if system_id is None else system_id
            else:
                header = parse_header(self.head[:LONG_HEADER_SIZE], self.name)
                if is_segment(self.name):
                    check_segment(header, self.name, self.size)
                self.system_id = str(header.system_id)
                if system_id is not None and system_id != self.system_id:
                    raise WalFileError(f"{self.name} belongs to system identifier {self.system_id}, not {system_id}",
                                       "this WAL comes from another cluster: check --system-id and the data"
                                       " directory")
        except BaseException:
            self.file.close()
            raise

    def _read(self) -> bytes:
        try:
            return self.file.read(CHUNK)
        except OSError as exc:
            raise WalFileError(f"cannot read {self.path}: {exc.strerror}", "check the permissions of pg_wal") \
                from None

    def chunks(self) -> Iterator[bytes]:
        """Every byte of the file once, the head first."""
        chunk = self.head
        while chunk:
            yield chunk
            chunk = self._read()

    def hashed_into(self, sink: Sink) -> WalFile:
        """Read the whole file into ``sink`` (closed at the end), hashing it: the WalFile."""
        digest = Digest(sink)
        for chunk in self.chunks():
            digest.write(chunk)
        digest.close()
        if digest.size != self.size:
            raise WalFileError(f"{self.path} changed size while it was read ({self.size} -> {digest.size} bytes)",
                               "nothing was stored; PostgreSQL will retry")
        return WalFile(self.path, self.name, self.system_id, digest.sha256, digest.size)

    def close(self) -> None:
        self.file.close()


@contextlib.contextmanager
def opened(path: Path, *, system_id: str | None = None, data_dir: Path | None = None) -> Iterator[_Opened]:
    """The WAL file at ``path``, identified from its header (name, system identifier, size)."""
    wal = _Opened(path, system_id=system_id, data_dir=data_dir)
    try:
        yield wal
    finally:
        wal.close()


def identify(path: Path, *, system_id: str | None = None, data_dir: Path | None = None) -> WalFile:
    """Name, system identifier and plaintext SHA-256 of a WAL file."""
    with opened(path, system_id=system_id, data_dir=data_dir) as wal:
        return wal.hashed_into(NullSink())


def push(settings: Settings, source: _Opened, destinations: list[Storage]) -> PushResult:
    """Store the opened WAL file on every destination that lacks it; raises WalConflict before
    writing anything when one holds different content. Failures are collected in the result."""
    listed: dict[str, list[tuple[Handle, str]]] = {}
    failed: dict[str, SentinelError] = {}
    for storage in destinations:
        try:
            listed[storage.name] = stored_copies(storage, source.system_id, source.name)
        except SentinelError as exc:
            failed[storage.name] = exc
    with _Buffer() as buffer:
        # stored wherever it could be listed (a retry): only the hash decides, nothing to encode
        encoder: Sink = NullSink() if all(listed.values()) else _encoder(settings, buffer)
        wal = source.hashed_into(encoder)
        result = PushResult(wal, failed=failed)
        needed: list[Storage] = []
        for storage in destinations:
            if storage.name in listed:
                copies = listed[storage.name]
                if check_no_conflict(storage, wal.system_id, wal.name, wal.sha256, copies):
                    result.present[storage.name] = copies[0][1]
                else:
                    needed.append(storage)
        if needed:
            key = key_for(Handle("wal", wal.name, wal.system_id, wal.sha256, extension(settings)))
            _write(key, buffer, needed, result)
    return result


def extension(settings: Settings) -> str:
    from sentinel_backup.streams.compress import EXTENSIONS

    ext = EXTENSIONS[settings.compression]
    if settings.encrypt_enabled:
        from sentinel_backup.streams.crypto import EXTENSIONS as CIPHER_EXTENSIONS

        ext += CIPHER_EXTENSIONS[settings.encryption_method.value]
    return ext


class _Writers:
    """Hands every chunk to each writer that has not failed (WAL files are small: no threads)."""

    def __init__(self, writers: dict[str, ObjectWriter], failed: dict[str, SentinelError]) -> None:
        self.writers = writers
        self.failed = failed

    def _fail(self, name: str, exc: BaseException) -> None:
        self.writers.pop(name).abort()
        self.failed[name] = exc if isinstance(exc, SentinelError) else StorageError(f"{name}: {exc}")

    def write(self, data: bytes) -> None:
        for name, writer in list(self.writers.items()):
            try:
                writer.write(data)
            except Exception as exc:
                self._fail(name, exc)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def _open(storage: Storage, key: str) -> ObjectWriter:
    try:
        return storage.open_writer(key, artifact=True)
    except SentinelError:
        storage.prepare()  # a first push before any backup: create BACKUP_DIR (or say why it cannot be used)
        return storage.open_writer(key, artifact=True)


class _Buffer:
    """The encoded object until its key is known: the chunks themselves in memory (no copy) up to
    SPILL bytes, then a temporary file."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.file: BinaryIO | None = None

    def __enter__(self) -> _Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def write(self, data: bytes) -> None:
        if self.file is not None:
            self.file.write(data)
            return
        self.parts.append(bytes(data))  # a stage may hand out a buffer it reuses: keep a copy of those only
        self.size += len(data)
        if self.size > SPILL:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by __exit__
            for part in self.parts:
                self.file.write(part)
            self.parts = []

    def close(self) -> None:
        pass  # the end of the encoding chain: kept for reading

    def chunks(self) -> Iterator[bytes]:
        if self.file is None:
            yield from self.parts
            return
        self.file.seek(0)
        while chunk := self.file.read(CHUNK):
            yield chunk


def _encoder(settings: Settings, buffer: Sink) -> Sink:
    from sentinel_backup.streams.compress import compressor

    sink = buffer
    if settings.encrypt_enabled:
        from sentinel_backup.keys import cipher_from_settings

        cipher = cipher_from_settings(settings)
        assert cipher is not None
        sink = cipher.encryptor(sink)
    return compressor(settings.compression, settings.effective_compression_level(), sink)


def _write(key: str, buffer: _Buffer, needed: list[Storage], result: PushResult) -> None:
    writers: dict[str, ObjectWriter] = {}
    for storage in needed:
        try:
            writers[storage.name] = _open(storage, key)
        except SentinelError as exc:
            result.failed[storage.name] = exc
    if not writers:
        return
    fan = _Writers(writers, result.failed)
    try:
        for chunk in buffer.chunks():
            fan.write(chunk)
    except BaseException:
        fan.abort()
        raise
    for name, writer in fan.writers.items():
        try:
            writer.commit()
            result.stored[name] = key
        except SentinelError as exc:
            result.failed[name] = exc
        except Exception as exc:
            result.failed[name] = StorageError(f"{name}: {exc}")


def push_file(settings: Settings, path: Path, *, system_id: str | None = None,
              destinations: list[Storage] | None = None) -> PushResult:
    """wal-push, synchronous: PushFailed unless every destination holds the file."""
    if destinations is None:
        from sentinel_backup.storage.registry import build_destinations

        destinations = build_destinations(settings)
    with opened(path, system_id=system_id) as source:
        result = push(settings, source, destinations)
    wal = result.file
    if result.failed:
        for name, exc in result.failed.items():
            _log.error("wal-push %s: %s failed: %s", wal.name, name, exc.message)
        from sentinel_backup.wal import alerts

        alerts.archive_failed(settings, wal.name, "; ".join(f"{n}: {e.message}" for n, e in result.failed.items()))
        done = sorted({*result.stored, *result.present})
        raise PushFailed(f"{wal.name} is not archived on every destination ({', '.join(sorted(result.failed))}"
                         f" failed{'; stored on ' + ', '.join(done) if done else ''})",
                         "PostgreSQL keeps the file and calls wal-push again; nothing is lost. Fix the destination"
                         " (see the errors above); pg_wal grows until it is back")
    from sentinel_backup.wal import alerts

    alerts.archive_succeeded(settings)
    _log.info("archived %s (%s bytes) %s", wal.name, wal.size,
              ", ".join([*(f"to {n}" for n in result.stored), *(f"already on {n}" for n in result.present)]))
    return result



__all__ = ["PushFailed", "PushResult", "WalFile", "identify", "opened", "push", "push_file"]
