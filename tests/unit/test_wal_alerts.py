"""Archive-failure alerts: once when it starts, at most hourly while it lasts, then recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel_backup.config import settings_from
from sentinel_backup.wal import alerts


def test_failures_are_told_hourly_and_the_recovery_once(tmp_path: Path) -> None:
    settings = settings_from({"POSTGRES_USER": "u", "POSTGRES_DB": "d", "BACKUP_DIR": str(tmp_path)})
    start = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    assert alerts.archive_failed(settings, "000000010000000000000006", "s3: down", start)
    assert not alerts.archive_failed(settings, "000000010000000000000006", "s3: down", start + timedelta(minutes=1))
    assert not alerts.archive_failed(settings, "000000010000000000000006", "s3: down", start + timedelta(minutes=59))
    assert alerts.archive_failed(settings, "000000010000000000000007", "s3: down", start + timedelta(minutes=61))
    assert '"failing_since": "2026-12-03T08:00:00+00:00"' in alerts.state_path(settings).read_text()
    assert alerts.archive_succeeded(settings)
    assert not alerts.state_path(settings).exists()
    assert not alerts.archive_succeeded(settings)  # nothing to announce the next time
