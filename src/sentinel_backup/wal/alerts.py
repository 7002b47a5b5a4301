"""Archive failing is an error event: a notification when wal-push starts failing, at most once
an hour while it goes on, and one when archiving works again.

PostgreSQL calls a failing ``archive_command`` again and again (three tries, then every
minute), so a notification per failure would flood the channel. A small state file
(``.sentinel-wal-alert.json`` in WAL_SPOOL_DIR, else BACKUP_DIR) records since when
archiving fails and when people were last told; a successful push looks for it with one
``stat`` and, when it is there, announces the recovery and removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup import log

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

_log = log.get("wal")
STATE_NAME = ".sentinel-wal-alert.json"
REPEAT = timedelta(hours=1)
_STATE_LOCK = threading.Lock()  # the shipper pushes two files at once: one read-modify-write of the state at a time


def state_path(settings: Settings) -> Path:
    return (settings.wal_spool_dir or settings.backup_dir) / STATE_NAME


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict[str, str]) -> None:
    temp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp.write_text(json.dumps(data))
        os.replace(temp, path)
    except OSError as exc:
        _log.warning("cannot record the archiving alert state in %s: %s", path, exc.strerror)
        with contextlib.suppress(OSError):
            temp.unlink()


def _send(settings: Settings, kind: str, error: str | None, counts: dict[str, int] | None = None) -> None:
    if not settings.webhook_enabled or not settings.webhook_url:
        return
    from sentinel_backup.notify import EventKind, Notifier, RunEvent

    Notifier.from_settings(settings).notify(RunEvent(EventKind(kind), error=error, counts=counts or {}))


def archive_failed(settings: Settings, name: str, error: str, now: datetime | None = None) -> bool:
    """Record a failed push; notify unless people were told within the hour. True when notified."""
    with _STATE_LOCK:
        return _archive_failed(settings, name, error, now)


def _archive_failed(settings: Settings, name: str, error: str, now: datetime | None) -> bool:
    now = now or datetime.now(UTC)
    path = state_path(settings)
    state = _read(path)
    since = state.get("failing_since", now.isoformat())
    told = state.get("notified_at")
    due = told is None or now - datetime.fromisoformat(told) >= REPEAT
    state = {"failing_since": since, "last_failed_wal": name, "last_error": error,
             "notified_at": now.isoformat() if due else str(told)}
    _write(path, state)
    if due:
        _send(settings, "archive_failed", f"{name}: {error} (failing since {since})")
    return due


def archive_succeeded(settings: Settings) -> bool:
    """After a successful push: announce the recovery when archiving had been failing."""
    with _STATE_LOCK:
        return _archive_succeeded(settings)


def _archive_succeeded(settings: Settings) -> bool:
    path = state_path(settings)
    if not path.exists():
        return False
    state = _read(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _send(settings, "archive_recovered", None)
    _log.info("WAL archiving works again (it failed since %s)", state.get("failing_since", "?"))
    return True
