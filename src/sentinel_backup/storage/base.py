"""The Storage protocol: what every destination (local, s3, minio) offers.

Keys are relative to the destination's root (a folder or a bucket prefix) and may hold
folders: ``sentinel_backup_app_20261129T030000Z.sql.gz`` at the root (logical backups, as
the shell version kept them), ``basebackups/...`` and ``wal/...`` below it (see
``model.layout``, the one place that maps what is stored to keys). ``check_key`` is the one
validation of a key. Optional abilities are not probed: every backend offers the whole
protocol (no-ops where a method means nothing to it) and says what it can in
``capabilities``. Every backend must pass the one contract test suite in
``tests/integration/test_storage_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

from sentinel_backup.errors import StorageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the common protocol."""

    object_lock: bool = False  # ``is_locked`` can answer True (S3 object lock, legal holds)
    store_checksums: bool = False  # a writer's ``verified_by_store`` can be True (per-part SHA-256 checked)
    partial_files: bool = False  # ``list_partials`` can find leftovers of a crashed run
    multipart: bool = False  # ``abort_stale_uploads`` has something to abort
    local_files: bool = False  # ``local_path`` gives a file on this host (pg_restore -j reads it in place)


def check_key(key: str, *, temporary: bool = False) -> str:
    """The one validation of a key: relative, ``/``-separated segments, none empty, none
    starting with ``.`` (temporary files; ``temporary`` allows it in the last segment, for
    deleting what ``list_partials`` found), no NUL. Returns the key."""
    parts = key.split("/")
    hidden = [part.startswith(".") for part in parts]
    if temporary:
        hidden[-1] = parts[-1] in (".", "..")
    if not key or "\0" in key or any(not part for part in parts) or any(hidden):
        raise StorageError(f"invalid object name {key!r}", "this is a bug in sentinel-backup; please report it")
    return key


def split_prefix(prefix: str) -> tuple[str, str]:
    """``"wal/0001/00000001"`` -> (``"wal/0001/"``, ``"00000001"``): the folder a listing reads
    and the start of the names it keeps."""
    folder, _, start = prefix.rpartition("/")
    return (folder + "/" if folder else ""), start


class ObjectWriter(Protocol):
    """A stream being stored under a key. Nothing is visible under the key until commit().
    ``verified_by_store`` is True after commit when the store confirmed the checksum of
    every byte it received (only where ``capabilities.store_checksums``)."""

    verified_by_store: bool

    def write(self, data: bytes) -> None: ...

    def commit(self) -> ObjectInfo:
        """Make the object visible under its key (rename / complete multipart)."""
        ...

    def abort(self) -> None:
        """Discard everything written (remove the partial file / abort multipart). Idempotent."""
        ...


class Storage(Protocol):
    """A destination. ``name`` is `local`, `s3` or `minio`."""

    name: str
    capabilities: Capabilities

    def describe(self) -> str:
        """Where this destination is, for logs (never a secret)."""
        ...

    def open_writer(self, key: str, *, artifact: bool = True) -> ObjectWriter:
        """Start storing a stream under key. ``artifact`` marks the backup data itself
        (storage class and object lock apply to it), as opposed to sidecar files."""
        ...

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Store a small object atomically."""
        ...

    def open_reader(self, key: str) -> BinaryIO:
        """A streaming reader of the whole object (``read(n)`` until b"")."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """A small object's content."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and time, or None when it does not exist."""
        ...

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        """Every committed object whose key starts with prefix, any order: only those in the
        prefix's folder (``"wal/0001/0000"`` lists ``wal/0001/``), or with ``deep`` also those
        in folders below it. Full keys are returned."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; missing is not an error."""
        ...

    def prepare(self) -> None:
        """Prove the destination can be used (before a run); ConfigError or StorageError."""
        ...

    def list_partials(self) -> Iterator[ObjectInfo]:
        """Temporary objects a crashed run left (none where commits cannot leave any)."""
        ...

    def is_locked(self, key: str) -> bool:
        """True while an object lock or legal hold protects the object."""
        ...

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        """Abort unfinished uploads started before now - older_than; how many."""
        ...

    def locate(self, key: str) -> dict[str, str]:
        """Where the object is, for listings: ``{"path": key}`` in a folder, ``{"key": key}`` in a bucket."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's file on this host, or None (only where ``capabilities.local_files``)."""
        ...


def put_via_writer(storage: Storage, key: str, data: bytes) -> ObjectInfo:
    """``put_bytes`` for any backend: one sidecar written through its atomic writer."""
    writer = storage.open_writer(key, artifact=False)
    try:
        writer.write(data)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()
