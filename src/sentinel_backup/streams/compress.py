"""Compression stages: gzip through ISA-L (readable by gunzip), zstd, or none.

The algorithm names here are the ones stored in manifests and used in file names.
"""

from __future__ import annotations

from typing import Any

import zstandard
from isal import isal_zlib

from sentinel_backup.choices import Compression
from sentinel_backup.errors import VerifyFailed
from sentinel_backup.streams.base import Sink

EXTENSIONS = {Compression.GZIP: ".gz", Compression.ZSTD: ".zst", Compression.NONE: ""}
_GZIP_WBITS = 31  # zlib's "gzip container" window bits


# zstd workers compress jobs of this much input (zstd's own default at level 3 is 8 MiB): the
# raw bytes not yet compressed, and the in-stream check's window of raw chunks not yet decoded
# back (pipeline.rawmatch), stay a few jobs of this size.
ZSTD_JOB_SIZE = 4 << 20
DECODE_SLICE = 64 * 1024  # input per decompress call: dumps compress up to ~50x, so output stays a few MiB


def slices(data: bytes, size: int = DECODE_SLICE) -> list[bytes | memoryview]:
    """``data`` cut into pieces of at most ``size`` bytes (no copy)."""
    if len(data) <= size:
        return [data]
    view = memoryview(data)
    return [view[i:i + size] for i in range(0, len(data), size)]


def isal_level(gzip_level: int) -> int:
    """Map gzip's 1-9 onto ISA-L's 0-3 (higher still means smaller and slower)."""
    return 0 if gzip_level <= 1 else 1 if gzip_level <= 3 else 2 if gzip_level <= 6 else 3


class _ZlibLike:
    """Adapter for compressobj/decompressobj-style objects."""

    def __init__(self, engine: Any, downstream: Sink, *, decompress: bool) -> None:
        self.engine = engine
        self.downstream = downstream
        self.decompress = decompress

    def write(self, data: bytes) -> None:
        out = self.engine.decompress(data) if self.decompress else self.engine.compress(data)
        if out:
            self.downstream.write(out)

    def close(self) -> None:
        tail = self.engine.flush()
        if tail:
            self.downstream.write(tail)
        self.downstream.close()


class _GzipDecompressor:
    """Decompresses a gzip stream (several members allowed, as gunzip does) and fails
    if the data is corrupt or ends inside a member."""

    def __init__(self, downstream: Sink) -> None:
        self.downstream = downstream
        self.engine = isal_zlib.decompressobj(_GZIP_WBITS)
        self.members = 0
        self.in_member = False

    def write(self, data: bytes) -> None:
        for piece in slices(data):
            self._write(piece)

    def _write(self, data: bytes | memoryview) -> None:
        while data:
            self.in_member = True
            try:
                out = self.engine.decompress(data)
            except Exception as exc:  # isal_zlib.error: only the decompressor runs in this try
                raise VerifyFailed(f"gzip data is corrupt: {exc}",
                                   "the artifact is damaged; use another backup") from None
            if out:
                self.downstream.write(out)
            if not self.engine.eof:
                return
            self.members += 1
            self.in_member = False
            data = self.engine.unused_data
            self.engine = isal_zlib.decompressobj(_GZIP_WBITS)

    def close(self) -> None:
        if self.in_member or self.members == 0:
            raise VerifyFailed("gzip data is truncated", "the artifact is incomplete; use another backup")
        self.downstream.close()


class _ZstdDecompressor:
    def __init__(self, downstream: Sink) -> None:
        self.downstream = downstream
        self.engine = zstandard.ZstdDecompressor().decompressobj()
        self.seen = False

    def write(self, data: bytes) -> None:
        self.seen = True
        for piece in slices(data):
            try:
                out = self.engine.decompress(piece)
            except zstandard.ZstdError as exc:
                raise VerifyFailed(f"zstd data is corrupt: {exc}",
                                   "the artifact is damaged; use another backup") from None
            if out:
                self.downstream.write(out)

    def close(self) -> None:
        if not self.seen or not self.engine.eof:
            raise VerifyFailed("zstd data is truncated", "the artifact is incomplete; use another backup")
        self.downstream.close()


def compressor(algorithm: Compression, level: int, downstream: Sink, *, threads: int = 1) -> Sink:
    """A stage that compresses into downstream."""
    if algorithm is Compression.GZIP:
        return _ZlibLike(isal_zlib.compressobj(isal_level(level), isal_zlib.DEFLATED, _GZIP_WBITS),
                         downstream, decompress=False)
    if algorithm is Compression.ZSTD:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=threads, write_checksum=True, **({"job_size": ZSTD_JOB_SIZE} if threads else {}))
        return _ZlibLike(zstandard.ZstdCompressor(compression_params=params).compressobj(), downstream,
                         decompress=False)
    return downstream


def decompressor(algorithm: Compression, downstream: Sink) -> Sink:
    """A stage that decompresses into downstream and fails on corrupt or truncated data."""
    if algorithm is Compression.GZIP:
        return _GzipDecompressor(downstream)
    if algorithm is Compression.ZSTD:
        return _ZstdDecompressor(downstream)
    return downstream
