"""Restore a logical backup into a database (through a scratch database and a swap); drills
(``logical.drill``) restore through it too.

Safety rules:
- the stored SHA-256 is checked in a first pass, before any decrypted byte is used;
- the data is restored into a scratch database ``<target>__sentinel_restore`` first;
- only when that succeeded and the table row counts match the manifest comes the swap
  (``logical.scratch``: one transaction renames the old target to ``<target>__sentinel_old``
  and the scratch database to ``<target>``; only then is the old one dropped);
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
from typing import TypeVar

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import (
    ConfigError,
    NotFound,
    RestoreFailed,
    SentinelError,
    SourceError,
)
from sentinel_backup.interrupt import StopSignals
from sentinel_backup.logical.directory import restore_directory
from sentinel_backup.logical.scratch import (
    MAX_NAME_BYTES,
    OLD_SUFFIX,
    SCRATCH_SUFFIX,
    ScratchDatabases,
    derived_name,
    quote_ident,
)
from sentinel_backup.logical.selective import RestoreSelection, check_selection, require_archive
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.pg.child import finish_tool
from sentinel_backup.pg.source import PSQL_FLAGS, conninfo
from sentinel_backup.pipeline.read import decode_into, decode_to_child, decrypting_cipher, require_stored
from sentinel_backup.pipeline.verify import prove_legacy
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.base import FileSink

logger = log.get("restore")
V = TypeVar("V")
Progress = Callable[[int], None]


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


class Restorer(ScratchDatabases):
    def __init__(self, settings: Settings, *, progress: Progress | None = None,
                 stop: StopSignals | None = None) -> None:
        super().__init__(settings, stop=stop)
        self.progress = progress

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
        decrypting_cipher(manifest, self.settings)  # exit 2 before anything runs when it cannot be decrypted
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
        decode_to_child(proc, tool, storage, manifest, self.settings, progress=self.progress)

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
