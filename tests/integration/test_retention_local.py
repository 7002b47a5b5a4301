"""Retention end to end on real files in a folder (LocalStorage), two years of backups."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_backup.model.manifest import Manifest, artifact_name, backup_id, checksum_line
from sentinel_backup.retention.plan import RetentionPolicy, apply, plan, scan
from sentinel_backup.storage.local import LocalStorage

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
START = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)


def _touch(path: Path, at: datetime) -> None:
    os.utime(path, (at.timestamp(), at.timestamp()))


def write_backup(store: LocalStorage, db: str, at: datetime, *, manifest: bool = True) -> str:
    artifact = artifact_name(db, at, ".sql.gz")
    data = gzip.compress(f"-- dump of {db} at {at.isoformat()}\n".encode())
    digest = hashlib.sha256(data).hexdigest()
    # Plain writes, not store.put_bytes: thousands of fsyncs would only slow the test down.
    (store.folder / artifact).write_bytes(data)
    (store.folder / (artifact + ".sha256")).write_bytes(checksum_line(digest, artifact))
    keys = [artifact, artifact + ".sha256"]
    if manifest:
        m = Manifest(id=backup_id(artifact), database=db, artifact=artifact, created_at=at, finished_at=at,
                     duration_seconds=2.5, tool_version="0.1.0", hostname="test",
                     compression={"algorithm": "gzip", "level": 6},  # type: ignore[arg-type]
                     raw_size_bytes=40, raw_sha256="0" * 64, size_bytes=len(data), sha256=digest)
        (store.folder / m.manifest_key).write_bytes(m.to_json())
        keys.append(m.manifest_key)
    for key in keys:
        _touch(store.folder / key, at + timedelta(minutes=1))
    return artifact


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    """Built once: ~2,400 files. Tests that delete work on a copy (``store``)."""
    storage = LocalStorage(tmp_path_factory.mktemp("template") / "backups")
    storage.prepare()
    day = START
    while day <= NOW:
        write_backup(storage, "app", day)  # daily
        if day.weekday() == 6:
            write_backup(storage, "crm", day)  # weekly, on Sundays
        day += timedelta(days=1)
    folder = storage.folder
    for name, at in (("sentinel_backup_20241103_030000.sql.gz", None),  # legacy, dated by name
                     ("sentinel_backup_20261125_030000.sql.gz", None),
                     ("sentinel_backup_app_20240601_030000.sql.gz.enc", None),
                     ("sentinel_backup_manual.sql.gz", NOW - timedelta(days=5))):  # legacy, dated by mtime
        (folder / name).write_bytes(gzip.compress(b"-- legacy\n"))
        _touch(folder / name, at or NOW - timedelta(days=1))
    write_backup(storage, "app", NOW - timedelta(days=3, hours=5), manifest=False)  # crashed run
    write_backup(storage, "app", NOW - timedelta(hours=1), manifest=False)  # a run still going
    (folder / ".sentinel_backup_app_20261120T030000Z.sql.gz.partial").write_bytes(b"half")
    _touch(folder / ".sentinel_backup_app_20261120T030000Z.sql.gz.partial", NOW - timedelta(days=9))
    (folder / ".sentinel_backup_app_20261129T110000Z.sql.gz.partial").write_bytes(b"in flight")
    _touch(folder / ".sentinel_backup_app_20261129T110000Z.sql.gz.partial", NOW - timedelta(minutes=5))
    (folder / "README.txt").write_text("not a backup")
    return storage


@pytest.fixture
def store(template: LocalStorage, tmp_path: Path) -> LocalStorage:
    shutil.copytree(template.folder, tmp_path / "backups")  # copy2 keeps the mtimes
    return LocalStorage(tmp_path / "backups")


def files(store: LocalStorage) -> set[str]:
    return {p.name for p in store.folder.iterdir()}


POLICY = RetentionPolicy(days=30, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3,
                         timezone="Europe/Paris")


def test_dry_run_deletes_nothing(template: LocalStorage) -> None:
    store = template
    before = files(store)
    retention_plan = plan(scan(store), POLICY, NOW)
    result = apply(store, retention_plan, dry_run=True)
    assert files(store) == before
    assert len(result.results) == len(retention_plan.removed) > 600
    assert not result.removed


def test_two_years_of_backups_end_to_end(store: LocalStorage) -> None:
    refs = scan(store, legacy_database="app")
    sundays = sum((START + timedelta(days=n)).weekday() == 6 for n in range(698))
    assert sum(r.good for r in refs) == 698 + sundays  # daily app + Sunday crm, 2025-01-01 .. 2026-11-29
    assert sum(r.legacy for r in refs) == 4 and sum(r.incomplete for r in refs) == 4
    retention_plan = plan(refs, POLICY, NOW)
    result = apply(store, retention_plan)
    assert result.ok and not result.locked
    assert len(result.removed) == len(retention_plan.removed)

    survivors = scan(store, legacy_database="app")
    good = {(r.database, r.created_at.date().isoformat()) for r in survivors if r.good}
    app_days = sorted(day for db, day in good if db == "app")
    # within 30 days: the 30 daily backups since 2026-10-31; before that, month ends (monthly 12,
    # which also hold the yearly 2025 one); nothing from the first year but its last backup.
    assert app_days[-30:] == [(NOW - timedelta(days=n)).date().isoformat() for n in range(29, -1, -1)]
    assert app_days[:-30] == ["2025-12-31", "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30",
                              "2026-05-31", "2026-06-30", "2026-07-31", "2026-08-31", "2026-09-30"]
    # crm has one backup a week: daily 7 means its 7 newest days *with a backup* (back to 2026-10-18).
    crm = sorted(day for db, day in good if db == "crm")
    assert crm == ["2025-12-28", "2026-01-25", "2026-02-22", "2026-03-29", "2026-04-26", "2026-05-31",
                   "2026-06-28", "2026-07-26", "2026-08-30", "2026-09-27", "2026-10-18", "2026-10-25",
                   "2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22", "2026-11-29"]

    names = files(store)
    assert "sentinel_backup_20261125_030000.sql.gz" in names  # legacy within 30 days
    assert "sentinel_backup_manual.sql.gz" in names  # legacy, mtime within 30 days
    assert "sentinel_backup_20241103_030000.sql.gz" not in names  # legacy older than 30 days
    assert "sentinel_backup_app_20240601_030000.sql.gz.enc" not in names
    assert ".sentinel_backup_app_20261120T030000Z.sql.gz.partial" not in names  # old temp file
    assert ".sentinel_backup_app_20261129T110000Z.sql.gz.partial" in names  # a run in flight
    crashed = artifact_name("app", NOW - timedelta(days=3, hours=5), ".sql.gz")
    young = artifact_name("app", NOW - timedelta(hours=1), ".sql.gz")
    assert crashed not in names and crashed + ".sha256" not in names
    assert young in names and young + ".sha256" in names
    assert "README.txt" in names
    # every surviving good backup still has all three files
    for ref in survivors:
        if ref.good:
            assert len(ref.keys) == 3

    # stable: re-planning on the real survivors removes nothing more
    again = plan(scan(store, legacy_database="app"), POLICY, NOW)
    assert not again.removed


def test_reasons_reported_for_removed_backups(template: LocalStorage) -> None:
    store = template
    retention_plan = plan(scan(store, legacy_database="app"), POLICY, NOW)
    reasons = {d.reason.split(" (")[0] for d in retention_plan.removed}
    assert reasons == {"older than 30 days", "legacy older than 30 days", "incomplete leftover older than 24h"}
    kept = " | ".join(d.reason for d in retention_plan.kept)
    for fragment in ("newest backup of app", "newest backup of crm", "daily 2026-11-29", "weekly 2026-W48",
                     "monthly 2026-11", "yearly 2026", "within 30 days"):
        assert fragment in kept


def test_empty_policy_only_cleans_leftovers(store: LocalStorage) -> None:
    before = files(store)
    result = apply(store, plan(scan(store), RetentionPolicy(), NOW))
    gone = before - files(store)
    crashed = artifact_name("app", NOW - timedelta(days=3, hours=5), ".sql.gz")
    assert gone == {crashed, crashed + ".sha256", ".sentinel_backup_app_20261120T030000Z.sql.gz.partial"}
    assert all("incomplete leftover" in r.reason for r in result.results)
