"""What `check` says about WAL archiving: the server's settings, pg_stat_archiver, the age of
the newest archived WAL (MAX_WAL_AGE), the wal-receive slot, the async spool's backlog, and
gaps in the archive on each destination.

Nothing is reported when the server does not archive (``archive_mode = off``) and
``wal-receive`` is not configured: logical-only users see no archiving lines.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sentinel_backup.checks import CRITICAL, OK, WARNING, CheckResult, Perf, age_text
from sentinel_backup.config_values import parse_duration
from sentinel_backup.errors import SentinelError
from sentinel_backup.model.layout import WAL_ROOT, check_system_id, handle_for
from sentinel_backup.pg.source import Source
from sentinel_backup.storage.base import Storage
from sentinel_backup.wal.segment import is_segment, missing_segments

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

SPOOL_WARN_AGE = "15m"  # async backlog age that warns when MAX_WAL_AGE is not set

STATE_SQL = """
SELECT json_build_object(
  'archive_mode', current_setting('archive_mode'),
  'wal_level', current_setting('wal_level'),
  'archive_command', (SELECT setting FROM pg_settings WHERE name = 'archive_command'),
  'segment_size', (SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN '8kB' THEN 8192
                   WHEN 'MB' THEN 1048576 ELSE 1 END FROM pg_settings WHERE name = 'wal_segment_size'),
  'in_recovery', pg_is_in_recovery(),
  'current_wal', CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
  'archived_count', a.archived_count, 'last_archived_wal', a.last_archived_wal,
  'last_archived_time', a.last_archived_time, 'failed_count', a.failed_count,
  'last_failed_wal', a.last_failed_wal, 'last_failed_time', a.last_failed_time,
  'now', now())
FROM pg_stat_archiver a
"""

SLOT_SQL = """
SELECT coalesce((SELECT json_build_object('active', active, 'lag_bytes',
        CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) END)
        FROM pg_replication_slots WHERE slot_name = '{slot}'), 'null'::json)
"""


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def server_state(source: Source) -> dict[str, Any]:
    state = source.query_json(STATE_SQL)
    assert isinstance(state, dict)
    with contextlib.suppress(SentinelError):  # pg_control_system() may be refused to a non-superuser
        state["system_id"] = str(source.query_json("SELECT to_json(system_identifier::text) FROM pg_control_system()"))
    return state


def setting_checks(settings: Settings, state: dict[str, Any]) -> list[CheckResult]:
    mode, level, command = state["archive_mode"], state["wal_level"], state.get("archive_command")
    detail = f"archive_mode={mode}, wal_level={level}"
    if level == "minimal":
        return [CheckResult("archiving", CRITICAL, detail + ": WAL cannot be archived at wal_level=minimal",
                            "set wal_level = replica in postgresql.conf and restart PostgreSQL")]
    if mode == "off":  # logical backups only (nothing to say), or WAL through wal-receive
        return [CheckResult("archiving", OK, detail + "; WAL arrives through wal-receive")] \
            if settings.wal_receive_enabled else []
    if command is None:
        return [CheckResult("archiving", OK, detail + "; archive_command is not visible to POSTGRES_USER")]
    if "wal-push" not in command:
        return [CheckResult("archiving", WARNING, f"{detail}; archive_command does not call wal-push: {command!r}",
                            "archive_command = 'sentinel-backup --env-file /etc/sentinel/.env wal-push %p'")]
    return [CheckResult("archiving", OK, f"{detail}; archive_command calls wal-push")]


def archiver_checks(settings: Settings, state: dict[str, Any], now: datetime) -> list[CheckResult]:
    last_ok, last_failed = _time(state["last_archived_time"]), _time(state["last_failed_time"])
    results = []
    if last_failed is not None and (last_ok is None or last_failed > last_ok):
        results.append(CheckResult(
            "archiver", CRITICAL, f"archiving is failing: {state['failed_count']} failure(s), the last for "
            f"{state['last_failed_wal']} at {last_failed:%Y-%m-%d %H:%M:%S} UTC; pg_wal is growing",
            "see the server log for wal-push's error (a destination down, a key, a conflict); PostgreSQL retries"))
    else:
        results.append(CheckResult("archiver", OK, f"{state['archived_count']} archived, the last "
                                   f"{state['last_archived_wal'] or '(none yet)'}; {state['failed_count']} failures"))
    if settings.max_wal_age is not None:
        limit = parse_duration(settings.max_wal_age)
        if last_ok is None:
            results.append(CheckResult("wal age", CRITICAL, "no WAL archived yet",
                                       "force one with SELECT pg_switch_wal(); check archive_command"))
        else:
            age = now - last_ok
            status = OK if age <= limit else CRITICAL
            results.append(CheckResult(
                "wal age", status, f"the last WAL archived is {age_text(age)} old (MAX_WAL_AGE {settings.max_wal_age})",
                None if status == OK else "archiving has stopped, or the server is idle: set archive_timeout",
                Perf("wal_age", round(age.total_seconds()), "s", None, limit.total_seconds())))
    return results


def slot_check(settings: Settings, source: Source) -> CheckResult | None:
    """The wal-receive slot: reported when it exists (a standalone wal-receive service) or when
    WAL_RECEIVE_ENABLED says it should."""
    slot = settings.wal_receive_slot
    found = source.query_json(SLOT_SQL.format(slot=slot))
    if not isinstance(found, dict):
        if not settings.wal_receive_enabled:
            return None
        return CheckResult("wal-receive slot", CRITICAL, f"replication slot {slot} does not exist",
                           "start wal-receive (it creates the slot), e.g. systemctl start sentinel-wal-receive")
    lag = found.get("lag_bytes")
    lag_text = f"{int(lag) / 1048576:.1f} MiB behind" if lag is not None else "lag unknown"
    perf = Perf("wal_receive_lag", int(lag), "B") if lag is not None else None
    if not found.get("active"):
        return CheckResult("wal-receive slot", WARNING, f"slot {slot} is not in use ({lag_text}); the server keeps"
                           " WAL for it", "start wal-receive; a slot nobody uses fills pg_wal", perf)
    return CheckResult("wal-receive slot", OK, f"slot {slot} streaming, {lag_text}", None, perf)


def spool_check(settings: Settings, now: datetime) -> CheckResult:
    from sentinel_backup.wal.spool import pending, spool_root

    waiting = pending(spool_root(settings))
    if not waiting:
        return CheckResult("wal spool", OK, "empty: every spooled WAL file is shipped")
    oldest = min(datetime.fromtimestamp(item.path.stat().st_mtime, UTC) for item in waiting)
    age = now - oldest
    limit = parse_duration(settings.max_wal_age or SPOOL_WARN_AGE)
    status = OK if age <= limit else WARNING
    return CheckResult("wal spool", status, f"{len(waiting)} WAL file(s) waiting to be shipped, the oldest "
                       f"{age_text(age)} ({waiting[0].name})",
                       None if status == OK else "a destination is failing: see WAL_SPOOL_DIR/shipper.log",
                       Perf("wal_spool_files", len(waiting)))


def archived_names(storage: Storage, system_id: str) -> list[str]:
    names = []
    for info in storage.list(f"{WAL_ROOT}/{check_system_id(system_id)}/", deep=True):
        handle = handle_for(info.key)
        if handle is not None and handle.kind == "wal":
            names.append(handle.name)
    return names


def gap_check(storage: Storage, system_id: str, segment_size: int, last: str | None,
              first: str | None = None) -> CheckResult:
    """Missing segments in one destination's archive, from ``first`` (default: the oldest archived)
    to ``last`` (the server's last archived WAL)."""
    names = archived_names(storage, system_id)
    segments = [n for n in names if is_segment(n)]
    name = f"wal archive {storage.name}"
    if not segments:
        return CheckResult(name, WARNING, f"no WAL segment archived for system identifier {system_id}",
                           "check archive_command (or wal-receive) and this destination")
    last_segment = last if last and is_segment(last) and last >= min(segments) else None
    gaps = missing_segments(segments, segment_size, first, last_segment)
    if gaps:
        return CheckResult(name, CRITICAL, f"{len(gaps)} segment(s) missing between {first or min(segments)} and "
                           f"{last_segment or max(segments)}, the first {gaps[0]}",
                           "recovery cannot pass a gap: take a new base backup; find why the segment is missing")
    return CheckResult(name, OK, f"{len(segments)} segments from {min(segments)} to {max(segments)}, no gap")


def archive_checks(settings: Settings, source: Source, destinations: list[Storage],
                   now: datetime | None = None) -> list[CheckResult]:
    """Every archiving check for ``check``; empty when the server does not archive at all."""
    now = now or datetime.now(UTC)
    try:
        state = server_state(source)
    except SentinelError as exc:
        return [CheckResult("archiving", CRITICAL, f"cannot read the archiving state: {exc.message}", exc.hint)]
    results = setting_checks(settings, state)
    try:
        slot = slot_check(settings, source)
    except SentinelError as exc:
        slot = CheckResult("wal-receive slot", CRITICAL, exc.message, exc.hint)
    archiving = state["archive_mode"] != "off"
    if not archiving and slot is None:
        return results
    if not archiving and not results:
        results.append(CheckResult("archiving", OK, f"archive_mode=off; WAL arrives through wal-receive (slot"
                                   f" {settings.wal_receive_slot})"))
    if archiving:
        results += archiver_checks(settings, state, now)
    if slot is not None:
        results.append(slot)
    if settings.wal_push_async and settings.wal_spool_dir is not None:
        results.append(spool_check(settings, now))
    system_id = state.get("system_id")
    if system_id:
        for storage in destinations:
            try:
                results.append(gap_check(storage, system_id, int(state["segment_size"]), state["last_archived_wal"]))
            except SentinelError as exc:
                results.append(CheckResult(f"wal archive {storage.name}", CRITICAL, exc.message, exc.hint))
    return results
