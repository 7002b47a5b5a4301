"""Modes of the files and folders the tool creates: private unless the user says otherwise.

New files get ``0600 & ~umask`` and new folders ``0700 & ~umask`` (a stricter umask still
applies; a looser one never widens them). A file that already exists keeps its mode when it
is rewritten: a user who made METRICS_FILE readable for node_exporter keeps that choice.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def umask() -> int:
    """The process umask, read without changing it (Linux), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


def file_mode_for(path: Path) -> int:
    """The mode a (re)written ``path`` gets: the existing file's, else ``0600 & ~umask``."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return FILE_MODE & ~umask()


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700 (& ~umask); existing ones stay."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            folder.mkdir(mode=DIR_MODE)


def create_file(path: Path) -> None:
    """Create ``path`` (empty, mode 0600 & ~umask) unless it exists; its folder first."""
    make_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    os.close(fd)


def exposed(path: Path) -> str | None:
    """``"mode 755"`` when group or others may access the folder ``path``, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return f"mode {mode:o}" if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries durable (after a rename or a new file in it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
