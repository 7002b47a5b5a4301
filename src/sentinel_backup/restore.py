"""Restore a backup into a database, and restore drills.

Safety rules:
- the stored SHA-256 is checked in a first pass, before any decrypted byte is used;
- the data is restored into a scratch database first; only when that succeeded and the
  table row counts match the manifest is the scratch database renamed to the target
  (with ``--clean``, the old target is dropped at that moment, not before);
- a failure drops the scratch database and leaves the target as it was;
- nothing but the target (and the scratch database) is ever touched.
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

from . import log
from .catalog import Entry
from .config import Settings
from .errors import ConfigError, NotFound, RestoreFailed, SentinelError, VerifyFailed
from .manifest import Manifest
from .source import PSQL_FLAGS, Source, StderrCollector, conninfo, source_error
from .storage.base import Storage
from .storage.local import LocalStorage
from .streams.base import FileSink, NullSink, pump
from .streams.digest import Digest
from .verify import decode_chain, prove_legacy, reading_cipher

logger = log.get("restore")
V = TypeVar("V")
Progress = Callable[[int], None]
SCRATCH_SUFFIX = "__sentinel_restore"


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
    def __init__(self, settings: Settings, *, progress: Progress | None = None) -> None:
        self.settings = settings
        self.source = Source(settings)
        self.progress = progress

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
    def scratch_database(self, name: str) -> Iterator[str]:
        """Create ``name``; drop it on the way out unless it was renamed away."""
        if self.database_exists(name):
            raise RestoreFailed(f"scratch database {name} already exists (left by an interrupted restore?)",
                                f"check it is not needed, then: DROP DATABASE {quote_ident(name)}")
        self.execute(f"CREATE DATABASE {quote_ident(name)}")
        try:
            yield name
        finally:
            if self.database_exists(name):
                try:
                    self.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
                except SentinelError as exc:
                    logger.error(f"Could not drop scratch database {name}: {exc.message}")

    # --- the restore ------------------------------------------------------------------
    def restore(self, entry: Entry, storage: Storage, target: str, *, create: bool = False, clean: bool = False,
                jobs: int = 1) -> RestoreResult:
        manifest = entry.manifest
        if manifest.kind == "globals":
            raise ConfigError(f"{manifest.id} holds roles and tablespaces, not a database",
                              f"apply it with: gunzip -c {manifest.artifact} | psql -d postgres"
                              " (errors for roles that already exist are expected)")
        if not target or target.endswith(SCRATCH_SUFFIX):
            raise ConfigError("--target-db names no usable database", "give --target-db NAME")
        exists = self.database_exists(target)
        if exists and not clean:
            raise ConfigError(f"database {target} already exists",
                              "pass --clean to replace it (it is dropped only after the restore succeeded), "
                              "or choose another --target-db")
        if not exists and not create:
            raise ConfigError(f"database {target} does not exist", "pass --create to create it")
        if entry.legacy:  # no manifest: prove the file in full first, and pin the SHA-256 it was read with
            entry = replace(entry, manifest=prove_legacy(storage, manifest, self.settings))
        else:
            self.check_stored(storage, manifest)
        scratch = (target[: 63 - len(SCRATCH_SUFFIX)] + SCRATCH_SUFFIX)
        t0 = time.monotonic()
        with self.scratch_database(scratch):
            result = self.restore_into(entry, storage, scratch, jobs=jobs)
            if result.differences:
                raise RestoreFailed(f"restored row counts differ from the manifest: {format_differences(result)}",
                                    f"the target {target} was left unchanged")
            if exists:
                logger.info(f"Dropping the old {target} (--clean)")
                self.execute(f"DROP DATABASE {quote_ident(target)}")
            self.execute(f"ALTER DATABASE {quote_ident(scratch)} RENAME TO {quote_ident(target)}")
        result.target = target
        result.seconds = round(time.monotonic() - t0, 3)
        return result

    def check_stored(self, storage: Storage, manifest: Manifest) -> None:
        """First pass: the stored bytes must match the manifest before anything uses them."""
        digest = Digest(NullSink())
        with storage.open_reader(manifest.artifact) as reader:
            pump(reader, digest)
        if digest.sha256 != manifest.sha256 or digest.size != manifest.size_bytes:
            raise VerifyFailed(f"{storage.name}:{manifest.artifact} does not match its manifest (sha256 or size)",
                               "the copy is damaged or was altered: restore another copy or another backup")

    def restore_into(self, entry: Entry, storage: Storage, database: str, *, jobs: int = 1) -> RestoreResult:
        """Stream the backup into an existing empty database and count its rows."""
        manifest = entry.manifest
        cipher = reading_cipher(manifest, self.settings)
        if cipher is not None and not cipher.can_decrypt:
            raise ConfigError(f"{manifest.id} is encrypted with age", "set AGE_IDENTITY_FILE to the identity file")
        t0 = time.monotonic()
        logger.info(f"Restoring {manifest.id} into {database}", extra=log.fields(
            backup=manifest.id, format=manifest.format, source=storage.name))
        if manifest.format == "custom" and jobs > 1 and not self.settings.postgres_container:
            self._restore_parallel(manifest, storage, database, jobs)
        else:
            if manifest.format == "custom" and jobs > 1:
                logger.warning("--jobs needs a file on this host; in container mode the restore runs with one job")
            args = ([*PSQL_FLAGS, "--single-transaction", "-d", conninfo(database)] if manifest.format == "plain"
                    else ["--single-transaction", "--exit-on-error", "-d", conninfo(database)])
            self._stream_into(manifest, storage, "psql" if manifest.format == "plain" else "pg_restore", args)
        actual = self.row_counts(database)
        return RestoreResult(manifest.id, database, round(time.monotonic() - t0, 3), manifest.tables, actual,
                             compare_counts(manifest.tables, actual))

    def _stream_into(self, manifest: Manifest, storage: Storage, tool: str, args: list[str]) -> None:
        """storage -> hash -> decrypt -> decompress -> the tool's stdin; commit only if the hash held."""
        proc = self.source.popen(tool, *args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        errors = StderrCollector(proc)
        assert proc.stdin is not None
        decoder = decode_chain(manifest, reading_cipher(manifest, self.settings), _Feed(proc.stdin))
        try:
            with storage.open_reader(manifest.artifact) as reader:
                decoder.feed(reader, self.progress)
            if decoder.stored.sha256 != manifest.sha256:
                raise VerifyFailed(f"{manifest.artifact} changed while it was read", "restore it again")
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

    def _restore_parallel(self, manifest: Manifest, storage: Storage, database: str, jobs: int) -> None:
        """pg_restore -j needs a seekable file: the artifact itself when local and unencrypted."""
        with self._archive_file(manifest, storage) as path:
            proc = self.source.popen("pg_restore", "--exit-on-error", "-j", str(jobs), "-d", conninfo(database),
                                     str(path), stdout=subprocess.DEVNULL)
            errors = StderrCollector(proc)
            code = proc.wait()
            errors.join()
            if code != 0:
                raise source_error("pg_restore", errors.text(), code)

    @contextlib.contextmanager
    def _archive_file(self, manifest: Manifest, storage: Storage) -> Iterator[Path]:
        if isinstance(storage, LocalStorage) and manifest.encryption is None:
            yield storage.folder / manifest.artifact
            return
        fd, name = tempfile.mkstemp(prefix=".sentinel-restore-", suffix=".dump", dir=os.environ.get("TMPDIR"))
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                decoder = decode_chain(manifest, reading_cipher(manifest, self.settings), FileSink(out))
                with storage.open_reader(manifest.artifact) as reader:
                    decoder.feed(reader, self.progress)
            if decoder.stored.sha256 != manifest.sha256:
                raise VerifyFailed(f"{manifest.artifact} changed while it was read", "restore it again")
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
