"""wal-push: store one WAL file on every enabled destination (for ``archive_command``).

Exit 0 only when every enabled destination holds a durable copy ("required" = every
enabled destination, as pgBackRest does with several repositories). When one of two
destinations is down the push fails: PostgreSQL keeps the file in pg_wal and calls again,
so nothing is lost; the copy that did reach the healthy destination stays, and the retry
finds it (same plaintext SHA-256) and writes only where it is missing.

Two passes over the file: the first hashes it (the key carries the plaintext SHA-256, and
a push of a name that is already archived is decided from a listing alone), the second
streams it through compression, encryption and the destinations' atomic writers, hashing
again: if the file changed between the passes nothing is committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup import log
from sentinel_backup.errors import SentinelError, StorageError
from sentinel_backup.model.layout import Handle, is_wal_name, key_for
from sentinel_backup.storage.base import ObjectWriter, Storage
from sentinel_backup.streams.base import CHUNK, Sink
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


def identify(path: Path, *, system_id: str | None = None, data_dir: Path | None = None) -> WalFile:
    """Name, system identifier and plaintext SHA-256 of a WAL file (first pass)."""
    name = path.name
    if not is_wal_name(name):
        raise WalFileError(f"{path} is not a WAL file name (segment, .history, .backup or .partial)",
                           "archive_command must be: sentinel-backup ... wal-push %p")
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                if not head:
                    head = chunk[:LONG_HEADER_SIZE]
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise WalFileError(f"{path} does not exist",
                           "archive_command runs in the data directory and must pass %p") from None
    except OSError as exc:
        raise WalFileError(f"cannot read {path}: {exc.strerror}", "check the permissions of pg_wal") from None
    if name.endswith((".history", ".backup")):
        found = str(control_system_id(data_dir or Path.cwd())) if system_id is None else system_id
    else:
        header = parse_header(head, name)
        if is_segment(name):
            check_segment(header, name, size)
        found = str(header.system_id)
        if system_id is not None and system_id != found:
            raise WalFileError(f"{name} belongs to system identifier {found}, not {system_id}",
                               "this WAL comes from another cluster: check --system-id and the data directory")
    return WalFile(path, name, found, digest.hexdigest(), size)


def push(settings: Settings, wal: WalFile, destinations: list[Storage]) -> PushResult:
    """Store ``wal`` on every destination that lacks it; raises WalConflict before writing
    anything when one holds different content. Failures are collected in the result."""
    result = PushResult(wal)
    needed: list[Storage] = []
    for storage in destinations:
        try:
            copies = stored_copies(storage, wal.system_id, wal.name)
        except SentinelError as exc:
            result.failed[storage.name] = exc
            continue
        if check_no_conflict(storage, wal.system_id, wal.name, wal.sha256, copies):
            result.present[storage.name] = copies[0][1]
        else:
            needed.append(storage)
    if needed:
        _write(settings, wal, needed, result)
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


def _write(settings: Settings, wal: WalFile, needed: list[Storage], result: PushResult) -> None:
    from sentinel_backup.streams.compress import compressor
    from sentinel_backup.streams.digest import Digest

    key = key_for(Handle("wal", wal.name, wal.system_id, wal.sha256, extension(settings)))
    writers: dict[str, ObjectWriter] = {}
    for storage in needed:
        try:
            writers[storage.name] = _open(storage, key)
        except SentinelError as exc:
            result.failed[storage.name] = exc
    if not writers:
        return
    fan = _Writers(writers, result.failed)
    sink: Sink = fan
    if settings.encrypt_enabled:
        from sentinel_backup.keys import cipher_from_settings

        cipher = cipher_from_settings(settings)
        assert cipher is not None
        sink = cipher.encryptor(sink)
    sink = compressor(settings.compression, settings.effective_compression_level(), sink)
    digest = Digest(sink)
    try:
        with open(wal.path, "rb") as file:
            while chunk := file.read(CHUNK):
                digest.write(chunk)
        digest.close()
    except BaseException:
        fan.abort()
        raise
    if digest.sha256 != wal.sha256 or digest.size != wal.size:
        fan.abort()
        raise WalFileError(f"{wal.path} changed while it was archived", "nothing was stored; PostgreSQL will retry")
    for name, writer in writers.items():
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
    wal = identify(path, system_id=system_id)
    result = push(settings, wal, destinations)
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



__all__ = ["PushFailed", "PushResult", "WalFile", "identify", "push", "push_file"]
