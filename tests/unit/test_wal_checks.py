"""Archiving checks judged from the server's state (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sentinel_backup.config import settings_from
from sentinel_backup.wal.checks import archiver_checks, setting_checks

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def state(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "archive_mode": "on", "wal_level": "replica", "archive_command": "sentinel-backup wal-push %p",
        "archived_count": 10, "last_archived_wal": "000000010000000000000010",
        "last_archived_time": (NOW - timedelta(minutes=5)).isoformat(), "failed_count": 0,
        "last_failed_wal": None, "last_failed_time": None}
    return {**base, **changes}


def settings(**values: str) -> Any:
    return settings_from({"POSTGRES_USER": "u", "POSTGRES_DB": "d", "BACKUP_DIR": "/tmp/x", **values})


def test_settings() -> None:
    assert [r.status for r in setting_checks(settings(), state())] == ["ok"]
    assert setting_checks(settings(), state(archive_mode="off")) == []
    assert setting_checks(settings(WAL_RECEIVE_ENABLED="true"), state(archive_mode="off"))[0].status == "ok"
    assert setting_checks(settings(), state(wal_level="minimal"))[0].status == "critical"
    other = setting_checks(settings(), state(archive_command="cp %p /mnt/archive/%f"))[0]
    assert other.status == "warning" and "does not call wal-push" in other.detail


def test_a_failure_after_the_last_success_is_critical() -> None:
    failing = state(failed_count=3, last_failed_wal="000000010000000000000011",
                    last_failed_time=(NOW - timedelta(minutes=1)).isoformat())
    (result,) = archiver_checks(settings(), failing, NOW)
    assert result.status == "critical" and "000000010000000000000011" in result.detail
    recovered = state(failed_count=3, last_failed_time=(NOW - timedelta(minutes=9)).isoformat())
    assert archiver_checks(settings(), recovered, NOW)[0].status == "ok"


def test_wal_age_against_max_wal_age() -> None:
    assert [r.name for r in archiver_checks(settings(), state(), NOW)] == ["archiver"]
    fresh = archiver_checks(settings(MAX_WAL_AGE="10m"), state(), NOW)[1]
    assert fresh.status == "ok" and fresh.perf is not None
    stale = archiver_checks(settings(MAX_WAL_AGE="2m"), state(), NOW)[1]
    assert stale.status == "critical"
    never = archiver_checks(settings(MAX_WAL_AGE="2m"), state(last_archived_time=None), NOW)[1]
    assert never.status == "critical" and "no WAL archived" in never.detail
