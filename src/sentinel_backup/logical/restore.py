"""Restore a logical backup into a database (through a scratch database and a swap); drills
(``logical.drill``) restore through it too.

Safety rules:
- the stored SHA-256 is checked in a first pass, before any decrypted byte is used;
- the data is restored into a scratch database ``<target>__sentinel_restore`` first;
- only when that succeeded and the table row counts match the manifest comes the swap:
  1. the scratch database stops accepting connections and any session on it (nobody
     has business there, e.g. a monitoring agent) is terminated;
  2. with ``--clean``, sessions on the old target are listed: the restore refuses while
     there are any, unless ``--terminate-sessions`` was given; then the old target stops
     accepting connections and its sessions are terminated;
  3. one transaction renames the old target to ``<target>__sentinel_old`` and the scratch
     database to ``<target>`` and lets the new target accept connections again: either
     everything or nothing of it happens;
  4. only then is ``<target>__sentinel_old`` dropped (if that fails, it is kept and named);
- a failure before the swap committed drops the scratch database and leaves the target
  as it was (its ``ALLOW_CONNECTIONS`` restored); the error names what exists afterwards;
- with a :class:`~sentinel_backup.interrupt.StopSignals` guard, SIGINT/SIGTERM/SIGHUP stop
  the restore: the client tool is stopped, the scratch database dropped ``WITH (FORCE)``
  (which ends its server sessions) and :class:`Interrupted` (exit 130) raised. The
  short DDL steps and the swap are not cut in half: a signal during them is honoured
  right after them (after the swap committed, the restore is complete and says so);
- nothing but the target, the scratch database and ``<target>__sentinel_old`` is touched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TypeVar

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import (
    ConfigError,
    Interrupted,
    NotFound,
    RestoreFailed,
    SentinelError,
    SourceError,
)
from sentinel_backup.interrupt import StopSignals
from sentinel_backup.logical.directory import restore_directory
from sentinel_backup.logical.selective import RestoreSelection, check_selection, require_archive
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.pg.child import finish_tool
from sentinel_backup.pg.source import PSQL_FLAGS, Source, StderrCollector, conninfo, source_error
from sentinel_backup.pipeline.read import decode_into, reading_cipher, require_stored
from sentinel_backup.pipeline.verify import prove_legacy
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.base import FileSink

logger = log.get("restore")
V = TypeVar("V")
Progress = Callable[[int], None]
SCRATCH_SUFFIX = "__sentinel_restore"
OLD_SUFFIX = "__sentinel_old"
MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated by the server

SESSIONS_SQL = ("SELECT coalesce(json_agg(json_build_object('pid', pid, 'user', usename, 'application',"
                " application_name, 'client', coalesce(host(client_addr), 'local'), 'state', state) ORDER BY pid),"
                " '[]') FROM pg_stat_activity WHERE datname = {name} AND pid <> pg_backend_pid()")
TERMINATE_SQL = ("SELECT coalesce(json_agg(pg_terminate_backend(pid, 5000)), '[]') FROM pg_stat_activity"
                 " WHERE datname = {name} AND pid <> pg_backend_pid()")


def derived_name(target: str, suffix: str) -> str:
    """``target + suffix`` within 63 bytes: the target is shortened (at a character boundary)."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    head = target.encode()[:room].decode(errors="ignore")
    return head + suffix


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class RestoreResult:
    backup_id: str
    target: str
    seconds: float
    expected: dict[str, int] | None
    actual: dict[str, int]
    differences: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what a successful restore left behind, for the user

    @property
    def counts_match(self) -> bool | None:
        return None if self.expected is None else not self.differences


def compare_counts(expected: Mapping[str, V] | None, actual: Mapping[str, V]) -> dict[str, tuple[V | None, V | None]]:
    """Tables whose row counts (or hashes) differ: name -> (manifest, restored). Missing tables count."""
    if expected is None:
        return {}
    names = set(expected) | set(actual)
    return {n: (expected.get(n), actual.get(n)) for n in sorted(names) if expected.get(n) != actual.get(n)}


class Restorer:
    def __init__(self, settings: Settings, *, progress: Progress | None = None,
                 stop: StopSignals | None = None) -> None:
        self.settings = settings
        self.source = Source(settings)
        self.progress = progress
        self.stop = stop

    def _deferred(self, *, deliver: bool = True) -> contextlib.AbstractContextManager[None]:
        """A step a stop signal must not cut in half (no-op without a StopSignals guard)."""
        return self.stop.deferred(deliver=deliver) if self.stop is not None else contextlib.nullcontext()

    # --- database helpers -------------------------------------------------------------
    def database_exists(self, name: str) -> bool:
        sql = f"SELECT json_build_array(EXISTS (SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}))"
        result = self.source.query_json(sql)
        return bool(isinstance(result, list) and result[0])

    def execute(self, sql: str, database: str = "postgres") -> None:
        self.source.run("psql", *PSQL_FLAGS, "-d", conninfo(database), "-c", sql)

    def row_counts(self, database: str) -> dict[str, int]:
        return self.source.row_counts(database)

    @contextlib.contextmanager
    def scratch_database(self, name: str, *, create_hint: str = "") -> Iterator[str]:
        """Create ``name``; drop it on the way out unless it was renamed away."""
        if self.database_exists(name):
            raise RestoreFailed(f"scratch database {name} already exists (left by an interrupted restore?)",
                                f"check it is not needed, then: DROP DATABASE {quote_ident(name)}")
        try:
            with self._deferred(deliver=False):  # a stop during CREATE is acted on below, where the drop is sure
                self.execute(f"CREATE DATABASE {quote_ident(name)}")
        except SourceError as exc:
            if "permission denied to create database" not in exc.message:
                raise
            user = self.settings.postgres_user
            raise SourceError(f"{exc.message} (restores go through a scratch database, {name})",
                              f"the role {user} needs CREATEDB: ALTER ROLE {quote_ident(user)} CREATEDB;"
                              f" or use a superuser{create_hint}") from None
        try:
            if self.stop is not None:
                self.stop.check()
            yield name
        finally:
            # FORCE also ends the server sessions of a client tool that was stopped.
            with self._deferred(deliver=False):
                if self.database_exists(name):
                    try:
                        self.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
                    except SentinelError as exc:
                        logger.error(f"Could not drop scratch database {name}: {exc.message}")

    # --- the restore ------------------------------------------------------------------
    def sessions(self, database: str) -> list[dict[str, object]]:
        """Other sessions connected to ``database`` (pid, user, application, client, state)."""
        found = self.source.query_json(SESSIONS_SQL.format(name=quote_literal(database)))
        return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []

    def _refuse_sessions(self, target: str, terminate: bool, error: type[SentinelError]) -> None:
        sessions = self.sessions(target)
        if sessions and not terminate:
            listed = "; ".join(f"pid {s['pid']} user {s['user']} application {s['application'] or '-'}"
                               f" from {s['client']} ({s['state']})" for s in sessions[:10])
            more = f" and {len(sessions) - 10} more" if len(sessions) > 10 else ""
            raise error(f"{len(sessions)} session(s) are connected to {target}, which --clean would replace:"
                        f" {listed}{more}",
                        "stop them (e.g. the application) and run the restore again, or pass --terminate-sessions"
                        " to have them terminated just before the swap")

    def _close(self, database: str) -> None:
        """No new connections to ``database``; sessions on it are terminated (waiting up to 5 s each)."""
        self.execute(f"ALTER DATABASE {quote_ident(database)} ALLOW_CONNECTIONS false")
        self.source.query_json(TERMINATE_SQL.format(name=quote_literal(database)))

    def _allows_connections(self, database: str) -> bool:
        result = self.source.query_json("SELECT json_build_array(datallowconn) FROM pg_database"
                                        f" WHERE datname = {quote_literal(database)}")
        return bool(isinstance(result, list) and result[0])

    # --- the restore ------------------------------------------------------------------
    def restore(self, entry: Entry, storage: Storage, target: str, *, create: bool = False, clean: bool = False,
                terminate_sessions: bool = False, jobs: int = 1,
                selection: RestoreSelection | None = None) -> RestoreResult:
        """Restore ``entry`` into ``target`` (see the module doc); with ``selection``, only the
        selected schemas and tables (see :mod:`sentinel_backup.logical.selective`)."""
        manifest = entry.manifest
        if manifest.kind == "physical":
            raise ConfigError(f"{manifest.id} is a physical base backup of the whole cluster, not a database dump",
                              f"restore it with: sentinel-backup restore --physical {manifest.id} --pgdata NEW_DIR")
        if manifest.kind == "globals":
            raise ConfigError(f"{manifest.id} holds roles and tablespaces, not a database",
                              f"apply it with: sentinel-backup restore --globals {manifest.id}")
        if selection is not None and not selection.empty:
            require_archive(manifest, "selecting schemas or tables", legacy=entry.legacy)
            check_selection(manifest, selection)
        if not target or target.endswith((SCRATCH_SUFFIX, OLD_SUFFIX)):
            raise ConfigError("--target-db names no usable database", "give --target-db NAME")
        if target in ("template0", "template1") or (target == "postgres" and clean):
            raise ConfigError(f"--target-db {target} cannot be replaced: the tool itself (and PostgreSQL) need it",
                              "restore into another name, e.g. --target-db postgres_restored --create")
        if len(target.encode()) > MAX_NAME_BYTES:
            raise ConfigError(f"--target-db {target!r} is {len(target.encode())} bytes long: PostgreSQL names have"
                              f" at most {MAX_NAME_BYTES} bytes (the server would silently cut it)",
                              f"choose a name of at most {MAX_NAME_BYTES} bytes")
        exists = self.database_exists(target)
        if exists and not clean:
            raise ConfigError(f"database {target} already exists",
                              "pass --clean to replace it (it is dropped only after the restored copy took its name),"
                              " or choose another --target-db")
        if not exists and not create:
            raise ConfigError(f"database {target} does not exist", "pass --create to create it")
        scratch = derived_name(target, SCRATCH_SUFFIX)
        old = derived_name(target, OLD_SUFFIX) if exists else None
        if old is not None:
            if self.database_exists(old):
                raise ConfigError(f"database {old} already exists (the old {target} kept by an earlier restore?)",
                                  f"check it is not needed, then: DROP DATABASE {quote_ident(old)}")
            self._refuse_sessions(target, terminate_sessions, ConfigError)  # fail now, not after hours
        t0 = time.monotonic()
        swapped = False
        try:
            if entry.legacy:  # no manifest: prove the file in full first, and pin the SHA-256 it was read with
                entry = replace(entry, manifest=prove_legacy(storage, manifest, self.settings))
            else:
                self.check_stored(storage, manifest)
            with self.scratch_database(scratch):
                result = self.restore_into(entry, storage, scratch, jobs=jobs, selection=selection)
                if result.differences:
                    raise RestoreFailed(f"restored row counts differ from the manifest: {format_differences(result)}")
                if self.stop is not None:
                    self.stop.check()  # the last moment a signal stops the restore
                with self._deferred(deliver=False):  # the swap is never cut in half
                    notes = self._swap(scratch, target, old, terminate_sessions)
                    swapped = True
        except BaseException as exc:
            if swapped and isinstance(exc, KeyboardInterrupt):  # a stop after the swap: the restore is complete
                logger.warning(f"Stop requested after {target} received the restored copy: the restore is complete")
            elif swapped or not isinstance(exc, (SentinelError, KeyboardInterrupt)):
                raise
            else:
                raise self._failed(exc, manifest.id, target, scratch, old, exists) from None
        result.target = target
        result.seconds = round(time.monotonic() - t0, 3)
        result.notes = notes
        return result

    def _swap_committed(self, scratch: str, old: str | None, error: SourceError) -> bool:
        """After psql failed on the swap transaction (killed after the server committed it, say):
        did it happen? Read back from pg_database; RestoreFailed when that cannot be told."""
        try:
            return not self.database_exists(scratch) and (old is None or self.database_exists(old))
        except SentinelError as exc:
            raise RestoreFailed(f"the swap of {scratch} failed ({error.message}) and what exists now could not be"
                                f" read ({exc.message})", "look at pg_database: the restored copy is either still "
                                f"{scratch} or already the target, and the old copy ends in {OLD_SUFFIX}") from None

    def _swap(self, scratch: str, target: str, old: str | None, terminate: bool) -> list[str]:
        """Give the restored copy the target's name (see the module doc); notes on what is left."""
        logger.info(f"Swapping the restored copy {scratch} in as {target}")
        self._close(scratch)  # nobody has business on the scratch database
        reopen = False
        try:
            statements = []
            if old is not None:
                self._refuse_sessions(target, terminate, RestoreFailed)
                if terminate and self._allows_connections(target):
                    logger.warning(f"Terminating the sessions on {target} (--terminate-sessions)")
                    reopen = True
                    self._close(target)
                statements.append(f"ALTER DATABASE {quote_ident(target)} RENAME TO {quote_ident(old)}")
            statements += [f"ALTER DATABASE {quote_ident(scratch)} RENAME TO {quote_ident(target)}",
                           f"ALTER DATABASE {quote_ident(target)} ALLOW_CONNECTIONS true"]
            try:
                self.execute("BEGIN; " + "; ".join(statements) + "; COMMIT")
            except SourceError as exc:
                if not self._swap_committed(scratch, old, exc):
                    raise RestoreFailed(f"the swap of {scratch} in as {target} failed, nothing of it was done:"
                                        f" {exc.message}") from None
                logger.warning(f"psql failed after the swap committed ({exc.message}): {target} holds the restore")
        except BaseException:
            if reopen:
                try:
                    self.execute(f"ALTER DATABASE {quote_ident(target)} ALLOW_CONNECTIONS true")
                except SentinelError as exc:
                    logger.error(f"Could not let {target} accept connections again: {exc.message}")
            raise
        if old is None:
            return []
        logger.info(f"Dropping the old {target}, renamed {old} (--clean)")
        try:
            self.execute(f"DROP DATABASE {quote_ident(old)} WITH (FORCE)")
        except SentinelError as exc:
            logger.error(f"Could not drop {old}: {exc.message}")
            return [f"the old content of {target} is kept as database {old} (dropping it failed: {exc.message});"
                    f" drop it when it is no longer needed: DROP DATABASE {quote_ident(old)}"]
        return []

    def _failed(self, exc: SentinelError | KeyboardInterrupt, backup_id: str, target: str, scratch: str,
                old: str | None, existed: bool) -> SentinelError:
        """The error to raise for a restore that did not complete, naming every database that exists now."""
        state = self._state(target, scratch, old, existed)
        signal_name = self.stop.name if self.stop is not None else None
        if isinstance(exc, KeyboardInterrupt) or signal_name is not None:
            by = f" by {signal_name}" if signal_name else ""
            return Interrupted(f"the restore of {backup_id} into {target} was interrupted{by}", state)
        assert isinstance(exc, SentinelError)
        return type(exc)(exc.message, f"{exc.hint}; {state}" if exc.hint else state)

    def _state(self, target: str, scratch: str, old: str | None, existed: bool) -> str:
        try:
            with self._deferred(deliver=False):
                facts = []
                if self.database_exists(target):
                    connectable = self._allows_connections(target)
                    facts.append(f"{target} holds what it held before the restore" if existed else
                                 f"{target} exists (it did not before the restore)")
                    if not connectable:
                        facts.append(f"{target} does not accept connections: ALTER DATABASE {quote_ident(target)}"
                                     " ALLOW_CONNECTIONS true")
                else:
                    facts.append(f"there is NO database {target} any more" if existed else f"{target} was not created")
                facts.append(f"the scratch database {scratch} still exists (it holds the partly restored copy)"
                             if self.database_exists(scratch) else f"the scratch database {scratch} was dropped")
                if old is not None and self.database_exists(old):
                    facts.append(f"{old} holds the old content of {target}")
        except SentinelError as err:
            return f"could not check which databases exist now ({err.message}): look at {target} and {scratch}"
        return "; ".join(facts)

    def check_stored(self, storage: Storage, manifest: Manifest) -> None:
        """First pass: the stored bytes must match the manifest before anything uses them."""
        require_stored(storage, manifest)

    def restore_into(self, entry: Entry, storage: Storage, database: str, *, jobs: int = 1,
                     selection: RestoreSelection | None = None) -> RestoreResult:
        """Stream the backup into an existing empty database and count its rows (with a
        ``selection``: only the selected ones, compared with the manifest's selected tables)."""
        manifest = entry.manifest
        chosen = selection.pg_restore_args() if selection is not None else []
        expected = selection.expected(manifest.tables) if selection is not None else manifest.tables
        cipher = reading_cipher(manifest, self.settings)
        if cipher is not None and not cipher.can_decrypt:
            raise ConfigError(f"{manifest.id} is encrypted with age", "set AGE_IDENTITY_FILE to the identity file")
        t0 = time.monotonic()
        logger.info(f"Restoring {manifest.id} into {database}", extra=log.fields(
            backup=manifest.id, format=manifest.format, source=storage.name))
        if chosen:  # pg_restore creates no schema of a selected object
            for schema in selection.schemas_needed(manifest.tables) if selection is not None else []:
                self.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}", database)
        try:
            if manifest.format == "directory":
                restore_directory(self.source, self.settings, manifest, storage, database, jobs, self.progress,
                                  selection=chosen)
            elif manifest.format == "custom" and jobs > 1 and not self.settings.postgres_container:
                self._restore_parallel(manifest, storage, database, jobs, chosen)
            else:
                if manifest.format == "custom" and jobs > 1:
                    logger.warning("--jobs needs a file on this host; in container mode the restore runs with one job")
                args = ([*PSQL_FLAGS, "--single-transaction", "-d", conninfo(database)] if manifest.format == "plain"
                        else ["--single-transaction", "--exit-on-error", *chosen, "-d", conninfo(database)])
                self._stream_into(manifest, storage, "psql" if manifest.format == "plain" else "pg_restore", args)
        except SourceError as exc:
            raise selection.explain(exc, manifest.tables) if selection is not None else exc from None
        actual = self.row_counts(database)
        return RestoreResult(manifest.id, database, round(time.monotonic() - t0, 3), expected, actual,
                             compare_counts(expected, actual))

    def _stream_into(self, manifest: Manifest, storage: Storage, tool: str, args: list[str]) -> None:
        """storage -> hash -> decrypt -> decompress -> the tool's stdin; commit only if the hash held."""
        proc = self.source.popen(tool, *args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        errors = StderrCollector(proc)
        assert proc.stdin is not None
        try:
            decode_into(storage, manifest, self.settings, _Feed(proc.stdin), progress=self.progress)
            proc.stdin.close()  # end of input: psql commits its single transaction now
            code = proc.wait()
        except BaseException:
            proc.kill()  # the transaction is rolled back by the server
            proc.wait()
            raise
        finally:
            errors.join()
        if code != 0:
            raise source_error(tool, errors.text(), code)

    def _restore_parallel(self, manifest: Manifest, storage: Storage, database: str, jobs: int,
                          chosen: list[str]) -> None:
        """pg_restore -j needs a seekable file: the artifact itself when local and unencrypted."""
        with self._archive_file(manifest, storage) as path:
            proc = self.source.popen("pg_restore", "--exit-on-error", "-j", str(jobs), *chosen, "-d",
                                     conninfo(database), str(path), stdout=subprocess.DEVNULL)
            finish_tool(proc, "pg_restore")

    @contextlib.contextmanager
    def _archive_file(self, manifest: Manifest, storage: Storage) -> Iterator[Path]:
        in_place = storage.local_path(manifest.artifact) if storage.capabilities.local_files else None
        if in_place is not None and manifest.encryption is None and manifest.compression.algorithm == "none":
            yield in_place
            return
        fd, name = tempfile.mkstemp(prefix=".sentinel-restore-", suffix=".dump", dir=os.environ.get("TMPDIR"))
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                decode_into(storage, manifest, self.settings, FileSink(out), progress=self.progress)
            yield path
        finally:
            path.unlink(missing_ok=True)


class _Feed:
    """Sink into a child's stdin that turns a dead child into a clear error."""

    def __init__(self, stdin: IO[bytes]) -> None:
        self.stdin = stdin

    def write(self, data: bytes) -> None:
        try:
            self.stdin.write(data)
        except BrokenPipeError:
            raise RestoreFailed("the restore program stopped reading (see its error below)") from None

    def close(self) -> None:
        pass  # the caller closes stdin only after the hash was checked


def format_differences(result: RestoreResult) -> str:
    return ", ".join(f"{name}: manifest {exp}, restored {act}" for name, (exp, act) in result.differences.items())


def pick_copy(entry: Entry, destinations: list[Storage], wanted: str | None) -> Storage:
    """The destination to read a backup from: ``wanted``, else the first that holds it."""
    by_name = {d.name: d for d in destinations}
    if wanted is not None:
        if wanted not in by_name:
            raise ConfigError(f"destination {wanted!r} is not enabled", "enable it (e.g. S3_ENABLED=true)")
        if wanted not in entry.locations:
            raise NotFound(f"{entry.id} has no copy on {wanted}", f"it is on: {', '.join(sorted(entry.locations))}")
        return by_name[wanted]
    for name in ("local", "minio", "s3"):
        if name in entry.locations and name in by_name:
            return by_name[name]
    raise NotFound(f"{entry.id} has no copy on an enabled destination", "enable the destination that holds it")
