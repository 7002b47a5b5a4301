"""Walk a tar stream as its bytes pass: headers only, never buffering file data.

``pg_basebackup -Ft -D -`` writes one ustar archive. :class:`TarWalker` follows its 512-byte
headers through any chunking (a header costs a few microseconds; a 1 GB relation file costs
one header), keeps a copy of the few small members asked for (``backup_label``,
``backup_manifest``), and knows whether the archive ended properly: two zero blocks where a
header belongs, followed by nothing but zeros. Used twice: by :class:`CapturingReader` on the
producer's side (the facts of a base backup come from the stream itself), and by
:class:`TarObserver` in the in-stream check (the stored bytes decode to a complete archive).
"""

from __future__ import annotations

from typing import IO

BLOCK = 512
CAPTURE_LIMIT = 512 << 20  # a backup_manifest of a few million files; larger is refused, not truncated


class TarError(ValueError):
    """The stream is not a well-formed tar archive."""


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU / PostgreSQL for members of 8 GB and more)
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def parse_header(block: bytes) -> tuple[str, int, bytes, str]:
    """(name, size, type flag, link name) of one header block; TarError when it is damaged."""
    stored = _octal(block[148:156])
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != actual:
        raise TarError(f"tar header checksum mismatch ({stored} != {actual})")
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
    link = block[157:257].split(b"\0", 1)[0].decode("utf-8", "replace")
    return name, _octal(block[124:136]), block[156:157] or b"0", link


def member_name(name: str) -> str:
    """``./pg_wal/x`` and ``pg_wal/x/`` as ``pg_wal/x``."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


class TarWalker:
    """Feed it the archive's bytes in order; ask it afterwards what it saw."""

    def __init__(self, capture: tuple[str, ...] = ()) -> None:
        self.capture = set(capture)
        self.captured: dict[str, bytes] = {}
        self.members = 0
        self.size = 0
        self.error: str | None = None
        self._header = bytearray()
        self._skip = 0  # data (and padding) bytes of the current member still to pass
        self._take = 0  # of which the first _take bytes are captured
        self._buffer: bytearray | None = None
        self._name = ""
        self._zeros = 0  # consecutive zero blocks where a header belongs
        self._ended = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        if self.error is not None:
            return
        try:
            self._feed(view)
        except TarError as exc:
            self.error = str(exc)

    def _feed(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end:
            if self._ended:
                if any(view[pos:]):
                    raise TarError("data after the end-of-archive marker")
                return
            if self._skip:
                step = min(self._skip, end - pos)
                if self._buffer is not None and self._take:
                    take = min(step, self._take)
                    self._buffer += view[pos:pos + take]
                    self._take -= take
                    if not self._take:
                        self.captured[self._name] = bytes(self._buffer)
                        self._buffer = None
                self._skip -= step
                pos += step
                continue
            need = BLOCK - len(self._header)
            self._header += view[pos:pos + need]
            pos += min(need, end - pos)
            if len(self._header) < BLOCK:
                return
            block = bytes(self._header)
            self._header.clear()
            self._block(block)

    def _block(self, block: bytes) -> None:
        if not any(block):
            self._zeros += 1
            if self._zeros == 2:
                self._ended = True
            return
        if self._zeros:
            raise TarError("a zero block in the middle of the archive")
        name, size, _kind, _link = parse_header(block)
        self.members += 1
        self._name = member_name(name)
        self._skip = (size + BLOCK - 1) // BLOCK * BLOCK
        if self._name in self.capture:
            if size > CAPTURE_LIMIT:
                raise TarError(f"{self._name} is {size} bytes, more than {CAPTURE_LIMIT} can be kept")
            self._take = size
            self._buffer = bytearray()
            if size == 0:
                self.captured[self._name] = b""
                self._buffer = None

    def complete(self) -> bool:
        return self.error is None and self._ended and not self._header

    def detail(self) -> str:
        if self.error is not None:
            return f"tar archive broken after {self.size} bytes: {self.error}"
        if self.complete():
            return f"tar end-of-archive present after {self.members} members"
        return f"tar end-of-archive missing after {self.members} members, {self.size} bytes: the archive is truncated"


class TarObserver:
    """The RawObserver of a base backup: the decoded stream is one complete tar archive."""

    name = "complete"

    def __init__(self) -> None:
        self.walker = TarWalker()

    def write(self, data: bytes) -> None:
        self.walker.feed(data)

    def close(self) -> None:
        pass

    def complete(self) -> bool:
        return self.walker.complete()

    def detail(self) -> str:
        return self.walker.detail()


class CapturingReader:
    """A reader over a child's stdout that walks the tar as it is read (see the module doc)."""

    def __init__(self, raw: IO[bytes], walker: TarWalker) -> None:
        self.raw = raw
        self.walker = walker

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.walker.feed(data)
        return data

    def read1(self, n: int = -1) -> bytes:
        read1 = getattr(self.raw, "read1", self.raw.read)
        data: bytes = read1(n)
        if data:
            self.walker.feed(data)
        return data

    def close(self) -> None:
        self.raw.close()

    def fileno(self) -> int:
        return self.raw.fileno()
