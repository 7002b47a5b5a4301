"""The Sink protocol and the helpers every stage shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, BinaryIO, Protocol

CHUNK = 1 << 20  # 1 MiB: large enough for fast hashing/compression, small enough for flat memory


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """Discards everything (the end of a verification chain)."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class FileSink:
    """Writes to a binary file object; close() closes it (e.g. a child's stdin)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def close(self) -> None:
        self.file.close()


def pump(reader: IO[bytes], sink: Sink, *, chunk: int = CHUNK, progress: Callable[[int], None] | None = None) -> int:
    """Copy reader into sink chunk by chunk, then close the sink. Returns bytes read."""
    total = 0
    read = getattr(reader, "read1", reader.read)
    while True:
        data = read(chunk)
        if not data:
            break
        total += len(data)
        sink.write(data)
        if progress is not None:
            progress(len(data))
    sink.close()
    return total
