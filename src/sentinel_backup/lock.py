"""The run lock: at most one sentinel-backup run per folder, across processes.

A run holds an exclusive ``flock`` on ``<folder>/.sentinel-backup.lock`` (usually
BACKUP_DIR) for its whole duration. The kernel releases a flock when its process exits,
however it exits, so a crashed or killed run never blocks the next one. The pid and start
time written into the file are for humans (``cat`` it); the lock itself is the flock, never
the file's existence, so the file is left in place (deleting it while another process
waits on it would let two runs hold two different files).

The lock is re-entrant within one process: the scheduler takes it around a job, and the
job (a backup) may take it again without locking itself out. flock needs a local
filesystem; on NFS it may not exclude runs on other hosts.

Waiting (``wait=True``) with a ``stop`` (a ``Stopper``) polls the lock, so a stop request
(SIGTERM/SIGINT) ends the wait within a fraction of a second with Interrupted. Without
``stop`` the wait is a blocking flock that only the lock's release (or SIGKILL) ends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sentinel_backup.errors import BackupFailed
from sentinel_backup.interrupt import Stopper

LOCK_NAME = ".sentinel-backup.lock"
_PID = re.compile(r"^pid=(\d+)$", re.MULTILINE)
POLL_SECONDS = 0.1  # how often a stoppable wait retries the lock


@dataclass
class _Held:
    fd: int
    depth: int


_held: dict[Path, _Held] = {}  # lock files this process holds; re-entrancy only
_held_guard = threading.Lock()


@contextlib.contextmanager
def run_lock(folder: Path, *, wait: bool = False, stop: Stopper | None = None) -> Iterator[Path]:
    """Hold the run lock of ``folder`` for the ``with`` block; yields the lock file's path.

    If another process holds it: raise BackupFailed naming its pid, or with ``wait=True``
    wait until it is released (or, with ``stop``, until a stop is requested: Interrupted).
    The folder is created (mode 0700) when missing.
    """
    path = _lock_path(folder)
    with _held_guard:
        held = _held.get(path)
        if held is not None:
            held.depth += 1
    if held is None:
        held = _Held(_acquire(path, wait=wait, stop=stop), 1)
        with _held_guard:
            _held[path] = held
    try:
        yield path
    finally:
        with _held_guard:
            held.depth -= 1
            last = held.depth == 0
            if last:
                del _held[path]
        if last:
            _release(held.fd)


def holder_pid(folder: Path) -> int | None:
    """The pid written by the run that holds (or last held) the lock, if readable."""
    try:
        match = _PID.search(_lock_path(folder).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _lock_path(folder: Path) -> Path:
    return folder.resolve() / LOCK_NAME  # one key per real folder, for re-entrancy


def _acquire(path: Path, *, wait: bool, stop: Stopper | None = None) -> int:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BackupFailed(f"cannot open the run lock {path}: {exc.strerror}",
                           f"check that {path.parent} is writable by this user") from None
    try:
        if wait and stop is not None:
            _poll(fd, stop)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _busy(path) from None
        raise BackupFailed(f"cannot lock {path}: {exc.strerror}",
                           "use a folder on a local filesystem that supports flock") from None
    except BaseException:
        os.close(fd)
        raise
    _describe_holder(fd)
    return fd


def _poll(fd: int, stop: Stopper) -> None:
    """Take the flock, retrying while it is busy, until ``stop`` is requested (Interrupted)."""
    while True:
        stop.check("waiting for the run lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        time.sleep(POLL_SECONDS)


def _busy(path: Path) -> BackupFailed:
    pid = holder_pid(path.parent)
    who = f"pid {pid}" if pid is not None else "pid unknown"
    return BackupFailed(
        f"another sentinel-backup run ({who}) is in progress",
        f"wait for it to finish (its details are in {path}); the lock is released as soon as "
        "that process exits, so a crashed run never holds it",
    )


def _describe_holder(fd: int) -> None:
    """Write pid, host and start time into the lock file, for people and error messages."""
    text = f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted={datetime.now(UTC).isoformat()}\n"
    with contextlib.suppress(OSError):  # informational only: the flock is what excludes
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # no stale pid once nobody holds it
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
