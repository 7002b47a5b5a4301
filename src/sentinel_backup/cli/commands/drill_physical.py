"""`sentinel-backup verify --restore` on a physical backup: a point-in-time drill (see physical.drill)."""

from __future__ import annotations

import signal
from pathlib import Path

from sentinel_backup.cli.app import emit
from sentinel_backup.config import Settings
from sentinel_backup.errors import EXIT_FAILURE
from sentinel_backup.model.catalog import Entry
from sentinel_backup.storage.base import Storage


def drill_physical(settings: Settings, entry: Entry, entries: list[Entry], destinations: list[Storage],
                   destination: str | None, *, env_file: Path | None, tool_command: str | None) -> int:
    from sentinel_backup.jobs.backup import metrics_for, publish_metrics
    from sentinel_backup.lock import run_lock
    from sentinel_backup.logical.restore import pick_copy
    from sentinel_backup.notify import EventKind, Notifier, RunEvent
    from sentinel_backup.physical.drill import PhysicalDrill
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: the scratch server and folder are removed
    storage = pick_copy(entry, destinations, destination)
    with run_lock(settings.backup_dir):
        report = PhysicalDrill(settings, destinations, env_file=env_file, tool_command=tool_command).run(
            entry, storage, entries)
        publish_metrics(settings, metrics_for(None, [report]))
    if not report.passed:
        Notifier.from_settings(settings).notify(RunEvent(EventKind.VERIFY_FAILED, databases=[report.database],
                                                         error=report.error or "a drill check failed"))
    emit(f"Drill of {entry.id} from {storage.name}: {'PASSED' if report.passed else 'FAILED'}")
    if report.wal_checked:
        emit(f"  WAL archive: {report.wal_checked}, no gap")
    if report.restore_seconds is not None:
        emit(f"  RTO: {report.restore_seconds} s (restore {report.extract_seconds} s, recovery"
             f" {report.recovery_seconds} s) in a scratch server (removed)")
        emit(f"  reached: LSN {report.reached_lsn}, last transaction at {report.reached_time}"
             + (f", restore point {report.restore_point}" if report.restore_point else ""))
    emit(f"  tables read: {report.tables_checked}")
    for c in report.checks:
        emit(f"  {'ok    ' if c.ok else 'FAILED'} check {c.name!r}: {c.detail}")
    if report.error:
        emit(f"  error: {report.error}")
    return 0 if report.passed else EXIT_FAILURE
