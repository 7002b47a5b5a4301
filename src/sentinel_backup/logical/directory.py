"""BACKUP_FORMAT=directory: ``pg_dump -Fd -j N`` as a producer of one tar stream, and its restore.

How the folder's files travel: ``pg_dump -Fd -j PG_DUMP_JOBS --snapshot S -f <temp>/dump``
writes the folder (``toc.dat`` and one file per table, compressed by pg_dump itself) into a
private temporary folder under TEMP_DIR (default BACKUP_DIR); only when pg_dump succeeded is
the folder read as one tar stream (:class:`~sentinel_backup.streams.tar.TarReader`) into the
write pipeline, once, to every destination (SHA-256, encryption, fan-out; stream compression
none, like custom format). The in-stream check proves the archive complete (end-of-archive
and ``toc.dat``). The temporary folder costs about the size of the compressed dump and is
removed on every path: after the stream, on failure, and on a stop request.

A restore decodes the stored tar into a private temporary folder (its SHA-256 checked against
the manifest before anything uses it), then runs ``pg_restore -Fd -j N`` on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, cast

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, SourceError
from sentinel_backup.interrupt import process_alive, stop_children
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.pg.child import finish_tool
from sentinel_backup.pg.source import Source, StderrCollector, conninfo, source_error
from sentinel_backup.pipeline.producer import RawObserver
from sentinel_backup.pipeline.read import decode_into
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.tar import TarCheck, TarExtractor, TarReader

logger = log.get("backup")
DUMP_PREFIX = ".sentinel-dump-"
RESTORE_PREFIX = ".sentinel-restore-"


def temp_variable(settings: Settings) -> str:
    """The setting that names where temporary folders go."""
    return "TEMP_DIR" if settings.temp_dir else "BACKUP_DIR"


def temp_root(settings: Settings) -> Path:
    """TEMP_DIR, else BACKUP_DIR (created when missing, mode 0700)."""
    root = settings.temp_dir or settings.backup_dir
    variable = temp_variable(settings)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot create {root} for the directory-format dump: {exc.strerror}",
                          "create it, or set TEMP_DIR to a folder with room for the compressed dump") from None
    return root


def private_folder(root: Path, prefix: str) -> Path:
    """A new folder (0700) named ``<prefix><pid>-<random>`` in ``root``; folders of that prefix left
    by a process that no longer exists (killed with SIGKILL, say) are removed first."""
    for entry in os.scandir(root):
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
            pid = entry.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                logger.warning(f"Removing {entry.path}, left by process {pid} that no longer runs")
                shutil.rmtree(entry.path, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
    except OSError as exc:
        raise ConfigError(f"cannot create a temporary folder in {root}: {exc.strerror}",
                          "set TEMP_DIR to a writable folder with room for the compressed dump") from None



class DirectoryDumpProducer:
    """A Producer: ``pg_dump -Fd -j N`` into a private folder, then the folder as one tar stream."""

    tool = "pg_dump"

    def __init__(self, source: Source, args: list[str], *, root: Path, label: str,
                 variable: str = "TEMP_DIR") -> None:
        self.source = source
        self.args = args  # pg_dump's arguments without -f
        self.root = root
        self.variable = variable  # the setting naming ``root``, for messages
        self.label = label
        self.folder: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: TarReader | None = None
        self.stopped = False

    def start(self) -> IO[bytes]:
        self.folder = private_folder(self.root, DUMP_PREFIX)
        target = self.folder / "dump"
        argv = self.source.command("pg_dump", *self.args, "-f", str(target))
        logger.debug("Running " + " ".join(argv))
        try:
            self.proc = self.source.spawn(argv, stdout=subprocess.DEVNULL)
            errors = StderrCollector(self.proc)
            code = self.proc.wait()
            errors.join()
            text = errors.text()
            if code != 0:
                raise self._failure(text, code)
            if self.stopped:
                raise SourceError("pg_dump was stopped")
            if text.strip():
                logger.warning(f"pg_dump said: {text.strip()}")
            self.reader = TarReader(target)
        except BaseException:
            self._remove()
            raise
        size = sum(entry.stat().st_size for entry in os.scandir(target))
        logger.info(f"{self.label} wrote {len(self.reader.names)} files ({size} bytes); streaming them as one tar",
                    extra=log.fields(files=len(self.reader.names), bytes=size))
        return cast(IO[bytes], self.reader)

    def finish(self) -> None:
        try:
            if self.stopped:
                raise SourceError("pg_dump was stopped")
        finally:
            self._remove()

    def stop(self) -> None:
        self.stopped = True
        if self.reader is not None:
            self.reader.stop()
        if self.proc is not None:
            stop_children([self.proc])  # SIGINT first: pg_dump ends its workers and their queries
            self.proc.wait()
        self._remove()

    def observer(self) -> RawObserver | None:
        return TarCheck(("toc.dat",))

    def _failure(self, text: str, code: int) -> SourceError:
        error = source_error("pg_dump", text, code)
        if "no space left on device" not in text.lower():
            return error
        free = shutil.disk_usage(self.root).free
        return SourceError(f"{error.message} (the temporary folder in {self.variable} {self.root}, {free} bytes free)",
                           f"the directory format first writes the whole compressed dump there: free space in"
                           f" {self.root}, or set TEMP_DIR to a folder with room for it")

    def _remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def restore_directory(source: Source, settings: Settings, manifest: Manifest, storage: Storage, database: str,
                      jobs: int, progress: Callable[[int], None] | None = None, *,
                      selection: Sequence[str] = ()) -> None:
    """Extract the stored tar into a private folder, then ``pg_restore -Fd -j jobs`` from it
    (``selection``: pg_restore's -n/-t arguments of a selective restore)."""
    if settings.postgres_container:
        raise ConfigError(f"{manifest.id} is a directory-format backup: pg_restore must read its folder on this host,"
                          " not in a container", "restore it with a direct connection (unset POSTGRES_CONTAINER or"
                          " DRILL_CONTAINER, set POSTGRES_HOST/POSTGRES_PORT) and matching client tools")
    with extracted(manifest, storage, settings, progress) as folder:
        proc = source.popen("pg_restore", "--exit-on-error", "-F", "d", "-j", str(max(jobs, 1)), *selection,
                            "-d", conninfo(database), str(folder), stdout=subprocess.DEVNULL)
        finish_tool(proc, "pg_restore")


@contextlib.contextmanager
def extracted(manifest: Manifest, storage: Storage, settings: Settings,
              progress: Callable[[int], None] | None = None) -> Iterator[Path]:
    """The backup's folder, decoded and extracted into a private temporary folder (removed on the
    way out); the stored SHA-256 matched the manifest before it is handed out."""
    holder = private_folder(temp_root(settings), RESTORE_PREFIX)
    try:
        folder = holder / "dump"
        folder.mkdir(mode=0o700)
        decode_into(storage, manifest, settings, TarExtractor(folder), progress=progress, check_raw=True)
        yield folder
    finally:
        shutil.rmtree(holder, ignore_errors=True)
