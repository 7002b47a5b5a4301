"""Asynchronous wal-push: a durable local spool and the shipper that empties it.

With WAL_PUSH_ASYNC=true, ``wal-push`` copies the WAL file into
``WAL_SPOOL_DIR/push/<system id>/<name>`` (temporary name, fsync of the file, rename, fsync
of the folder) and returns 0: the file is durable on the spool's disk, so PostgreSQL may
recycle it. That disk must not be the one pg_wal is on, or losing that disk loses both.

The shipper (``wal-ship``) pushes spooled files in name order (timeline, then position),
two at a time, through the synchronous path to every destination, and removes each one, in
name order, only once it is durable everywhere. ``wal-push`` starts a shipper when none runs (a flock on
``WAL_SPOOL_DIR/shipper.lock`` tells); one that finds the lock taken exits at once. A
shipper exits when the spool is empty; after releasing its lock it looks once more, so a
file spooled while it was finishing is never left behind. A failing destination is
retried with a growing pause (5 s to 1 min) as long as files wait; ``check`` reports the
backlog and its age.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, BinaryIO

from sentinel_backup import log
from sentinel_backup.errors import ConfigError, SentinelError
from sentinel_backup.model.layout import is_wal_name
from sentinel_backup.private import fsync_dir
from sentinel_backup.streams.base import CHUNK, NullSink
from sentinel_backup.wal.archive import WalConflict
from sentinel_backup.wal.push import opened

if TYPE_CHECKING:  # asynchronous wal-push spools without the settings schema (see wal.fastpath)
    from sentinel_backup.config import Settings

_log = log.get("wal")
PUSH_FOLDER = "push"
LOCK_NAME = "shipper.lock"
FIRST_PAUSE, LONGEST_PAUSE = 5.0, 60.0
AT_ONCE = 2  # files shipped side by side (bounded: two compressions and uploads in flight)


def spool_root(settings: Settings) -> Path:
    if settings.wal_spool_dir is None:
        raise ConfigError("WAL_SPOOL_DIR is not set", "set WAL_SPOOL_DIR to a local folder on another disk than pg_wal")
    return settings.wal_spool_dir


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"WAL_SPOOL_DIR: cannot create {path}: {exc.strerror}",
                          "create it and give the PostgreSQL user write access") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Durable:
    """A sink into the spool's temporary file; close() makes it durable (flush, fsync), the
    ``with`` block that opened the file closes it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())


def _fsync(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def spool_push(root: Path, path: Path, *, system_id: str | None = None, env_file: str | None = None) -> Path:
    """Copy ``path`` durably into the spool ``root`` (WAL_SPOOL_DIR), re-read the durable copy
    and compare its SHA-256 with what was written, then make sure a shipper runs. The spooled path."""
    with opened(path, system_id=system_id) as source:
        folder = root / PUSH_FOLDER / source.system_id
        _make_dir(folder)
        target = folder / source.name
        if target.exists():
            if _sha256(target) != source.hashed_into(NullSink()).sha256:
                raise WalConflict(f"{source.name} is already spooled in {folder} with different content",
                                  "two clusters share WAL_SPOOL_DIR, or pg_wal is damaged: investigate before"
                                  " archiving goes on")
            _fsync(target)  # a retry after a crash between the rename and the folder's fsync
            fsync_dir(folder)
        else:
            temp = folder / f".{source.name}.spooling"
            try:
                with open(temp, "wb") as out:  # read and written by the tool, never a file system's copy offload
                    written = source.hashed_into(_Durable(out)).sha256
                if _sha256(temp) != written:  # acknowledged only once the durable copy reads back the same
                    raise SentinelError(f"the spooled copy of {source.name} in {folder} does not read back as"
                                        " written", "check WAL_SPOOL_DIR's file system and disk; PostgreSQL retries")
                os.replace(temp, target)
                fsync_dir(folder)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    temp.unlink()
                if isinstance(exc, OSError):
                    raise SentinelError(f"cannot spool {source.name} in {folder}: {exc.strerror}",
                                        "check free space and permissions of WAL_SPOOL_DIR; PostgreSQL retries") \
                        from None
                raise
            _log.info("spooled %s for shipping", source.name)
    ensure_shipper(root, env_file)
    return target


@contextlib.contextmanager
def _lock(root: Path, *, wait: bool) -> Iterator[bool]:
    """The shipper lock; yields whether it was taken."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def ensure_shipper(root: Path, env_file: str | None) -> bool:
    """Start a detached shipper unless one runs; True when one was started."""
    with _lock(root, wait=False) as free:
        if not free:
            return False
    argv = [sys.executable, "-m", "sentinel_backup", *(["--env-file", env_file] if env_file else []), "wal-ship"]
    with open(root / "shipper.log", "ab") as out:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                         close_fds=True)
    return True


@dataclass(frozen=True)
class Spooled:
    path: Path
    system_id: str
    name: str


def pending(root: Path) -> list[Spooled]:
    """Spooled files in shipping order."""
    base = root / PUSH_FOLDER
    found: list[Spooled] = []
    with contextlib.suppress(FileNotFoundError):
        for folder in sorted(base.iterdir()):
            if folder.is_dir():
                found += [Spooled(p, folder.name, p.name) for p in sorted(folder.iterdir())
                          if p.is_file() and is_wal_name(p.name)]
    return sorted(found, key=lambda s: (s.system_id, s.name))


class Shipper:
    """Empties the spool (``run``); SIGTERM/SIGINT stop it between two files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = spool_root(settings)
        self._stop = threading.Event()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def run(self, *, wait: bool = False) -> int:
        """Ship until the spool is empty (``wait``: until stopped); the number of files shipped."""
        _make_dir(self.root)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        shipped = 0
        try:
            while not self._stop.is_set():
                with _lock(self.root, wait=wait) as mine:
                    if not mine:
                        return shipped  # another shipper runs
                    shipped += self._ship_all()
                if not pending(self.root) and not wait:
                    return shipped  # looked again after releasing the lock: nothing was added meanwhile
                if wait:
                    self._stop.wait(1.0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return shipped

    def _ship_all(self) -> int:
        """Ship the oldest ``AT_ONCE`` files side by side (compression and uploads overlap), then
        remove them from the spool in name order, each only once every destination holds it; the
        first failure keeps it and every later one (a later one already stored is found there,
        by its hash, on the next try)."""
        from concurrent.futures import ThreadPoolExecutor

        from sentinel_backup.storage.registry import build_destinations
        from sentinel_backup.wal.push import push_file

        destinations = build_destinations(self.settings)
        shipped = 0
        pause = FIRST_PAUSE

        def ship(item: Spooled) -> SentinelError | None:
            try:
                push_file(self.settings, item.path, system_id=item.system_id, destinations=destinations)
            except SentinelError as exc:
                return exc
            return None

        with ThreadPoolExecutor(AT_ONCE, thread_name_prefix="wal-ship") as pool:
            while not self._stop.is_set():
                batch = pending(self.root)[:AT_ONCE]
                if not batch:
                    return shipped
                for item, failure in zip(batch, list(pool.map(ship, batch)), strict=True):
                    if failure is not None:
                        _log.error("wal-ship: %s stays in the spool: %s; retrying in %.0f s", item.name,
                                   failure.message, pause)
                        self._stop.wait(pause)
                        pause = min(pause * 2, LONGEST_PAUSE)
                        break
                    pause = FIRST_PAUSE
                    item.path.unlink()
                    fsync_dir(item.path.parent)
                    shipped += 1
        return shipped
