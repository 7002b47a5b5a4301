"""Drills of physical backups: a real point-in-time restore into a scratch server, proven.

``verify ID|latest --restore`` on a physical backup (and ``DRILL_SCHEDULE`` through
``jobs.backup.drill_job``) runs, in order:

1. Leftovers of a killed drill (scratch folders ``sentinel-drill-<pid>-*`` whose process is
   gone) are stopped and removed.
2. The marker (``DRILL_PITR_MARKER``, on by default), on the source server: marker A is
   written to ``sentinel_drill.marker`` (schema and table created when missing, earlier
   rows deleted), a named restore point ``sentinel_drill_<stamp>`` is created
   (``pg_create_restore_point``), marker B is written, ``pg_switch_wal()`` finishes the
   segment, and the drill waits until the archiver reports it archived.
3. The WAL archive is read from the backup's start segment to the newest archived segment:
   a missing segment (a gap) fails the drill before anything is restored.
4. The backup (an incremental with its whole chain) is restored into a private scratch data
   directory (``PHYSICAL_SPOOL_DIR`` or the system temporary folder) with recovery to the
   restore point (or to the end of the archive without the marker), ``archive_mode = off``,
   and started with server binaries of the backup's major version on a free port, a private
   socket folder and no TCP (``listen_addresses = ''``).
5. Checks: recovery reached consistency and the target (a restore point never reached ends
   recovery with an error), marker A present and B absent, every table of every database
   readable, each ``DRILL_SQL_FILE`` query true; with ``DRILL_AMCHECK=true``, ``pg_amcheck``
   (of the backup's major version, beside its server binaries) over every database: heap
   tables and B-tree indexes, the ``amcheck`` extension created where missing (a write on
   the scratch server only); corruption fails the drill naming the relations.

The record (``<artifact>.drill.json``) holds the restore and recovery seconds (RTO: their sum
is ``restore_seconds``) and the newest point reached (RPO: ``reached_time``, ``reached_lsn``).
The scratch server and folder are removed at the end, also on failure and SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.demo.cluster import free_port
from sentinel_backup.errors import ConfigError, RestoreFailed, SentinelError, SourceError
from sentinel_backup.interrupt import process_alive
from sentinel_backup.logical.drill import DrillReport, read_checks
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.check import Check
from sentinel_backup.model.manifest import DRILL_SUFFIX
from sentinel_backup.pg.source import PSQL_FLAGS, Source, conninfo
from sentinel_backup.pg.tools import major_of
from sentinel_backup.physical.incremental import chain_for
from sentinel_backup.physical.restore import PhysicalRestore, Target, server_bin
from sentinel_backup.physical.server import TemporaryServer
from sentinel_backup.storage.base import Storage
from sentinel_backup.wal.checks import archived_names
from sentinel_backup.wal.segment import is_segment, missing_segments

logger = log.get("drill")
SCRATCH_PREFIX = "sentinel-drill-"
MARKER_SCHEMA = "sentinel_drill"
ARCHIVE_WAIT_SECONDS = 600.0  # then the drill goes on: recovery shows whether the point is reachable
TABLES_SQL = ("DO $$DECLARE r record; n bigint; c int := 0; BEGIN FOR r IN SELECT format('%I.%I', schemaname,"
              " tablename) AS t FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') LOOP"
              " EXECUTE 'SELECT count(*) FROM ' || r.t INTO n; c := c + 1; END LOOP;"
              " RAISE NOTICE 'sentinel_tables=%', c; END$$")


@dataclass
class PhysicalDrillReport(DrillReport):
    extract_seconds: float | None = None  # fetch, verify, extract (and combine a chain)
    recovery_seconds: float | None = None  # start and WAL replay to the target
    reached_lsn: str | None = None
    reached_time: str | None = None
    restore_point: str | None = None
    wal_checked: str | None = None
    amcheck_seconds: float | None = None


class PhysicalDrill:
    def __init__(self, settings: Settings, destinations: list[Storage], *, env_file: Path | None,
                 tool_command: str | None = None) -> None:
        self.settings = settings
        self.destinations = destinations
        self.restorer = PhysicalRestore(settings, env_file=env_file, tool_command=tool_command)
        self.source = Source(settings)
        self.checks = read_checks(settings)
        self.parent = settings.physical_spool_dir or Path(tempfile.gettempdir())

    def cleanup_stale(self) -> list[Path]:
        """Stop and remove the scratch of drills whose process is gone."""
        removed = []
        for folder in self.parent.glob(f"{SCRATCH_PREFIX}*"):
            match = re.match(rf"{SCRATCH_PREFIX}(\d+)-", folder.name)
            if match is None or process_alive(int(match.group(1))):
                continue
            logger.warning(f"Removing the scratch of an interrupted drill: {folder}")
            _kill_postmaster(folder / "data")
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        return removed

    def run(self, entry: Entry, storage: Storage, entries: list[Entry]) -> PhysicalDrillReport:
        facts = entry.manifest.physical
        report = PhysicalDrillReport(entry.id, entry.manifest.database, storage.name, "",
                                     datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        scratch: Path | None = None
        try:
            if facts is None:
                raise ConfigError(f"{entry.id} is not a physical backup")
            self.cleanup_stale()
            chain = chain_for(entry, entries, self.destinations, None)
            target = Target()
            if self.settings.drill_pitr_marker:
                try:
                    report.restore_point = self._marker()
                except SourceError as exc:
                    raise ConfigError(f"the drill's marker could not be written on the source: {exc.message}",
                                      "grant the rights docs/operations.md names (a primary, CREATE on postgres,"
                                      " pg_create_restore_point), or set DRILL_PITR_MARKER=false") from None
                target = Target(name=report.restore_point, action="promote")
            report.wal_checked = self._gap_check(storage, facts.system_identifier, facts.start_wal,
                                                 facts.wal_segment_size)
            scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=self.parent))
            os.chmod(scratch, 0o711)
            report.scratch_database = str(scratch)
            self._restore(entry, storage, chain, scratch / "data", target, report)
        except SentinelError as exc:
            report.error = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        finally:
            if scratch is not None:
                _kill_postmaster(scratch / "data")
                shutil.rmtree(scratch, ignore_errors=True)
        report.passed = report.error is None and all(c.ok for c in report.checks)
        self._record(storage, entry.manifest.artifact, report)
        level = logger.info if report.passed else logger.error
        level(f"Drill of {entry.id} {'passed' if report.passed else 'FAILED'}", extra=log.fields(
            backup=entry.id, restore_seconds=report.restore_seconds, recovery_seconds=report.recovery_seconds,
            reached_time=report.reached_time or "", tables=report.tables_checked, error=report.error or ""))
        return report

    # --- steps ------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return self.source.run("psql", *PSQL_FLAGS, "-d", conninfo("postgres"), "-c", sql).strip()

    def _marker(self) -> str:
        """Marker A, a restore point, marker B, the segment switched and archived; the point's name."""
        name = f"sentinel_drill_{datetime.now(UTC):%Y%m%dT%H%M%S}_{os.getpid()}"
        self._sql(f"CREATE SCHEMA IF NOT EXISTS {MARKER_SCHEMA}")
        self._sql(f"CREATE TABLE IF NOT EXISTS {MARKER_SCHEMA}.marker (point text NOT NULL, phase text NOT NULL,"
                  " written_at timestamptz NOT NULL DEFAULT now())")
        self._sql(f"DELETE FROM {MARKER_SCHEMA}.marker")
        self._sql(f"INSERT INTO {MARKER_SCHEMA}.marker (point, phase) VALUES ('{name}', 'A')")
        self._sql(f"SELECT pg_create_restore_point('{name}')")
        self._sql(f"INSERT INTO {MARKER_SCHEMA}.marker (point, phase) VALUES ('{name}', 'B')")
        switched = self._sql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + ARCHIVE_WAIT_SECONDS
        while time.monotonic() < deadline:
            archived, _, failed = self._sql("SELECT coalesce(last_archived_wal, '') || '|' ||"
                                            " coalesce(last_failed_wal, '') FROM pg_stat_archiver").partition("|")
            if archived >= switched:
                break
            if failed == switched:
                logger.warning(f"The archiver failed to archive {switched} (the restore point's segment)")
                break
            time.sleep(0.5)
        logger.info(f"Restore point {name} created in {switched}")
        return name

    def _gap_check(self, storage: Storage, system_id: str, first: str, segment_size: int) -> str:
        segments = [n for n in archived_names(storage, system_id) if is_segment(n) and n[8:] >= first[8:]]
        if not segments:
            raise RestoreFailed(f"no WAL archived on {storage.name} from {first} on",
                                "check archive_command (sentinel-backup check)")
        gaps = missing_segments(segments, segment_size, first)
        if gaps:
            raise RestoreFailed(f"the WAL archive on {storage.name} has a gap: {len(gaps)} segment(s) missing"
                                f" between {first} and {max(segments)} (first: {gaps[0]})",
                                "recovery cannot pass a gap: take a new base backup; find why the segment is missing")
        return f"{first}..{max(segments)}"

    def _restore(self, entry: Entry, storage: Storage, chain: list[tuple[Entry, Storage]], pgdata: Path,
                 target: Target, report: PhysicalDrillReport) -> None:
        t0 = time.monotonic()
        result = self.restorer.run(entry, storage, pgdata, target, chain=chain)
        report.extract_seconds = round(time.monotonic() - t0, 3)
        bin_dir = server_bin(self.settings, major_of(entry.manifest.server_version or "0"))
        if bin_dir is None:
            raise ConfigError(f"no PostgreSQL {entry.manifest.server_version} server binaries found for the drill",
                              "install that PostgreSQL version or set PG_BIN_DIR")
        server = TemporaryServer(bin_dir, pgdata, free_port(), self.restorer.owner, self.settings)
        try:
            try:
                server.recover(result, keep_running=True)
            except RestoreFailed as exc:
                if target.name and "before configured recovery target was reached" in exc.message:
                    raise RestoreFailed(f"the restore point {target.name} was never reached: {exc.message}",
                                        "a WAL segment after the base backup is missing from the archive, or was"
                                        " never archived (sentinel-backup check)") from None
                raise
            report.recovery_seconds = round(result.recovery_seconds or 0.0, 3)
            report.restore_seconds = round(report.extract_seconds + report.recovery_seconds, 3)
            report.reached_lsn, report.reached_time = result.reached_lsn, result.reached_time
            if result.state != "promoted":
                raise RestoreFailed(f"recovery ended {result.state}, not promoted")
            self._checks(server, target, report)
        finally:
            server.stop()

    def _checks(self, server: TemporaryServer, target: Target, report: PhysicalDrillReport) -> None:
        if target.name:
            phases = _psql(server, "postgres", f"SELECT string_agg(phase, ',' ORDER BY phase) FROM"
                                               f" {MARKER_SCHEMA}.marker WHERE point = '{target.name}'")[0]
            report.checks.append(Check.of("marker A present, B absent", phases == "A",
                                          f"markers found: {phases or 'none'}"))
        databases = _psql(server, "postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")[0]
        for database in databases.splitlines():
            _, err = _psql(server, database, TABLES_SQL)
            found = re.search(r"sentinel_tables=(\d+)", err)
            report.tables_checked += int(found.group(1)) if found else 0
        if self.settings.drill_amcheck:
            report.checks.append(self._amcheck(server, report))
        database = self.settings.databases[0] if self.settings.databases and not self.settings.all_databases \
            else "postgres"
        for sql in self.checks:
            try:
                value = _psql(server, database, sql)[0]
                report.checks.append(Check.of(sql, value == "t", f"returned {value!r}"))
            except RestoreFailed as exc:
                report.checks.append(Check.of(sql, False, exc.message))

    def _amcheck(self, server: TemporaryServer, report: PhysicalDrillReport) -> Check:
        """pg_amcheck over every database of the scratch server (DRILL_AMCHECK)."""
        name = "pg_amcheck"
        tool = server.bin_dir / "pg_amcheck"
        if not tool.is_file():
            return Check.of(name, False, f"no pg_amcheck beside the server binaries in {server.bin_dir}",
                            "install the PostgreSQL contrib/client package of that version (pg_amcheck and the amcheck"
                            " extension), or set DRILL_AMCHECK=false")
        argv = [str(tool), "--all", "--install-missing", "--jobs", str(min(4, os.cpu_count() or 1)),
                "-h", str(server.socket), "-p", str(server.port), "-U", server.settings.postgres_user, "-w"]
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, env=_client_env(server), check=False)
        report.amcheck_seconds = round(time.monotonic() - t0, 3)
        return amcheck_result(name, proc.returncode, proc.stdout, proc.stderr)

    def _record(self, storage: Storage, artifact: str, report: PhysicalDrillReport) -> None:
        try:
            storage.put_bytes(artifact + DRILL_SUFFIX, report.to_json())
        except SentinelError as exc:
            logger.warning(f"Could not write the drill record on {storage.name}: {exc.message}")


AMCHECK_RELATION = re.compile(r'^(heap table|btree index|toast table) "([^"]+)"', re.MULTILINE)


def amcheck_result(name: str, code: int, stdout: str, stderr: str) -> Check:
    """The drill's check from pg_amcheck's exit code and output (its findings name the relation:
    ``btree index "db.schema.name":`` followed by indented details)."""
    if code == 0 and not stdout.strip():
        return Check.of(name, True, "no corruption found in any database (heap tables, B-tree indexes)")
    found = list(dict.fromkeys(f"{kind} {rel}" for kind, rel in AMCHECK_RELATION.findall(stdout)))
    if found:
        first = next((line.strip() for line in stdout.splitlines() if line.startswith((" ", "\t")) and line.strip()),
                     "")
        return Check.of(name, False, f"corruption in {len(found)} relation(s): {', '.join(found[:10])}"
                        f"{' ...' if len(found) > 10 else ''}" + (f"; first finding: {first}" if first else ""),
                        "the backup holds corrupt pages or indexes: restore an older backup for the affected"
                        " relations; run pg_amcheck on the source (REINDEX the index)")
    text = (stderr.strip() or stdout.strip() or f"exit code {code}")[-1500:]
    return Check.of(name, False, f"pg_amcheck failed: {text}",
                    "the amcheck extension must be installable on the drill server (PostgreSQL contrib);"
                    " or set DRILL_AMCHECK=false")


def _client_env(server: TemporaryServer) -> dict[str, str]:
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    password = server.settings.password()
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def _psql(server: TemporaryServer, database: str, sql: str) -> tuple[str, str]:
    env = _client_env(server)
    proc = subprocess.run([str(server.bin_dir / "psql"), *PSQL_FLAGS, "-h", str(server.socket), "-p",
                           str(server.port), "-U", server.settings.postgres_user, "-d", conninfo(database), "-c", sql],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RestoreFailed(f"on the drill server, database {database}: {proc.stderr.strip()}")
    return proc.stdout.strip(), proc.stderr


def _kill_postmaster(pgdata: Path) -> None:
    """Stop a scratch server at once (SIGQUIT: immediate shutdown) and wait until it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        if process_alive(pid) and pid > 1:
            os.kill(pid, signal.SIGQUIT)
            for _ in range(600):
                if not process_alive(pid):
                    break
                time.sleep(0.1)
