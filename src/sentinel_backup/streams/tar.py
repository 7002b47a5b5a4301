"""Tar streams as their bytes pass: one walker for every archive the tool writes or reads.

Two kinds of backup are stored as one tar stream. ``pg_basebackup -Ft -D -`` writes one ustar
archive (a base backup); ``pg_dump -Fd`` writes a folder (``toc.dat`` and one compressed file
per table), which :class:`TarReader` turns into a GNU tar stream (``toc.dat`` first, then the
other files by name; only regular files), read like a child's stdout.

:class:`TarWalker` follows the 512-byte headers of a tar stream through any chunking without
buffering file data (a header costs a few microseconds; a 1 GB relation file costs one
header), keeps a copy of the few small members asked for (a base backup's ``backup_label`` and
``backup_manifest``), and knows whether the archive ended properly: two zero blocks where a
header belongs, followed by nothing but zeros. A damaged archive is remembered in ``error``,
never raised from ``feed``. On it: :class:`CapturingReader` (the producer's side of a base
backup: its facts come from the stream itself), :class:`TarCheck` (a RawObserver of the
in-stream check and of ``verify``: the archive is complete and holds the members a restore
needs; :class:`TarObserver` for a base backup, which needs none by name) and
:class:`TarExtractor` (a Sink writing a directory-format dump's members into a private folder,
refusing any name that is not a plain file name). ``parse_header`` and ``member_name`` serve
the physical restore's extractor (``physical/extract.py``). The archives are what ``tar -x``
or ``tar -t`` read.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

from sentinel_backup.errors import SourceError, VerifyFailed
from sentinel_backup.streams.base import CHUNK

BLOCK = 512
END = bytes(2 * BLOCK)  # two zero blocks: the end-of-archive
CAPTURE_LIMIT = 512 << 20  # a backup_manifest of a few million files; larger is refused, not truncated
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # what pg_dump -Fd writes: toc.dat, 3456.dat.gz, ...


class TarError(ValueError):
    """The stream is not a well-formed tar archive."""


class Header(NamedTuple):
    name: str
    size: int
    kind: bytes  # the type flag; b"0" for a regular file (an old NUL flag included)
    link: str


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU / PostgreSQL, for members of 8 GiB and more)
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def parse_header(block: bytes) -> Header:
    """One header block; TarError when it is damaged."""
    try:
        stored, size = _number(block[148:156]), _number(block[124:136])
    except ValueError:
        raise TarError("a tar header holds no number where its checksum or size belongs") from None
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != actual:
        raise TarError(f"tar header checksum mismatch ({stored} != {actual})")
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    if block[257:263] == b"ustar\0" and block[345]:  # the POSIX prefix field (GNU headers have none)
        name = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
    link = block[157:257].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Header(name, size, block[156:157].replace(b"\0", b"0") or b"0", link)


def member_name(name: str) -> str:
    """``./pg_wal/x`` and ``pg_wal/x/`` as ``pg_wal/x``."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


class TarWalker:
    """Feed it the archive's bytes in order; ask it afterwards what it saw (see the module doc).
    Subclasses see each member through ``member_start``, ``member_data`` and ``member_end``; a
    TarError they raise ends the walk like a damaged header."""

    def __init__(self, capture: tuple[str, ...] = ()) -> None:
        self.capture = frozenset(capture)
        self.captured: dict[str, bytes] = {}
        self.names: list[str] = []
        self.size = 0  # bytes fed
        self.ended = False  # the two zero blocks were seen
        self.error: str | None = None
        self._buf = bytearray()  # the header block being gathered
        self._data = 0  # bytes of the current member's data still to come
        self._pad = 0
        self._zeros = 0  # consecutive zero blocks where a header belongs
        self._kept: bytearray | None = None  # the captured member being gathered
        self._name = ""

    @property
    def members(self) -> int:
        return len(self.names)

    @property
    def partial(self) -> bool:
        """A member or header was cut short."""
        return bool(self._data or self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        if self.error is None:
            try:
                self._feed(view)
            except TarError as exc:
                self.error = str(exc)

    def complete(self) -> bool:
        return self.error is None and self.ended and not self.partial

    def detail(self) -> str:
        files = f"{self.members} member(s), {self.size} bytes"
        if self.error is not None:
            return f"not a well-formed tar archive after {files}: {self.error}"
        if not self.complete():
            return f"tar end-of-archive missing after {files}: the archive is truncated"
        return f"tar end-of-archive present after {self.members} member(s)"

    def _feed(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end:
            if self._data:
                take = min(self._data, end - pos)
                piece = view[pos:pos + take]
                if self._kept is not None:
                    self._kept += piece
                self.member_data(piece)
                pos += take
                self._data -= take
                if not self._data:
                    self._end()
            elif self._pad:
                take = min(self._pad, end - pos)
                pos += take
                self._pad -= take
            elif self.ended:
                rest = view[pos:]
                if rest.tobytes().count(0) != len(rest):
                    raise TarError("data after the end-of-archive")
                return
            else:
                take = min(BLOCK - len(self._buf), end - pos)
                self._buf += view[pos:pos + take]
                pos += take
                if len(self._buf) == BLOCK:
                    block = bytes(self._buf)
                    self._buf.clear()
                    self._block(block)

    def _block(self, block: bytes) -> None:
        if block.count(0) == BLOCK:
            self._zeros += 1
            self.ended = self._zeros == 2
            return
        if self._zeros:
            raise TarError("a single zero block inside the archive")
        header = parse_header(block)
        self.names.append(header.name)
        self._name = member_name(header.name)
        self._data, self._pad = header.size, (-header.size) % BLOCK
        if self._name in self.capture:
            if header.size > CAPTURE_LIMIT:
                raise TarError(f"{self._name} is {header.size} bytes, more than {CAPTURE_LIMIT} can be kept")
            self._kept = bytearray()
        self.member_start(header)
        if not header.size:
            self._end()

    def _end(self) -> None:
        if self._kept is not None:
            self.captured[self._name] = bytes(self._kept)
            self._kept = None
        self.member_end()

    def member_start(self, header: Header) -> None:
        pass

    def member_data(self, data: memoryview) -> None:
        pass

    def member_end(self) -> None:
        pass


class TarCheck(TarWalker):
    """A RawObserver: the raw stream is a complete tar archive holding ``required`` (never raises)."""

    name = "complete"

    def __init__(self, required: tuple[str, ...] = ("toc.dat",)) -> None:
        super().__init__()
        self.required = required

    def write(self, data: bytes) -> None:
        self.feed(data)

    def close(self) -> None:
        pass

    def missing(self) -> list[str]:
        return [name for name in self.required if name not in self.names]

    def complete(self) -> bool:
        return super().complete() and not self.missing()

    def detail(self) -> str:
        if self.error is None and self.ended and not self.partial and self.required:
            if self.missing():
                return f"tar archive of {self.members} member(s) lacks {', '.join(self.missing())}"
            return f"{super().detail()} with {', '.join(self.required)}"
        return super().detail()


class TarObserver(TarCheck):
    """The RawObserver of a base backup: the decoded stream is one complete tar archive."""

    def __init__(self) -> None:
        super().__init__(required=())


class CapturingReader:
    """A reader over a child's stdout that walks the tar as it is read (see the module doc).

    ``read1(n)`` fills up to ``n`` bytes (up to the end of the stream) before it returns:
    ``pg_basebackup`` writes its stdout in 4 KiB pieces, so a pipe read returns tens of KiB,
    and every chunk costs one pass through each Python stage of the pipeline (hash, keep,
    compress, tee, queues). Whole 1 MiB chunks cost one copy and measured about a tenth less
    CPU per base backup (bench/physical.py, docs/performance.md)."""

    def __init__(self, raw: IO[bytes], walker: TarWalker) -> None:
        self.raw = raw
        self.walker = walker

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.walker.feed(data)
        return data

    def read1(self, n: int = -1) -> bytes:
        if n < 0:
            return self.read(n)
        read1 = getattr(self.raw, "read1", self.raw.read)
        data: bytes = read1(n)
        if data and len(data) < n:
            parts, got = [data], len(data)
            while got < n:
                more: bytes = read1(n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        if data:
            self.walker.feed(data)
        return data

    def close(self) -> None:
        self.raw.close()

    def fileno(self) -> int:
        return self.raw.fileno()


class TarExtractor(TarWalker):
    """A Sink: writes the archive's members (plain file names only, regular files) into ``folder``,
    which must exist and be private. ``close`` fails unless the archive was complete."""

    def __init__(self, folder: Path, required: tuple[str, ...] = ("toc.dat",)) -> None:
        super().__init__()
        self.folder = folder
        self.required = required
        self._fd: int | None = None

    def write(self, data: bytes) -> None:
        self.feed(data)
        if self.error is not None:
            raise VerifyFailed(f"the stored archive cannot be extracted: {self.error}",
                               "the backup is damaged: restore another copy or another backup")

    def member_start(self, header: Header) -> None:
        if header.kind != b"0" or not _PLAIN_NAME.match(header.name):
            raise TarError(f"unexpected member {header.name!r} (type {header.kind.decode(errors='replace')}):"
                           " a directory-format dump holds plain files only")
        self._fd = os.open(self.folder / header.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

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
