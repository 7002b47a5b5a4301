"""Health checks: uniform results (name, status, detail) for humans, JSON and monitors.

Statuses map to exit codes a monitor can use: ok 0, critical 1, warning 4 (2 stays the
code of a configuration error, as everywhere). ``check --nagios`` uses the monitoring
plugin convention instead (:func:`nagios_report`): one line, OK 0, WARNING 1, CRITICAL 2,
UNKNOWN 3.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sentinel_backup import private
from sentinel_backup.choices import VerifyMode
from sentinel_backup.config_values import parse_duration
from sentinel_backup.errors import SentinelError
from sentinel_backup.jobs.lastrun import LastRunUnreadable, outcomes, read_last_run
from sentinel_backup.model.catalog import Catalog, scan
from sentinel_backup.model.check import CRITICAL, OK, RANK, WARNING, Check, Perf
from sentinel_backup.pg.source import Source
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.registry import build_destinations

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

EXIT_WARNING = 4
CheckResult = Check  # the name this module's callers know

__all__ = ["CRITICAL", "OK", "WARNING", "CheckResult", "Perf", "nagios_report", "nagios_unknown", "run_checks"]


def overall_exit(results: list[CheckResult]) -> int:
    worst = max((RANK[r.status] for r in results), default=0)
    return {0: 0, 1: EXIT_WARNING, 2: 1}[worst]


def _attempt(name: str, action: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, OK, action())
    except SentinelError as exc:
        return CheckResult(name, CRITICAL, exc.message, exc.hint)


def probe_destination(storage: Storage) -> str:
    """Write, read back and delete a small object."""
    storage.prepare()
    key = "sentinel-backup-check-probe"
    payload = b"sentinel-backup check\n"
    storage.put_bytes(key, payload)
    try:
        if storage.read_bytes(key) != payload:
            raise SentinelError(f"{storage.name}: the probe object read back differently", "check the store")
    finally:
        storage.delete(key)
    return f"write/read/delete ok at {storage.describe()}"


def age_text(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def backup_checks(settings: Settings, catalog: Catalog, databases: list[str], now: datetime) -> list[CheckResult]:
    """Age of the newest good backup of each database against MAX_BACKUP_AGE."""
    limit = parse_duration(settings.max_backup_age)
    results = []
    for database in databases:
        newest = next((e for e in catalog.entries if e.manifest.database == database and e.manifest.kind == "database"),
                      None)
        name = f"backup {database}"
        if newest is None:
            results.append(CheckResult(name, CRITICAL, "no backup found", "run sentinel-backup backup"))
            continue
        age = now - newest.manifest.created_at
        status = OK if age <= limit else CRITICAL
        where = ",".join(sorted(newest.locations))
        detail = f"newest {newest.id} is {age_text(age)} old (MAX_BACKUP_AGE {settings.max_backup_age}) on {where}"
        hint = None if status == OK else "backups have stopped: check the scheduler / cron and the logs"
        perf = Perf(f"backup_age_{database}", round(age.total_seconds()), "s", None, limit.total_seconds())
        results.append(CheckResult(name, status, detail, hint, perf))
    return results


def sharing_check(settings: Settings, catalog: Catalog, here: dict[str, Any], now: datetime) -> list[CheckResult]:
    """Without SERVER_NAME: another server writing logical backups into the same place (their
    manifests name another host, port or container, within twice MAX_BACKUP_AGE, so a server that
    only moved stops warning once its old backups are that old). Nothing when none is found."""
    if settings.server_name:
        return []
    since = now - 2 * parse_duration(settings.max_backup_age)
    others = sorted({_where(e.manifest.source) for e in catalog.entries
                     if e.manifest.kind != "physical" and e.manifest.source and e.manifest.created_at >= since}
                    - {_where(here)})
    if not others:
        return []
    return [CheckResult("shared storage", WARNING,
                        f"backups of another server ({', '.join(others)}) are written to the same storage without"
                        " SERVER_NAME: its databases' backups, `latest` and retention mix with this server's",
                        "give every server its own SERVER_NAME (docs/operations.md, 'Many servers, one bucket')")]


def _where(source: dict[str, Any]) -> str:
    if source.get("container"):
        return f"container {source['container']}"
    return f"{source.get('host') or 'local socket'}:{source.get('port') or 5432}"


def drill_checks(settings: Settings, catalog: Catalog, destinations: list[Storage]) -> list[CheckResult]:
    """The newest drill record of each database's newest backup."""
    expected = settings.verify_after_backup is VerifyMode.RESTORE or bool(settings.drill_schedule)
    by_name = {d.name: d for d in destinations}
    newest: dict[str, Any] = {}
    for entry in catalog.entries:
        if entry.manifest.kind in ("database", "physical"):  # physical: the point-in-time drill (physical.drill)
            newest.setdefault(entry.manifest.database, entry)
    results: list[CheckResult] = []
    if not newest:
        return results
    from sentinel_backup.logical.drill import (
        read_record,  # the drill module pulls in the restore machinery: only when needed
    )

    for database, entry in newest.items():
        record = None
        for dest_name, key in entry.locations.items():
            record = read_record(by_name[dest_name], key) if dest_name in by_name else None
            if record:
                break
        name = f"drill {database}"
        if record is None:
            status = WARNING if expected else OK
            results.append(CheckResult(name, status, f"{entry.id} has not been drilled",
                                       "run: sentinel-backup verify latest --restore"
                                       + (" --physical" if entry.manifest.kind == "physical" else "")))
        elif record.get("passed"):
            results.append(CheckResult(name, OK, f"{entry.id} restored in {record.get('restore_seconds')} s, "
                                       f"{record.get('tables_checked')} tables match" + (
                                           f", recovered to {record.get('reached_time')}"
                                           if record.get("reached_time") else "")))
        else:
            results.append(CheckResult(name, CRITICAL, f"drill of {entry.id} FAILED: "
                                       f"{record.get('error') or record.get('differences')}",
                                       "this backup does not restore as recorded: investigate before you need it"))
    return results


def last_run_check(settings: Settings) -> CheckResult:
    try:
        record = read_last_run(settings)
    except LastRunUnreadable as exc:  # says nothing about the last run: the backup age checks still judge
        return CheckResult("last run", WARNING, exc.message, exc.hint)
    if record is None:
        return CheckResult("last run", WARNING, "no backup run recorded in BACKUP_DIR")
    status = {"ok": OK, "partial": WARNING}.get(str(record.get("status")), CRITICAL)
    failed = {db: v.get("error") or v.get("failed_destinations") for db, v in outcomes(record).items()
              if not v.get("ok") or v.get("failed_destinations")}
    detail = f"{record.get('status')} at {record.get('finished_at')}" + (f": {failed}" if failed else "")
    return CheckResult("last run", status, detail)


def configuration_check(settings: Settings) -> CheckResult:
    """Valid settings (else nothing runs); a warning for unknown (misspelled?) variables."""
    if settings.warnings:
        return CheckResult("configuration", WARNING, "settings are valid, but: " + "; ".join(settings.warnings),
                           "fix or remove these variables (see docs/configuration.md)")
    return CheckResult("configuration", OK, "settings are valid")


def run_checks(settings: Settings, *, now: datetime | None = None) -> list[CheckResult]:
    now = now or datetime.now(UTC)
    source = Source(settings)
    results = [configuration_check(settings)]
    databases: list[str] = [] if settings.all_databases else settings.databases

    def server() -> str:
        version = source.query_json("SELECT to_json(current_setting('server_version'))")
        databases[:] = source.resolve_databases()
        return f"PostgreSQL {version}; databases: {', '.join(databases)}"

    results.append(_attempt("source", server))
    results.append(_attempt("pg_dump", lambda: source.matched_tools().describe()))

    def encryption() -> str:
        if not settings.encrypt_enabled:
            return "disabled"
        from sentinel_backup.keys import cipher_from_settings  # cryptography: only when it is used

        cipher = cipher_from_settings(settings)
        return "disabled" if cipher is None else f"{cipher.method}, key {cipher.key_id}"

    results.append(_attempt("encryption", encryption))
    try:
        destinations = build_destinations(settings)
    except SentinelError as exc:
        return [*results, CheckResult("destinations", CRITICAL, exc.message, exc.hint)]
    reachable = []
    for storage in destinations:
        result = _attempt(f"destination {storage.name}", functools.partial(probe_destination, storage))
        if result.ok:
            reachable.append(storage)
        mode = private.exposed(settings.backup_dir) if storage.name == "local" and result.ok else None
        if mode is not None:
            result = CheckResult(result.name, WARNING, f"{result.detail}; BACKUP_DIR is readable by group or "
                                 f"others ({mode})", f"run: chmod 700 {settings.backup_dir}")
        results.append(result)
    catalog = scan(reachable, strict=False, server=settings.server_name)
    results += backup_checks(settings, catalog, databases, now)
    results += sharing_check(settings, catalog, source.describe(), now)
    results.append(last_run_check(settings))
    results += drill_checks(settings, catalog, reachable)
    if not any(r.name == "source" and not r.ok for r in results):
        from sentinel_backup.wal.checks import archive_checks  # WAL archiving: settings, archiver, slot, gaps

        results += archive_checks(settings, source, reachable, now)
        if settings.physical_incremental:  # PostgreSQL 17+ with summarize_wal = on
            from sentinel_backup.physical.incremental import incremental_check

            results.append(incremental_check(source))
    return results


NAGIOS_CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")  # `|` starts the performance data


def nagios_report(results: list[CheckResult]) -> tuple[str, int]:
    """The monitoring-plugin line (Nagios, Icinga, Zabbix, Checkmk) and its exit code:
    ``SENTINEL CRITICAL - backup app: no backup found; ... | 'backup_age_db'=3600s;;93600;0 ...``.
    The summary names every check that is not ok (critical first); when all are ok, it
    counts them and gives each database's newest backup age."""
    bad = sorted((r for r in results if not r.ok), key=lambda r: -RANK[r.status])
    state = "CRITICAL" if any(r.status == CRITICAL for r in bad) else "WARNING" if bad else "OK"
    if bad:
        summary = "; ".join(f"{r.name}: {r.detail}" for r in bad)
    else:
        ages = [f"{r.name.removeprefix('backup ')} {age_text(timedelta(seconds=r.perf.value))}"
                for r in results if r.perf is not None]
        summary = f"{len(results)} checks ok" + (f"; newest backups: {', '.join(ages)}" if ages else "")
    counts = {status: sum(1 for r in results if r.status == status) for status in (OK, WARNING, CRITICAL)}
    perf = [r.perf.render() for r in results if r.perf is not None]
    perf += [f"'checks_{status}'={n};;;0" for status, n in counts.items()]
    return f"SENTINEL {state} - {_one_line(summary)} | {' '.join(perf)}", NAGIOS_CODES[state]


def nagios_unknown(error: str) -> tuple[str, int]:
    """The line for a check that could not run at all (bad configuration, internal error)."""
    return f"SENTINEL UNKNOWN - {_one_line(error)}", NAGIOS_CODES["UNKNOWN"]
