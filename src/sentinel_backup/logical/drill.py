"""Restore drills: prove a backup restores, and record how long it took.

A drill restores a backup into a scratch database (on the source server, or on the
DRILL_* server when configured), compares every table's row count (and, when the
manifest has them, content hashes) with what was recorded in the dump's own snapshot,
runs the user's DRILL_SQL_FILE checks, drops the scratch database and writes a drill
record (``<artifact>.drill.json``) beside the manifest. It never restores over a real
database: scratch names start with ``sentinel_drill_`` and are created by the drill.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, SentinelError
from sentinel_backup.logical.restore import Restorer, compare_counts
from sentinel_backup.logical.scratch import quote_ident
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.check import Check
from sentinel_backup.model.manifest import DRILL_SUFFIX
from sentinel_backup.pg.source import PSQL_FLAGS, conninfo
from sentinel_backup.storage.base import Storage

logger = log.get("drill")
SCRATCH_PREFIX = "sentinel_drill_"
DRILL_SERVER_HINT = ", or set DRILL_HOST / DRILL_USER to a separate drill server where the role may create databases"
__all__ = ["DRILL_SUFFIX", "Drill", "DrillReport", "newest_record", "read_record"]


@dataclass
class DrillReport:
    backup_id: str
    database: str
    destination: str
    scratch_database: str
    started_at: str
    passed: bool = False
    restore_seconds: float | None = None
    tables_checked: int = 0
    differences: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)  # DRILL_SQL_FILE's statements (name: the SQL)
    error: str | None = None

    def to_json(self) -> bytes:
        """The drill record; its checks as ``{"sql", "ok", "detail"}`` (the record's format)."""
        doc = asdict(self)
        doc["checks"] = [{"sql": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]
        return (json.dumps(doc, indent=2) + "\n").encode()


def drill_settings(settings: Settings) -> Settings:
    """The settings drills connect with: the source, or the DRILL_* server when set."""
    if not (settings.drill_host or settings.drill_port or settings.drill_container or settings.drill_user):
        return settings
    update: dict[str, Any] = {
        "postgres_host": settings.drill_host or settings.postgres_host,
        "postgres_port": settings.drill_port or settings.postgres_port,
        "postgres_user": settings.drill_user or settings.postgres_user,
        "postgres_container": settings.drill_container,
    }
    if settings.drill_password is not None or settings.drill_password_file is not None:
        update.update(postgres_password=settings.drill_password, postgres_password_file=settings.drill_password_file)
    return settings.model_copy(update=update)


def read_checks(settings: Settings) -> list[str]:
    if settings.drill_sql_file is None:
        return []
    try:
        text = settings.drill_sql_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"DRILL_SQL_FILE {settings.drill_sql_file} cannot be read: {exc.strerror}",
                          "fix the path or unset DRILL_SQL_FILE") from None
    statements = [s.strip() for s in text.split(";")]
    return [s for s in statements if s and not all(line.lstrip().startswith("--") for line in s.splitlines())]


class Drill:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.restorer = Restorer(drill_settings(settings))
        self.checks = read_checks(settings)

    def cleanup_stale(self) -> list[str]:
        """Drop scratch databases left by a drill that was killed (nobody is connected to them)."""
        sql = ("SELECT coalesce(json_agg(datname), '[]') FROM pg_database d WHERE datname LIKE 'sentinel\\_drill\\_%'"
               " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)")
        names = self.restorer.source.query_json(sql)
        dropped = []
        for name in names if isinstance(names, list) else []:
            logger.warning(f"Dropping scratch database {name} left by an interrupted drill")
            self.restorer.execute(f"DROP DATABASE IF EXISTS {quote_ident(str(name))}")
            dropped.append(str(name))
        return dropped

    def run(self, entry: Entry, storage: Storage) -> DrillReport:
        manifest = entry.manifest
        scratch = f"{SCRATCH_PREFIX}{os.getpid()}_{int(time.time())}"
        report = DrillReport(manifest.id, manifest.database, storage.name, scratch,
                             datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        try:
            if manifest.kind != "database":
                raise ConfigError(f"{manifest.id} holds globals, not a database", "drill a database backup")
            self.cleanup_stale()
            self.restorer.check_stored(storage, manifest)
            with self.restorer.scratch_database(scratch, create_hint=DRILL_SERVER_HINT):
                t0 = time.monotonic()
                result = self.restorer.restore_into(entry, storage, scratch, jobs=self.settings.pg_dump_jobs)
                report.restore_seconds = round(time.monotonic() - t0, 3)
                report.tables_checked = len(result.actual)
                report.differences = {k: {"manifest": a, "restored": b} for k, (a, b) in result.differences.items()}
                report.differences.update(self._hash_differences(manifest.table_hashes, scratch))
                report.checks = [self._user_check(sql, scratch) for sql in self.checks]
        except SentinelError as exc:
            report.error = exc.describe()
        report.passed = report.error is None and not report.differences and all(c.ok for c in report.checks)
        self._record(storage, manifest.artifact, report)
        level = logger.info if report.passed else logger.error
        level(f"Drill of {manifest.id} {'passed' if report.passed else 'FAILED'}", extra=log.fields(
            backup=manifest.id, restore_seconds=report.restore_seconds, tables=report.tables_checked,
            differences=len(report.differences), error=report.error or ""))
        return report

    def _hash_differences(self, manifest_hashes: dict[str, str] | None, database: str) -> dict[str, Any]:
        if manifest_hashes is None:
            return {}
        actual = self.restorer.source.table_hashes(database)
        return {f"{name} (content)": {"manifest": a, "restored": b}
                for name, (a, b) in compare_counts(manifest_hashes, actual).items()}

    def _user_check(self, sql: str, database: str) -> Check:
        try:
            out = self.restorer.source.run("psql", *PSQL_FLAGS, "-d", conninfo(database), "-c", sql).strip()
        except SentinelError as exc:
            return Check.of(sql, False, exc.message)
        return Check.of(sql, out == "t", f"returned {out!r}")

    def _record(self, storage: Storage, artifact: str, report: DrillReport) -> None:
        try:
            storage.put_bytes(artifact + DRILL_SUFFIX, report.to_json())
        except SentinelError as exc:
            logger.warning(f"Could not write the drill record on {storage.name}: {exc.message}")


def read_record(storage: Storage, artifact: str) -> dict[str, Any] | None:
    """The last drill record of a backup on this destination, if any."""
    if storage.stat(artifact + DRILL_SUFFIX) is None:
        return None
    try:
        record = json.loads(storage.read_bytes(artifact + DRILL_SUFFIX))
    except (ValueError, SentinelError):
        return None
    return record if isinstance(record, dict) else None


def newest_record(entry: Entry, destinations: list[Storage]) -> dict[str, Any] | None:
    """The newest drill record of a backup over the destinations its catalog entry found one on."""
    by_name = {d.name: d for d in destinations}
    records = [r for r in (read_record(by_name[name], entry.locations[name])
                           for name in entry.drills if name in by_name and name in entry.locations) if r]
    return max(records, key=lambda r: str(r.get("started_at", "")), default=None)
