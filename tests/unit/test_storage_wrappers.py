"""Storage wrappers around a real local folder: retries of transient failures, and a dry run
that deletes nothing; both offer the whole protocol and pass the rest through."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_backup.errors import StorageError, TransientStorageError
from sentinel_backup.retention.plan import RetentionPolicy, apply, plan, scan
from sentinel_backup.storage.base import ObjectInfo
from sentinel_backup.storage.local import LocalStorage
from sentinel_backup.storage.wrappers import DryRunStorage, RetryingStorage


class Flaky(LocalStorage):
    """A real folder whose operations fail ``failures`` times first (transiently or not)."""

    def __init__(self, folder: Path, failures: int, transient: bool = True) -> None:
        super().__init__(folder)
        self.prepare()
        self.failures = failures
        self.transient = transient
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            error = TransientStorageError if self.transient else StorageError
            raise error("local: the disk hiccupped", "run again")

    def delete(self, key: str) -> None:
        self._maybe_fail()
        super().delete(key)

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        self._maybe_fail()
        return super().list(prefix, deep=deep)


def test_transient_failures_are_retried_with_growing_waits(tmp_path: Path) -> None:
    inner = Flaky(tmp_path, failures=2)
    inner.put_bytes("a", b"1")
    waits: list[float] = []
    store = RetryingStorage(inner, attempts=3, delay=0.5, sleep=waits.append)
    store.delete("a")
    assert not (tmp_path / "a").exists() and waits == [0.5, 1.0]
    assert store.name == "local" and store.capabilities == inner.capabilities
    assert store.locate("a") == {"path": "a"} and store.local_path("a") == tmp_path / "a"


def test_retries_end_and_permanent_failures_are_not_retried(tmp_path: Path) -> None:
    waits: list[float] = []
    with pytest.raises(TransientStorageError):
        RetryingStorage(Flaky(tmp_path / "t", failures=5), attempts=3, sleep=waits.append).delete("a")
    assert len(waits) == 2
    waits.clear()
    permanent = Flaky(tmp_path / "p", failures=1, transient=False)
    with pytest.raises(StorageError, match="hiccupped"):
        RetryingStorage(permanent, sleep=waits.append).list()
    assert waits == [] and permanent.calls == 1


def test_a_listing_is_retried_whole(tmp_path: Path) -> None:
    inner = Flaky(tmp_path, failures=1)
    inner.put_bytes("x", b"1")
    assert [o.key for o in RetryingStorage(inner, sleep=lambda _: None).list()] == ["x"]


def test_dry_run_records_deletions_and_retention_goes_through_it(tmp_path: Path) -> None:
    inner = LocalStorage(tmp_path)
    inner.prepare()
    inner.put_bytes("sentinel_backup_app_20200101T000000Z.sql.gz", b"old leftover")
    dry = DryRunStorage(inner)
    dry.delete("sentinel_backup_app_20200101T000000Z.sql.gz")
    assert dry.deleted == ["sentinel_backup_app_20200101T000000Z.sql.gz"]
    assert (tmp_path / "sentinel_backup_app_20200101T000000Z.sql.gz").exists()
    assert dry.read_bytes("sentinel_backup_app_20200101T000000Z.sql.gz") == b"old leftover"
    later = datetime.now(UTC) + timedelta(days=2)  # the leftover is past the grace period
    the_plan = plan(scan(inner), RetentionPolicy(days=1), later)
    result = apply(inner, the_plan, dry_run=True)
    (outcome,) = result.results
    assert outcome.deleted == ["sentinel_backup_app_20200101T000000Z.sql.gz"] and not outcome.removed
    assert result.counts() == {"would_remove": 1}
    assert (tmp_path / "sentinel_backup_app_20200101T000000Z.sql.gz").exists()
