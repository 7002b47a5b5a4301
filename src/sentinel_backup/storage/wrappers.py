"""Behaviour around any backend, as wrappers rather than branches inside each (restic's
``retry.Backend``): both offer the whole Storage protocol and pass through what they do not
change, so a caller never asks which one it holds.

- :class:`RetryingStorage` tries an idempotent operation again (``stat``, ``list``,
  ``read_bytes``, ``put_bytes``, ``delete``, ``is_locked``) when it fails with a transient
  :class:`~sentinel_backup.errors.StorageError` (``transient``: a timeout, a dropped
  connection, a 5xx after the backend's own retries). Streams (``open_writer``,
  ``open_reader``) are passed through: they cannot be replayed from here.
- :class:`DryRunStorage` records deletions instead of doing them (``prune --dry-run``);
  everything else, reads included, reaches the backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar

from sentinel_backup import log
from sentinel_backup.errors import StorageError
from sentinel_backup.storage.base import Capabilities, ObjectInfo, ObjectWriter, Storage

logger = log.get("storage")
T = TypeVar("T")


class _Passthrough:
    """Every protocol method forwarded to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities: Capabilities = inner.capabilities

    def describe(self) -> str:
        return self.inner.describe()

    def open_writer(self, key: str, *, artifact: bool = True) -> ObjectWriter:
        return self.inner.open_writer(key, artifact=artifact)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.inner.put_bytes(key, data)

    def open_reader(self, key: str) -> BinaryIO:
        return self.inner.open_reader(key)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, deep=deep)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def prepare(self) -> None:
        self.inner.prepare()

    def list_partials(self) -> Iterator[ObjectInfo]:
        return self.inner.list_partials()

    def is_locked(self, key: str) -> bool:
        return self.inner.is_locked(key)

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        return self.inner.abort_stale_uploads(older_than)

    def locate(self, key: str) -> dict[str, str]:
        return self.inner.locate(key)

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(key)


class RetryingStorage(_Passthrough):
    """Idempotent operations tried up to ``attempts`` times while they fail transiently,
    waiting ``delay`` seconds, then twice as long, between tries."""

    def __init__(self, inner: Storage, *, attempts: int = 3, delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(inner)
        self.attempts = max(1, attempts)
        self.delay = delay
        self.sleep = sleep

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        wait = self.delay
        for attempt in range(1, self.attempts + 1):
            try:
                return action()
            except StorageError as exc:
                if not exc.transient or attempt == self.attempts:
                    raise
                logger.warning(f"{self.name}: {what} failed ({exc.message}); trying again in {wait:g} s"
                               f" (attempt {attempt + 1} of {self.attempts})")
                self.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def stat(self, key: str) -> ObjectInfo | None:
        return self._retry(f"stat {key}", lambda: self.inner.stat(key))

    def read_bytes(self, key: str) -> bytes:
        return self._retry(f"read {key}", lambda: self.inner.read_bytes(key))

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self._retry(f"write {key}", lambda: self.inner.put_bytes(key, data))

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        return iter(self._retry(f"list {prefix or '/'}", lambda: list(self.inner.list(prefix, deep=deep))))

    def delete(self, key: str) -> None:
        self._retry(f"delete {key}", lambda: self.inner.delete(key))

    def is_locked(self, key: str) -> bool:
        return self._retry(f"lock status of {key}", lambda: self.inner.is_locked(key))


class DryRunStorage(_Passthrough):
    """Deletions are recorded in ``deleted``, not done; stale uploads are counted as none."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.deleted: list[str] = []

    def delete(self, key: str) -> None:
        self.deleted.append(key)

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        return 0
