"""The local destination: a folder (BACKUP_DIR), mode 0700, files 0600.

Every object is written as ``.<name>.partial`` in its folder, fsynced, then renamed: a
reader never sees a half-written file under its final name. A key's folders
(``wal/<...>/``) are created on the first write into them (0700, fsynced).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sentinel_backup.errors import ConfigError, NotFound, StorageError
from sentinel_backup.private import fsync_dir
from sentinel_backup.storage.base import Capabilities, ObjectInfo, check_key, put_via_writer, split_prefix

PARTIAL_SUFFIX = ".partial"


class LocalWriter:
    """Writes ``.<key>.partial``; commit renames it. An artifact never replaces an existing
    file (a backup is never overwritten); sidecars (drill records) may be replaced."""

    verified_by_store = False

    def __init__(self, folder: Path, key: str, *, replace: bool = True) -> None:
        self.replace = replace
        self.key = key
        self.final = folder / key
        self.temp = self.final.parent / f".{self.final.name}{PARTIAL_SUFFIX}"
        _make_folders(folder, self.final.parent)
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
            fsync_dir(self.final.parent)
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
        return ObjectInfo(self.key, self.size, datetime.now(UTC))

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


def _make_folders(root: Path, folder: Path) -> None:
    """Create ``folder`` below ``root`` (0700), each new level fsynced into its parent."""
    missing = []
    while folder != root and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        fsync_dir(path.parent)



class LocalStorage:
    """Storage protocol over one folder (BACKUP_DIR) and the folders below it."""

    name = "local"
    capabilities = Capabilities(partial_files=True, local_files=True)

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
        check_key(key)
        try:
            return LocalWriter(self.folder, key, replace=not artifact)
        except OSError as exc:
            raise StorageError(f"local: cannot create a file in {self.folder}: {exc.strerror}",
                               "check that BACKUP_DIR exists and is writable") from None

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return put_via_writer(self, key, data)

    def open_reader(self, key: str) -> BinaryIO:
        check_key(key)
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
        check_key(key)
        try:
            info = (self.folder / key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None  # a folder is no object
        return ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        folder, start = split_prefix(prefix)
        for key, entry in self._walk(folder, deep=deep):
            if key[len(folder):].startswith(start) and not entry.name.startswith("."):
                info = entry.stat()
                yield ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def list_partials(self) -> Iterator[ObjectInfo]:
        """Temporary files left by a crashed run, in every folder (for retention's leftover
        cleanup); their keys are the temporary names."""
        for key, entry in self._walk("", deep=True, hidden=True):
            if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX):
                info = entry.stat()
                yield ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def _walk(self, folder: str, *, deep: bool, hidden: bool = False) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(key, entry) of every file in ``folder`` (and below it with ``deep``)."""
        try:
            entries = list(os.scandir(self.folder / folder)) if folder else list(os.scandir(self.folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if deep and not entry.name.startswith("."):
                    yield from self._walk(f"{folder}{entry.name}/", deep=True, hidden=hidden)
            elif entry.is_file() and (hidden or not entry.name.startswith(".")):
                yield folder + entry.name, entry

    def is_locked(self, key: str) -> bool:
        return False  # a local file has no object lock

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        return 0  # partial files are leftovers retention removes (list_partials)

    def locate(self, key: str) -> dict[str, str]:
        return {"path": key}

    def local_path(self, key: str) -> Path | None:
        return self.folder / check_key(key)

    def delete(self, key: str) -> None:
        check_key(key, temporary=True)  # retention deletes the partial files a crashed run left
        with contextlib.suppress(FileNotFoundError):
            (self.folder / key).unlink()
