"""wal-fetch's prefetch (WAL_FETCH_PREFETCH=N): the next N segments fetched at once.

PostgreSQL asks for one WAL file at a time and waits for each; against a remote store, a
round trip per segment is most of the recovery time. When a segment is fetched, the next N
of the same timeline are fetched in parallel into ``WAL_SPOOL_DIR/prefetch/<system id>/``,
each one written atomically (temporary name, fsync, rename) only after its plaintext SHA-256
matched its key, so the spool never holds an empty, partial or unchecked file. The next
``wal-fetch`` of a prefetched name moves it into place instead of downloading it. Files
older than the one asked for are removed (recovery has passed them, or followed another
timeline). A prefetch that fails is only logged: the segment is fetched again when asked for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup import log
from sentinel_backup.errors import SentinelError
from sentinel_backup.private import fsync_dir
from sentinel_backup.storage.base import Storage
from sentinel_backup.wal.segment import LONG_HEADER_SIZE, is_segment, parse_header, segment_name, segment_number

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

_log = log.get("wal")
FOLDER = "prefetch"


def prefetch_dir(settings: Settings, system_id: str) -> Path | None:
    if not settings.wal_fetch_prefetch or settings.wal_spool_dir is None:
        return None
    return settings.wal_spool_dir / FOLDER / system_id


def take(settings: Settings, system_id: str, name: str, dest: Path) -> bool:
    """Move a prefetched ``name`` to ``dest`` (atomically); False when it was not prefetched."""
    folder = prefetch_dir(settings, system_id)
    if folder is None:
        return False
    source = folder / name
    if not source.is_file():
        return False
    from sentinel_backup.wal.fetch import write_atomically

    try:
        os.rename(source, dest)  # the same file system: atomic, already fsynced
        with contextlib.suppress(OSError):
            fsync_dir(dest.parent)
    except OSError:
        write_atomically(dest, lambda tmp: _copy(source, tmp))
        source.unlink()
    _log.info("restored %s from the prefetch spool", name)
    return True


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())



def following(name: str, fetched: Path, count: int) -> list[str]:
    """The ``count`` segment names after ``name`` (same timeline), sized from the fetched file's header."""
    if not is_segment(name):
        return []
    with open(fetched, "rb") as file:
        head = file.read(LONG_HEADER_SIZE)
    try:
        size = parse_header(head, name).segment_size
    except SentinelError:
        return []
    timeline, number = segment_number(name, size)
    return [segment_name(timeline, number + i, size) for i in range(1, count + 1)]


def prefetch(settings: Settings, system_id: str, name: str, fetched: Path, destinations: list[Storage]) -> int:
    """After ``name`` was written to ``fetched``: fetch the next segments into the spool; how many."""
    folder = prefetch_dir(settings, system_id)
    if folder is None:
        return 0
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for old in folder.iterdir():  # passed by recovery, or of a timeline it left; temporary leftovers too
        if old.name <= name or old.name.startswith("."):
            with contextlib.suppress(OSError):
                old.unlink()
    wanted = [n for n in following(name, fetched, settings.wal_fetch_prefetch) if not (folder / n).exists()]
    if not wanted:
        return 0
    from sentinel_backup.wal.fetch import NotInArchive, fetch

    def one(next_name: str) -> bool:
        try:
            fetch(settings, next_name, folder / next_name, system_id, destinations, quiet=True)
            return True
        except NotInArchive:
            return False  # the end of the archive (for now)
        except SentinelError as exc:
            _log.warning("prefetch of %s failed (it is fetched again when asked for): %s", next_name, exc.message)
            return False

    with ThreadPoolExecutor(max_workers=min(len(wanted), 8), thread_name_prefix="prefetch") as pool:
        done = sum(pool.map(one, wanted))
    return done
