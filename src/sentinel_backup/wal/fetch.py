"""wal-fetch: one WAL file from the archive to where PostgreSQL wants it (``restore_command``).

Exit codes are what PostgreSQL reads from ``restore_command``:

- 0: DEST holds the file, whole, its plaintext SHA-256 checked against the key;
- 1: the name is not in the archive (PostgreSQL asks for files that do not exist, the next
  timeline's ``.history`` for one, and takes this as the end of the archive);
- EXIT_FATAL (>= 126): anything else (wrong key, corrupt object, unreachable store, bad
  configuration). PostgreSQL stops recovery instead of ending it early at the wrong point.

"Not in the archive" is said only when every destination asked answered its listing; a
destination that cannot be listed makes an absent name a fatal failure, since the file may
be there. A copy that does not decode is skipped for the next destination's copy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup import log
from sentinel_backup.errors import SentinelError, VerifyFailed
from sentinel_backup.model.layout import Handle, is_wal_name
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.base import CHUNK, Sink
from sentinel_backup.wal.archive import encoding_of, stored_copies

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

_log = log.get("wal")

EXIT_NOT_FOUND = 1
EXIT_FATAL = 200  # > 125: PostgreSQL treats it as fatal ("child process exited with exit code 200")


class NotInArchive(SentinelError):
    """The WAL file is not in the archive: the normal end of recovery."""

    exit_code = EXIT_NOT_FOUND


class FetchFailed(SentinelError):
    """wal-fetch failed for a reason that is not "absent": recovery must stop."""

    exit_code = EXIT_FATAL


class _FileSink:
    def __init__(self, file: object) -> None:
        self.file = file

    def write(self, data: bytes) -> None:
        self.file.write(data)  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


def _decode_into(settings: Settings, storage: Storage, key: str, handle: Handle, target: Path) -> None:
    """Read, decrypt, decompress and hash one stored copy into ``target`` (fsynced)."""
    from sentinel_backup.streams.compress import decompressor
    from sentinel_backup.streams.digest import Digest

    encoding = encoding_of(handle.extension)
    with open(target, "wb") as out:
        digest = Digest(_FileSink(out))
        sink: Sink = decompressor(encoding.compression, digest)
        if encoding.cipher is not None:
            from sentinel_backup.keys import cipher_for_manifest

            sink = cipher_for_manifest(encoding.cipher, "", settings).decryptor(sink)
        try:
            with storage.open_reader(key) as reader:
                while chunk := reader.read(CHUNK):
                    sink.write(chunk)
            sink.close()
        except VerifyFailed as exc:
            if encoding.cipher is None:
                raise
            variable = "ENCRYPTION_KEY_PATH" if encoding.cipher == "aes-256-cbc" else "AGE_IDENTITY_FILE"
            raise VerifyFailed(f"{key} does not decode ({exc.message}): wrong key ({variable}) or a damaged copy",
                               exc.hint) from None
        out.flush()
        os.fsync(out.fileno())
    if digest.sha256 != handle.sha256:
        raise VerifyFailed(f"{storage.name}: {key} decodes to content with SHA-256 {digest.sha256}, not the one"
                           " its name records", "the stored copy is damaged")


def fetch(settings: Settings, name: str, dest: Path, system_id: str, destinations: list[Storage], *,
          quiet: bool = False) -> str:
    """Write ``name`` to ``dest`` atomically; returns the destination it came from."""
    if not is_wal_name(name):
        raise FetchFailed(f"{name!r} is not a WAL file name", "restore_command must be: ... wal-fetch %f %p")
    errors: list[str] = []
    seen = False
    for storage in destinations:
        try:
            copies = stored_copies(storage, system_id, name)
        except SentinelError as exc:
            errors.append(f"{storage.name}: {exc.message}")
            continue
        for handle, key in copies:
            seen = True
            try:
                write_atomically(dest, functools.partial(_decode_into, settings, storage, key, handle))
            except SentinelError as exc:
                errors.append(f"{storage.name}: {exc.message}")
                _log.warning("wal-fetch %s: the copy on %s is unusable: %s", name, storage.name, exc.message)
                continue
            if not quiet:
                _log.info("restored %s from %s", name, storage.name)
            return storage.name
    if not seen and not errors:
        raise NotInArchive(f"{name} is not in the archive of system identifier {system_id}",
                           "the end of the archive (PostgreSQL asks for files that may not exist)")
    raise FetchFailed(f"cannot restore {name}: " + "; ".join(errors),
                      "recovery stops here instead of ending early at the wrong point: fix the destination or"
                      " the key (ENCRYPTION_KEY_PATH / AGE_IDENTITY_FILE), then start the server again")


def write_atomically(dest: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` writes (and fsyncs) a temporary file beside ``dest``, which is then renamed to
    ``dest``; on any failure the temporary file is removed and ``dest`` is untouched."""
    folder = dest.parent
    fd, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".sentinel-tmp", dir=folder)
    os.close(fd)
    tmp = Path(temp)
    try:
        fill(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def fetch_command(settings: Settings, name: str, dest: Path, *, system_id: str | None,
                  source: str | None) -> str:
    """The whole wal-fetch: every failure but "absent" becomes FetchFailed (exit >= 126)."""
    try:
        from sentinel_backup.storage.registry import build_destinations, destination_by_name
        from sentinel_backup.wal import prefetch
        from sentinel_backup.wal.segment import control_system_id

        sysid = system_id if system_id is not None else str(control_system_id(Path.cwd()))
        if prefetch.take(settings, sysid, name, dest):
            origin = "prefetch"
            destinations: list[Storage] | None = None
        else:
            destinations = [destination_by_name(settings, source)] if source else build_destinations(settings)
            origin = fetch(settings, name, dest, sysid, destinations)
        if settings.wal_fetch_prefetch:
            if destinations is None:
                destinations = [destination_by_name(settings, source)] if source else build_destinations(settings)
            prefetch.prefetch(settings, sysid, name, dest, destinations)
        return origin
    except (NotInArchive, FetchFailed):
        raise
    except SentinelError as exc:
        raise FetchFailed(exc.message, exc.hint) from None
    except OSError as exc:
        raise FetchFailed(f"cannot write {dest}: {exc.strerror}", "check the data directory") from None


__all__ = ["EXIT_FATAL", "FetchFailed", "NotInArchive", "fetch", "fetch_command", "write_atomically"]
