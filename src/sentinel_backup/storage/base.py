"""The Storage protocol: what every destination (local, s3, minio) offers.

Keys are flat names relative to the destination's root (a folder or a bucket prefix),
e.g. ``sentinel_backup_app_20261129T030000Z.sql.gz``. Every backend must pass the one
contract test suite in ``tests/integration/test_storage_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # timezone-aware UTC


class ObjectWriter(Protocol):
    """A stream being stored under a key. Nothing is visible under the key until commit()."""

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

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every committed object whose key starts with prefix, any order."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; missing is not an error."""
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
