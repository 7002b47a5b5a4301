"""One backup run, end to end.

For each database: export a snapshot and read row counts in it, run ``pg_dump
--snapshot``, stream its output once through hash -> compress -> encrypt -> hash ->
every destination, commit each copy, re-read it, and only then write the ``.sha256``
and the manifest (the commit point). A dump that fails, is killed or is truncated, or
a copy that does not verify, never gets a manifest.

A stop request (SIGTERM/SIGINT, or the scheduler's stop event) is honoured in every phase
(see ``interrupt``): the children are stopped, the unfinished copies removed or aborted,
and the run ends with ``RunResult.interrupted`` set (exit 130). A copy whose manifest was
already written is a complete backup and stays; nothing else of that backup does.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sentinel_backup import __version__, log
from sentinel_backup.choices import BackupFormat, Compression
from sentinel_backup.config import Settings
from sentinel_backup.errors import BackupFailed, Interrupted, SentinelError, SourceError
from sentinel_backup.interrupt import Stopper
from sentinel_backup.keys import cipher_from_settings
from sentinel_backup.logical.directory import DirectoryDumpProducer, temp_root, temp_variable
from sentinel_backup.logical.producer import PgDumpProducer
from sentinel_backup.logical.selection import parse_options
from sentinel_backup.model.layout import Handle, key_for
from sentinel_backup.model.manifest import Manifest, artifact_name, backup_id
from sentinel_backup.pg.source import Snapshot, Source, conninfo
from sentinel_backup.pipeline.commit import Committed, commit, unique_key
from sentinel_backup.pipeline.producer import Producer
from sentinel_backup.pipeline.write import Encoding, Written, write_stream
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.compress import EXTENSIONS
from sentinel_backup.streams.crypto import Cipher

logger = log.get("backup")
Progress = Callable[[int], None]


@dataclass
class Outcome:
    """What happened to one database (or the globals) in a run."""

    database: str
    kind: str = "database"
    manifest: Manifest | None = None
    stored: list[str] = field(default_factory=list)  # destinations holding a committed copy
    failed: dict[str, str] = field(default_factory=dict)  # destination -> error
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.manifest is not None


@dataclass
class RunResult:
    outcomes: list[Outcome]
    started: datetime
    duration: float
    interrupted: Interrupted | None = None  # set when a stop request ended the run

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def partial(self) -> bool:
        return any(o.ok and o.failed for o in self.outcomes)


def stream_compression(settings: Settings, kind: str) -> Compression:
    """Compression applied by our stream. Custom- and directory-format dumps are compressed by
    pg_dump itself (so the artifact stays usable by ``pg_restore -j`` directly); ours is none."""
    if dump_format(settings, kind) != "plain":
        return Compression.NONE
    return settings.compression


def dump_format(settings: Settings, kind: str) -> str:
    """The manifest's ``format``: globals are always plain SQL."""
    return settings.backup_format.value if kind == "database" else "plain"


def extension(settings: Settings, kind: str, cipher: Cipher | None) -> str:
    fmt = dump_format(settings, kind)
    base = {"custom": ".dump", "directory": ".dir.tar"}.get(fmt, ".sql" + EXTENSIONS[settings.compression])
    return base + (cipher.extension if cipher is not None else "")


def custom_compression_args(settings: Settings) -> list[str]:
    """pg_dump -Z for custom format: COMPRESSION=none disables it, COMPRESSION_LEVEL sets it."""
    if settings.compression is Compression.NONE:
        return ["-Z", "0"]
    if settings.compression is Compression.GZIP and settings.compression_level is not None:
        return ["-Z", str(settings.compression_level)]
    return []


def lock_wait_args(settings: Settings) -> list[str]:
    """pg_dump --lock-wait-timeout from LOCK_WAIT_TIMEOUT (none when 0: wait forever)."""
    milliseconds = int(settings.lock_wait.total_seconds() * 1000)
    return [f"--lock-wait-timeout={milliseconds}"] if milliseconds else []


class BackupRun:
    """A configured run: source, destinations and cipher resolved before any dump starts."""

    def __init__(self, settings: Settings, destinations: list[Storage], *, progress: Progress | None = None,
                 stop: threading.Event | Stopper | None = None, clock: Callable[[], datetime] | None = None,
                 unusable: dict[str, str] | None = None, cipher: Cipher | None = None) -> None:
        """``cipher``: the one the caller already built (and so validated); None builds it from
        the settings (None again when they do not encrypt)."""
        self.settings = settings
        self.destinations = destinations
        self.unusable = dict(unusable or {})  # enabled destinations that failed before the run: name -> error
        self.source = Source(settings)
        self.cipher = cipher if cipher is not None else cipher_from_settings(settings)
        self.progress = progress
        self.stopper = stop if isinstance(stop, Stopper) else Stopper(stop)
        self.stop = self.stopper.event
        self.source.on_spawn = self.stopper.adopt  # a stop request ends pg_dump / psql at once
        self.interrupted: Interrupted | None = None
        self.clock = clock or (lambda: datetime.now(UTC))
        self.extra_args = shlex.split(settings.pg_dump_options)
        self.selection = parse_options(self.extra_args)  # what the facts must cover; ConfigError if unclear
        if not destinations:
            raise BackupFailed("no destination is enabled", "set LOCAL_ENABLED=true, S3_ENABLED or MINIO_ENABLED")

    def run(self) -> RunResult:
        with self.stopper.watching():
            return self._run()

    def _run(self) -> RunResult:
        started = self.clock()
        t0 = time.monotonic()
        try:
            self.stopper.check("the backup")
            tools = self.source.matched_tools()  # before anything else: exit 2 when pg_dump is older than the server
            logger.debug(f"Client tools: {tools.describe()}")
            databases = self.source.resolve_databases()
        except Exception:
            if self.stopper.settle():
                raise self.stopper.error("the backup") from None
            raise
        logger.info("Backup process started", extra=log.fields(
            databases=",".join(databases), destinations=",".join(d.name for d in self.destinations),
            format=self.settings.backup_format.value, compression=self.settings.compression.value,
            encryption=self.cipher.method if self.cipher else "none"))
        outcomes = []
        for database in databases:
            outcomes.append(self._back_up(database, "database", started))
        if self.settings.dump_globals:
            outcomes.append(self._back_up("globals", "globals", started))
        return RunResult(outcomes, started, time.monotonic() - t0, self.interrupted)

    def _back_up(self, database: str, kind: str, moment: datetime) -> Outcome:
        """One database (or the globals) dumped and committed. A failure or an interruption is
        recorded in the outcome, and the run goes on (or stops) from there; only an unexpected
        error (a bug) propagates."""
        outcome = Outcome(database, kind, failed=dict(self.unusable))
        if self.stopper.requested:
            outcome.error = "not started: the run was interrupted"
            self.interrupted = self.interrupted or self.stopper.error("the backup")
            return outcome
        try:
            self._dump_and_commit(outcome, moment)
        except Exception as exc:
            # Whatever failed while a stop was requested failed because of it (pg_dump or psql
            # killed by the same process-group signal, say): an interruption, not a failure.
            if not self.stopper.settle() and not isinstance(exc, Interrupted):
                if not isinstance(exc, SentinelError):
                    raise
                outcome.error = exc.describe()
                logger.error(f"Backup of {database} failed: {exc.message}", extra=log.fields(
                    database=database, hint=exc.hint or ""))
                return outcome
            self.interrupted = self.interrupted or self.stopper.error("the backup")
            kept = f"; {outcome.manifest.artifact} is complete on {', '.join(outcome.stored)} and stays" \
                if outcome.manifest and outcome.stored else "; nothing of it was committed"
            outcome.error = f"interrupted{kept}"
            logger.warning(f"Backup of {database} interrupted{kept}", extra=log.fields(database=database))
        return outcome

    # --- one database ---------------------------------------------------------------
    def _encoding(self, kind: str) -> Encoding:
        return Encoding.from_settings(self.settings, self.cipher, compression=stream_compression(self.settings, kind))

    def _dump_and_commit(self, outcome: Outcome, moment: datetime) -> None:
        s = self.settings
        is_globals = outcome.kind == "globals"
        ext = extension(s, outcome.kind, self.cipher)
        database = None if is_globals else outcome.database
        server = s.server_name  # a named server's backups go to servers/<name>/ (model.layout)
        name = unique_key(self.destinations, lambda n: key_for(Handle(
            "logical", artifact_name(database, moment + timedelta(seconds=n), ext), server=server)),
                          what=database or "globals")
        begin = self.clock()
        t0 = time.monotonic()
        logger.info(f"Dumping {outcome.database}", extra=log.fields(database=outcome.database, artifact=name))
        display = getattr(self.progress, "begin", None)  # a progress display names the database, sizes its bar
        if callable(display):
            display(outcome.database, outcome.kind)
        self.stopper.check()
        encoding = self._encoding(outcome.kind)
        if is_globals:
            snap = None
            producer = PgDumpProducer(self.source, self.source.command("pg_dumpall", "--globals-only"),
                                      tool="pg_dumpall", label="pg_dumpall --globals-only", end_marker=True)
            written = self._write(producer, name, encoding)
        else:
            with self.source.snapshot(outcome.database, hashes=s.manifest_table_hashes, selection=self.selection,
                                      lock_timeout=s.lock_wait) as snap:
                written = self._write(self._dump_producer(outcome.database, snap.id), name, encoding)
        try:
            self.stopper.check()
            manifest = self._manifest(outcome, name, begin, time.monotonic() - t0, snap, written, encoding)
        except BaseException:
            written.abort()
            raise
        self._commit(outcome, written, manifest)

    def _dump_producer(self, database: str, snapshot: str) -> Producer:
        """pg_dump of ``database`` in ``snapshot``, in BACKUP_FORMAT."""
        s = self.settings
        fmt = {BackupFormat.PLAIN: ["-F", "p"], BackupFormat.CUSTOM: ["-F", "c", *custom_compression_args(s)],
               BackupFormat.DIRECTORY: ["-F", "d", "-j", str(s.pg_dump_jobs), *custom_compression_args(s)]}
        args = ["--snapshot", snapshot, *fmt[s.backup_format], *lock_wait_args(s), *self.extra_args,
                "-d", conninfo(database)]
        label = f"pg_dump of {database}"
        if s.backup_format is BackupFormat.DIRECTORY:  # a folder, streamed as one tar when pg_dump is done
            return DirectoryDumpProducer(self.source, args, root=temp_root(s), label=label,
                                         variable=temp_variable(s))
        return PgDumpProducer(self.source, self.source.command("pg_dump", *args), tool="pg_dump", label=label,
                              end_marker=s.backup_format is BackupFormat.PLAIN)

    def _write(self, producer: Producer, name: str, encoding: Encoding) -> Written:
        return write_stream(producer, name, self.destinations, encoding, verify=self.settings.verify_after_backup,
                            stopper=self.stopper, progress=self.progress)

    def _manifest(self, outcome: Outcome, name: str, begin: datetime, seconds: float, snap: Snapshot | None,
                  written: Written, encoding: Encoding) -> Manifest:
        s = self.settings
        fmt = dump_format(s, outcome.kind)
        raw, stored = written.raw, written.stored
        return Manifest(
            id=backup_id(name), kind=outcome.kind, database=outcome.database, artifact=name,  # type: ignore[arg-type]
            created_at=begin, finished_at=self.clock(), duration_seconds=round(seconds, 3),
            tool_version=__version__, hostname=socket.gethostname(), server=s.server_name,
            source=self.source.describe(),
            server_version=snap.server_version if snap else None, pg_dump_version=self._pg_dump_version(),
            format=fmt,  # type: ignore[arg-type]
            compression=encoding.compression_info(), encryption=encoding.encryption_info(),
            raw_size_bytes=raw.size, raw_sha256=raw.sha256, size_bytes=stored.size, sha256=stored.sha256,
            snapshot=snap.id if snap else None, tables=snap.tables if snap else None,
            table_hashes=snap.hashes if snap else None,
        )

    _version_cache: str | None = None

    def _pg_dump_version(self) -> str | None:
        if self._version_cache is None:
            try:
                self._version_cache = self.source.tool_version("pg_dump")
            except SourceError:
                return None
        return self._version_cache

    def _commit(self, outcome: Outcome, written: Written, manifest: Manifest) -> None:
        """Commit, check and record each copy (pipeline.commit); MIN_BACKUP_SIZE applies
        when the snapshot saw rows."""
        has_rows = any(n > 0 for n in (manifest.tables or {}).values())
        minimum = self.settings.min_backup_size if has_rows else 0
        try:
            commit(written, manifest, self.destinations, settings=self.settings, stopper=self.stopper,
                   min_size=minimum, committed=Committed(outcome.stored, outcome.failed))
        except BaseException:
            if outcome.stored:
                outcome.manifest = manifest  # complete where its manifest was written
            raise
        outcome.manifest = manifest
        logger.info(f"Backup of {manifest.database} completed", extra=log.fields(
            database=manifest.database, artifact=manifest.artifact, raw_bytes=manifest.raw_size_bytes,
            stored_bytes=manifest.size_bytes, seconds=manifest.duration_seconds,
            tables=len(manifest.tables or {}), destinations=",".join(outcome.stored)))
