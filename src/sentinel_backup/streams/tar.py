"""A folder of files as one tar stream, and back: written, checked and extracted as the bytes pass.

``pg_dump -Fd`` writes a folder (``toc.dat`` and one compressed file per table); the write
pipeline stores one stream. :class:`TarReader` turns the folder into a GNU tar stream
(``toc.dat`` first, then the other files by name; only regular files), read like a child's
stdout. :class:`TarWalker` follows the 512-byte headers of a tar stream through any chunking
without buffering file data; :class:`TarCheck` (a RawObserver of the in-stream check and of
``verify``) proves the archive is complete (the end-of-archive blocks are there) and holds
the members a restore needs; :class:`TarExtractor` (a Sink) writes the members into a private
folder, refusing any name that is not a plain file name. The archive is what ``tar -x`` or
``tar -t`` read.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from sentinel_backup.errors import SourceError, VerifyFailed
from sentinel_backup.streams.base import CHUNK

BLOCK = 512
END = bytes(2 * BLOCK)  # two zero blocks: the end-of-archive
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # what pg_dump -Fd writes: toc.dat, 3456.dat.gz, ...


class TarError(ValueError):
    """The stream is not a well-formed tar archive."""


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU, for members of 8 GiB and more)
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _header(block: bytes) -> tuple[str, int, bytes]:
    """(name, size, type flag) of one header block; TarError when it is damaged."""
    try:
        stored, size = _number(block[148:156]), _number(block[124:136])
    except ValueError:
        raise TarError("a tar header holds no number where its checksum or size belongs") from None
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        raise TarError("tar header checksum mismatch")
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    if block[257:263] == b"ustar\0" and block[345]:  # the POSIX prefix field (GNU headers have none)
        name = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
    return name, size, block[156:157].replace(b"\0", b"0") or b"0"


class TarWalker:
    """Feed it the archive's bytes in order; subclasses see each member's start, data and end."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ended = False  # the two zero blocks were seen
        self._buf = bytearray()
        self._data = 0  # bytes of the current member's data still to come
        self._pad = 0
        self._zeros = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._data:
                take = min(self._data, len(view) - pos)
                self.member_data(view[pos:pos + take])
                pos += take
                self._data -= take
                if not self._data:
                    self.member_end()
            elif self._pad:
                take = min(self._pad, len(view) - pos)
                pos += take
                self._pad -= take
            else:
                take = min(BLOCK - len(self._buf), len(view) - pos)
                self._buf += view[pos:pos + take]
                pos += take
                if len(self._buf) == BLOCK:
                    block = bytes(self._buf)
                    self._buf.clear()
                    self._block(block)

    def _block(self, block: bytes) -> None:
        if self.ended:
            if block.count(0) != BLOCK:
                raise TarError("data after the end-of-archive")
            return
        if block.count(0) == BLOCK:
            self._zeros += 1
            self.ended = self._zeros == 2
            return
        if self._zeros:
            raise TarError("a single zero block inside the archive")
        name, size, kind = _header(block)
        self.names.append(name)
        self._data, self._pad = size, (-size) % BLOCK
        self.member_start(name, size, kind)
        if not size:
            self.member_end()

    @property
    def partial(self) -> bool:
        """A member or header was cut short."""
        return bool(self._data or self._buf)

    def member_start(self, name: str, size: int, kind: bytes) -> None:
        pass

    def member_data(self, data: memoryview) -> None:
        pass

    def member_end(self) -> None:
        pass


class TarCheck:
    """A RawObserver: the raw stream is a complete tar archive holding ``required`` (never raises)."""

    name = "complete"

    def __init__(self, required: tuple[str, ...] = ("toc.dat",)) -> None:
        self.required = required
        self.walker = TarWalker()
        self.error: str | None = None

    def write(self, data: bytes) -> None:
        if self.error is None:
            try:
                self.walker.feed(data)
            except TarError as exc:
                self.error = str(exc)

    def close(self) -> None:
        pass

    def missing(self) -> list[str]:
        return [name for name in self.required if name not in self.walker.names]

    def complete(self) -> bool:
        return self.error is None and self.walker.ended and not self.walker.partial and not self.missing()

    def detail(self) -> str:
        files = len(self.walker.names)
        if self.error is not None:
            return f"not a well-formed tar archive after {files} member(s): {self.error}"
        if not self.walker.ended:
            return f"tar end-of-archive missing after {files} member(s): the archive is truncated"
        if self.missing():
            return f"tar archive of {files} member(s) lacks {', '.join(self.missing())}"
        return f"tar end-of-archive present, {files} member(s) with {', '.join(self.required)}"


class TarExtractor(TarWalker):
    """A Sink: writes the archive's members (plain file names only, regular files) into ``folder``,
    which must exist and be private. ``close`` fails unless the archive was complete."""

    def __init__(self, folder: Path, required: tuple[str, ...] = ("toc.dat",)) -> None:
        super().__init__()
        self.folder = folder
        self.required = required
        self._fd: int | None = None

    def write(self, data: bytes) -> None:
        try:
            self.feed(data)
        except TarError as exc:
            raise VerifyFailed(f"the stored archive cannot be extracted: {exc}",
                               "the backup is damaged: restore another copy or another backup") from None

    def member_start(self, name: str, size: int, kind: bytes) -> None:
        if kind != b"0" or not _PLAIN_NAME.match(name):
            raise TarError(f"unexpected member {name!r} (type {kind.decode(errors='replace')}): a directory-format"
                           " dump holds plain files only")
        self._fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def member_data(self, data: memoryview) -> None:
        assert self._fd is not None
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def member_end(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.member_end()
        missing = [name for name in self.required if name not in self.names]
        if not self.ended or self.partial or missing:
            what = "ends before its end-of-archive" if not self.ended or self.partial else f"lacks {missing[0]}"
            raise VerifyFailed(f"the stored archive {what}", "the backup is damaged: restore another copy")


class TarReader:
    """The files of ``folder`` as one tar stream (``read`` like a pipe; at most one file's chunk
    at a time in memory). ``first`` come first; ``stop`` makes the next read fail."""

    def __init__(self, folder: Path, first: tuple[str, ...] = ("toc.dat",)) -> None:
        self.folder = folder
        names = sorted(entry.name for entry in os.scandir(folder))
        self.names = [n for n in first if n in names] + [n for n in names if n not in first]
        self._chunks = self._generate()
        self.stopped = False

    def _generate(self) -> Iterator[bytes]:
        for name in self.names:
            path = self.folder / name
            info = path.lstat()
            if not path.is_file() or path.is_symlink() or not _PLAIN_NAME.match(name):
                raise SourceError(f"pg_dump wrote {name!r} into {self.folder}, which is not a plain file",
                                  "report this: a directory-format dump holds plain files only")
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = info.st_size, int(info.st_mtime), 0o600
            yield member.tobuf(format=tarfile.GNU_FORMAT)
            with path.open("rb") as file:
                left = info.st_size
                while left:
                    data = file.read(min(CHUNK, left))
                    if not data:
                        raise SourceError(f"{path} shrank while it was read", "nothing else may write there")
                    left -= len(data)
                    yield data
            if info.st_size % BLOCK:
                yield bytes(BLOCK - info.st_size % BLOCK)
        yield END

    def read(self, n: int = -1) -> bytes:
        if self.stopped:
            raise SourceError("the directory dump was stopped while it was read")
        return next(self._chunks, b"")

    def stop(self) -> None:
        self.stopped = True
