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
from sentinel_backup.choices import BackupFormat, Compression, VerifyMode
from sentinel_backup.config import Settings
from sentinel_backup.errors import BackupFailed, Interrupted, SentinelError, SourceError, StorageError
from sentinel_backup.interrupt import Stopper, stop_children
from sentinel_backup.keys import cipher_from_settings
from sentinel_backup.logical.selection import parse_options
from sentinel_backup.model.manifest import (
    MANIFEST_SUFFIX,
    CompressionInfo,
    EncryptionInfo,
    Manifest,
    artifact_name,
    backup_id,
    checksum_line,
)
from sentinel_backup.pg.source import Snapshot, Source, StderrCollector, conninfo, source_error
from sentinel_backup.pipeline.read import StreamCheck, check_stored, verify_copy
from sentinel_backup.storage.base import ObjectWriter, Storage
from sentinel_backup.storage.fanout import FanOut
from sentinel_backup.streams.base import Sink, Tee, pump
from sentinel_backup.streams.compress import EXTENSIONS, compressor
from sentinel_backup.streams.crypto import Cipher
from sentinel_backup.streams.digest import Digest

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
    """Compression applied by our stream. Custom-format dumps are compressed by pg_dump
    itself (so the artifact stays usable by ``pg_restore -j`` directly); ours is none."""
    if kind == "database" and settings.backup_format is BackupFormat.CUSTOM:
        return Compression.NONE
    return settings.compression


def extension(settings: Settings, kind: str, cipher: Cipher | None) -> str:
    custom = kind == "database" and settings.backup_format is BackupFormat.CUSTOM
    base = ".dump" if custom else ".sql" + EXTENSIONS[settings.compression]
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
                 unusable: dict[str, str] | None = None, cipher: Cipher | bool | None = True) -> None:
        """``cipher``: True (the default) builds it from the settings; None means no encryption."""
        self.settings = settings
        self.destinations = destinations
        self.unusable = dict(unusable or {})  # enabled destinations that failed before the run: name -> error
        self.source = Source(settings)
        self.cipher = cipher_from_settings(settings) if cipher is True else cipher or None
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
            outcomes.append(self._guarded(database, "database", started))
        if self.settings.dump_globals:
            outcomes.append(self._guarded("globals", "globals", started))
        return RunResult(outcomes, started, time.monotonic() - t0, self.interrupted)

    def _guarded(self, database: str, kind: str, moment: datetime) -> Outcome:
        outcome = Outcome(database, kind, failed=dict(self.unusable))
        if self.stopper.requested:
            outcome.error = "not started: the run was interrupted"
            self.interrupted = self.interrupted or self.stopper.error("the backup")
            return outcome
        try:
            self._one(outcome, moment)
        except Exception as exc:
            # Whatever failed while a stop was requested failed because of it (pg_dump or psql
            # killed by the same process-group signal, say): an interruption, not a failure.
            if not self.stopper.settle() and not isinstance(exc, Interrupted):
                if not isinstance(exc, SentinelError):
                    raise
                outcome.error = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
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
    def _one(self, outcome: Outcome, moment: datetime) -> None:
        s = self.settings
        is_globals = outcome.kind == "globals"
        ext = extension(s, outcome.kind, self.cipher)
        name = self._unique_name(None if is_globals else outcome.database, moment, ext)
        begin = self.clock()
        t0 = time.monotonic()
        logger.info(f"Dumping {outcome.database}", extra=log.fields(database=outcome.database, artifact=name))
        display = getattr(self.progress, "begin", None)  # a progress display names the database, sizes its bar
        if callable(display):
            display(outcome.database, outcome.kind)
        self.stopper.check()
        if is_globals:
            snap = None
            argv = self.source.command("pg_dumpall", "--globals-only")
            fanout, raw, stored = self._dump(name, argv, outcome.kind)
        else:
            with self.source.snapshot(outcome.database, hashes=s.manifest_table_hashes, selection=self.selection,
                                      lock_timeout=s.lock_wait) as snap:
                custom = s.backup_format is BackupFormat.CUSTOM
                fmt = ["-F", "c", *custom_compression_args(s)] if custom else ["-F", "p"]
                args = ["--snapshot", snap.id, *fmt, *lock_wait_args(s), *self.extra_args,
                        "-d", conninfo(outcome.database)]
                fanout, raw, stored = self._dump(name, self.source.command("pg_dump", *args), outcome.kind)
        try:
            self.stopper.check()
            manifest = self._manifest(outcome, name, begin, time.monotonic() - t0, snap, raw, stored)
        except BaseException:
            fanout.abort()
            raise
        self._commit(outcome, fanout, manifest)

    def _unique_name(self, database: str | None, moment: datetime, ext: str) -> str:
        """The artifact name for this run, moved on by a second while a backup of the same
        database already has it (two runs within one second must never share a name)."""
        for offset in range(3600):
            name = artifact_name(database, moment + timedelta(seconds=offset), ext)
            taken = any(dest.stat(name) is not None or dest.stat(name + MANIFEST_SUFFIX) is not None
                        for dest in self.destinations)
            if not taken:
                return name
        raise BackupFailed(f"no free artifact name for {database or 'globals'} near {moment}", "report this")

    def _dump(self, name: str, argv: list[str], kind: str) -> tuple[FanOut, Digest, Digest]:
        s = self.settings
        writers = {}
        try:
            for dest in self.destinations:
                writers[dest.name] = dest.open_writer(name, artifact=True)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        fanout = FanOut(writers, check=self.stopper.check)
        check = self._stream_check(kind)
        taps_stored = check is not None and check.decrypts
        stored = Digest(Tee(fanout, check.sink) if check is not None and taps_stored else fanout)
        inner: Sink = self.cipher.encryptor(stored) if self.cipher else stored
        if check is not None and not taps_stored:
            inner = Tee(inner, check.sink)  # age without an identity here: decode the compressed bytes
        raw = Digest(compressor(stream_compression(s, kind), s.effective_compression_level(), inner,
                                threads=s.compression_threads))
        logger.debug("Running " + " ".join(argv))
        try:
            self.stopper.check()
            proc = self.source.spawn(argv)
        except BaseException:
            if check is not None:
                check.abort()
            fanout.abort()
            raise
        errors = StderrCollector(proc)
        try:
            assert proc.stdout is not None
            pump(proc.stdout, raw, progress=self._tick)
            code = proc.wait()
        except BaseException:
            stop_children([proc])  # SIGINT first: pg_dump then cancels its query on the server
            proc.wait()
            if check is not None:
                check.abort()
            fanout.abort()
            raise
        finally:
            errors.join()
        if code != 0:
            fanout.abort()
            if self.stopper.settle():  # killed by the signal that stops us (a process-group signal)
                raise self.stopper.error()
            raise source_error("pg_dumpall" if kind == "globals" else "pg_dump", errors.text(), code)
        if errors.text().strip():
            logger.warning(f"pg_dump said: {errors.text().strip()}")
        if check is not None:
            failures = [c for c in check.checks(raw, stored if taps_stored else None) if not c.ok]
            if failures:
                fanout.abort()
                raise BackupFailed("in-stream verification failed: " + "; ".join(
                    f"{c.name}: {c.detail}" for c in failures), "nothing was committed; report this if it repeats")
            logger.debug("In-stream verification passed", extra=log.fields(
                raw_bytes=raw.size, decrypted=taps_stored))
        return fanout, raw, stored

    def _stream_check(self, kind: str) -> StreamCheck | None:
        """The in-stream decoder for this artifact, or None with VERIFY_AFTER_BACKUP=none."""
        if self.settings.verify_after_backup is VerifyMode.NONE:
            return None
        cipher = self.cipher if self.cipher is not None and self.cipher.can_decrypt else None
        plain = kind == "globals" or self.settings.backup_format is BackupFormat.PLAIN
        return StreamCheck(stream_compression(self.settings, kind), cipher, end_marker=plain)

    def _tick(self, n: int) -> None:
        self.stopper.check()
        if self.progress is not None:
            self.progress(n)

    def _manifest(self, outcome: Outcome, name: str, begin: datetime, seconds: float, snap: Snapshot | None,
                  raw: Digest, stored: Digest) -> Manifest:
        s = self.settings
        fmt = "custom" if s.backup_format is BackupFormat.CUSTOM and outcome.kind == "database" else "plain"
        return Manifest(
            id=backup_id(name), kind=outcome.kind, database=outcome.database, artifact=name,  # type: ignore[arg-type]
            created_at=begin, finished_at=self.clock(), duration_seconds=round(seconds, 3),
            tool_version=__version__, hostname=socket.gethostname(), source=self.source.describe(),
            server_version=snap.server_version if snap else None, pg_dump_version=self._pg_dump_version(),
            format=fmt,  # type: ignore[arg-type]
            compression=self._compression_info(outcome.kind),
            encryption=EncryptionInfo(method=self.cipher.method, key_id=self.cipher.key_id) if self.cipher else None,
            raw_size_bytes=raw.size, raw_sha256=raw.sha256, size_bytes=stored.size, sha256=stored.sha256,
            snapshot=snap.id if snap else None, tables=snap.tables if snap else None,
            table_hashes=snap.hashes if snap else None,
        )

    def _compression_info(self, kind: str) -> CompressionInfo:
        algorithm = stream_compression(self.settings, kind)
        level = 0 if algorithm is Compression.NONE else self.settings.effective_compression_level()
        return CompressionInfo(algorithm=algorithm.value, level=level)

    _version_cache: str | None = None

    def _pg_dump_version(self) -> str | None:
        if self._version_cache is None:
            try:
                self._version_cache = self.source.tool_version("pg_dump")
            except SourceError:
                return None
        return self._version_cache

    def _commit(self, outcome: Outcome, fanout: FanOut, manifest: Manifest) -> None:
        """Close the stream, commit each copy, verify it, then write .sha256 + manifest."""
        s = self.settings
        fanout.close()
        has_rows = any(n > 0 for n in (manifest.tables or {}).values())
        if s.min_backup_size and has_rows and manifest.size_bytes < s.min_backup_size:
            fanout.abort()
            raise BackupFailed(f"{manifest.artifact} is only {manifest.size_bytes} bytes (MIN_BACKUP_SIZE is "
                               f"{s.min_backup_size})", "check that the database has data, or lower MIN_BACKUP_SIZE")
        for name, error in fanout.failed.items():
            outcome.failed[name] = str(error)
            logger.error(f"Destination {name} failed for {manifest.artifact}: {error}",
                         extra=log.fields(destination=name))
            _abort_quietly(fanout, name)
        by_name = {d.name: d for d in self.destinations}
        healthy = list(fanout.healthy.items())
        for index, (name, writer) in enumerate(healthy):
            committed = False
            try:
                self.stopper.check()
                writer.commit()
                committed = True
                # The stream was decoded in-stream; each durable copy is re-read for its SHA-256,
                # except a further copy whose store verified the SHA-256 of every part it received.
                by_store = bool(outcome.stored) and bool(getattr(writer, "verified_by_store", False))
                self._check_copy(by_name[name], manifest, full=not by_store)
                by_name[name].put_bytes(manifest.checksum_key, checksum_line(manifest.sha256, manifest.artifact))
                self.stopper.check()  # the last moment to stop: past the manifest, this copy is a backup
                by_name[name].put_bytes(manifest.manifest_key, manifest.to_json())
            except Exception as exc:
                if not isinstance(exc, SentinelError) or self.stopper.requested:
                    # Interrupted (or a bug): nothing unfinished may stay anywhere.
                    self._discard(by_name[name], manifest, writer, committed)
                    for rest_name, rest in healthy[index + 1:]:
                        _abort_writer(rest, rest_name)
                    if outcome.stored:
                        outcome.manifest = manifest  # complete where its manifest was written
                    raise
                outcome.failed[name] = exc.message
                logger.error(f"Destination {name} failed for {manifest.artifact}: {exc.message}",
                             extra=log.fields(destination=name))
                if committed:  # only what this run stored; never a name it could not commit
                    by_name[name].delete(manifest.checksum_key)
                    by_name[name].delete(manifest.artifact)
                continue
            outcome.stored.append(name)
        if not outcome.stored:
            raise BackupFailed(f"no destination holds a verified copy of {manifest.artifact}",
                               "; ".join(f"{k}: {v}" for k, v in outcome.failed.items()))
        outcome.manifest = manifest
        logger.info(f"Backup of {manifest.database} completed", extra=log.fields(
            database=manifest.database, artifact=manifest.artifact, raw_bytes=manifest.raw_size_bytes,
            stored_bytes=manifest.size_bytes, seconds=manifest.duration_seconds,
            tables=len(manifest.tables or {}), destinations=",".join(outcome.stored)))

    def _check_copy(self, storage: Storage, manifest: Manifest, *, full: bool = True) -> None:
        """After the copy is durable: its size (always), its SHA-256 (integrity: the bytes the
        in-stream check decoded are the bytes stored), or a full decode again (reread)."""
        mode = self.settings.verify_after_backup
        if mode is VerifyMode.NONE or not full:
            info = storage.stat(manifest.artifact)
            if info is None or info.size != manifest.size_bytes:
                raise StorageError(f"{storage.name}: stored size does not match the stream", "try again")
            return
        def progress(_n: int) -> None:  # a stop request ends the re-read too
            self.stopper.check()

        if mode is VerifyMode.REREAD:
            report = verify_copy(storage, manifest, self.settings, progress=progress)
            ok, failures = report.ok, report.failures
        else:
            stored = check_stored(storage, manifest, progress=progress)
            ok, failures = stored.ok, [stored]
        if not ok:
            detail = "; ".join(f"{c.name}: {c.detail}" for c in failures if not c.ok) or "nothing could be checked"
            raise BackupFailed(f"{storage.name} copy of {manifest.artifact} failed verification: {detail}")
        logger.debug(f"Verified {storage.name} copy", extra=log.fields(mode=mode.value))


    def _discard(self, storage: Storage, manifest: Manifest, writer: ObjectWriter, committed: bool) -> None:
        """Remove what this run stored of an unfinished copy (interrupted before its manifest)."""
        if not committed:
            _abort_writer(writer, storage.name)
            return
        for key in (manifest.checksum_key, manifest.artifact):
            try:
                storage.delete(key)
            except SentinelError as exc:
                logger.warning(f"Could not remove {key} from {storage.name}: {exc.message}")


def _abort_writer(writer: ObjectWriter, name: str) -> None:
    try:
        writer.abort()
    except SentinelError as exc:
        logger.warning(f"Could not abort the upload to {name}: {exc.message}")


def _abort_quietly(fanout: FanOut, name: str) -> None:
    writer = next((lane.writer for lane in fanout.lanes if lane.name == name), None)
    if writer is not None:
        _abort_writer(writer, name)
