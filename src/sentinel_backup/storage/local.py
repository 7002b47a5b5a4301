"""The local destination: a folder (BACKUP_DIR), mode 0700, files 0600.

Every object is written as ``.<key>.partial``, fsynced, then renamed: a reader never
sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError, NotFound, StorageError
from .base import ObjectInfo, put_via_writer

PARTIAL_SUFFIX = ".partial"


def _check_key(key: str) -> None:
    if not key or "/" in key or key.startswith(".") or "\0" in key:
        raise StorageError(f"invalid object name {key!r}", "this is a bug in sentinel-backup; please report it")


class LocalWriter:
    """Writes ``.<key>.partial``; commit renames it. An artifact never replaces an existing
    file (a backup is never overwritten); sidecars (drill records) may be replaced."""

    def __init__(self, folder: Path, key: str, *, replace: bool = True) -> None:
        self.replace = replace
        self.final = folder / key
        self.temp = folder / f".{key}{PARTIAL_SUFFIX}"
        fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.file: BinaryIO | None = os.fdopen(fd, "wb", buffering=0)
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self.file is not None, "write after commit/abort"
        view = memoryview(data)
        try:
            while view:  # an unbuffered write may be short (a full disk): write the rest, or get its error
                view = view[self.file.write(view):]
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                self.abort()  # remove the partial file now: the free space reported is then the real one
                raise no_space(self.final.parent, exc) from None
            raise StorageError(f"local: cannot write {self.temp}: {exc.strerror}",
                               "check BACKUP_DIR (permissions, file system errors)") from None
        self.size += len(data)

    def commit(self) -> ObjectInfo:
        assert self.file is not None, "commit after commit/abort"
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None
            if self.replace:
                os.replace(self.temp, self.final)
            else:
                os.link(self.temp, self.final)  # fails if the name exists: no-clobber, still atomic
                self.temp.unlink()
            _fsync_dir(self.final.parent)
        except FileExistsError:
            self.abort()
            raise StorageError(f"local: {self.final} already exists; a backup is never overwritten",
                               "run the backup again") from None
        except OSError as exc:
            self.abort()
            if exc.errno in _NO_SPACE:
                raise no_space(self.final.parent, exc) from None
            raise StorageError(f"local: cannot store {self.final}: {exc.strerror}",
                               "check free space and permissions of BACKUP_DIR") from None
        return ObjectInfo(self.final.name, self.size, datetime.now(UTC))

    def abort(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space(folder: Path, exc: OSError) -> StorageError:
    """ENOSPC / EDQUOT as what it is, with the free space left once the partial file is gone
    (a short write is never taken for a smaller backup)."""
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    try:
        stats = os.statvfs(folder)
        free = f"{stats.f_bavail * stats.f_frsize} bytes free"
    except OSError:
        free = "free space unknown"
    return StorageError(f"local: {what} (BACKUP_DIR {folder}, {free})",
                        "free space in BACKUP_DIR (or raise the quota), or set BACKUP_DIR to a larger file system;"
                        " the partial file was removed and nothing was committed")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """Storage protocol over one flat folder."""

    name = "local"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return str(self.folder)

    def prepare(self) -> None:
        """Create the folder (0700) and prove it is writable; ConfigError otherwise."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.folder / f".sentinel-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"BACKUP_DIR {self.folder} is not writable: {exc.strerror}",
                              f"create it and give this user write access (e.g. chown $USER {self.folder}),"
                              " or set BACKUP_DIR to a writable folder") from None

    def open_writer(self, key: str, *, artifact: bool = True) -> LocalWriter:
        _check_key(key)
        try:
            return LocalWriter(self.folder, key, replace=not artifact)
        except OSError as exc:
            raise StorageError(f"local: cannot create a file in {self.folder}: {exc.strerror}",
                               "check that BACKUP_DIR exists and is writable") from None

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return put_via_writer(self, key, data)

    def open_reader(self, key: str) -> BinaryIO:
        _check_key(key)
        try:
            return open(self.folder / key, "rb")
        except FileNotFoundError:
            raise NotFound(f"local: {self.folder / key} does not exist", "run `sentinel-backup list`") from None
        except OSError as exc:
            raise StorageError(f"local: cannot read {self.folder / key}: {exc.strerror}",
                               "check permissions of BACKUP_DIR") from None

    def read_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as reader:
            return reader.read()

    def stat(self, key: str) -> ObjectInfo | None:
        _check_key(key)
        try:
            info = (self.folder / key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.startswith(prefix) or not entry.is_file():
                continue
            info = entry.stat()
            yield ObjectInfo(entry.name, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def list_partials(self) -> Iterator[ObjectInfo]:
        """Temporary files left by a crashed run (for retention's leftover cleanup)."""
        for entry in os.scandir(self.folder):
            if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX) and entry.is_file():
                info = entry.stat()
                yield ObjectInfo(entry.name, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / key).unlink()
