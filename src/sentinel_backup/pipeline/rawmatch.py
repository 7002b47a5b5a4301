"""Compare the in-stream decoder's output with the producer's raw bytes, byte for byte.

The write pipeline hashes the producer's raw stream once (its SHA-256 goes into the
manifest). Instead of hashing the decoded stream a second time and comparing digests at
the end, :class:`RawWindow` keeps each raw chunk the producer wrote until the decoder has
produced the same bytes, and compares them with ``memcmp`` as the decoded output arrives
(``bytes.startswith`` on a zero-copy view: a few GB/s, where SHA-256 is ~0.5 GB/s here).
Equal bytes in equal order over the whole stream prove what equal digests proved, and a
difference is found at the chunk where it happens, not after the dump ended.

Memory: only raw bytes not yet decoded are kept. That is what the compressor holds inside
(ISA-L: well under 1 MiB; zstd with worker threads: up to its jobs in flight, ~2 x 8 MiB at
level 3) plus the raw equivalent of the stored chunks waiting in the decoder's queue (two)
and the one being decoded: about 4 MiB for gzip and zstd without workers. The raw chunks
are the producer's own ``bytes`` objects, not copies. ``peak`` records the most kept.

Threads: :meth:`keep` runs in the thread that feeds the compressor, :meth:`write` in the
decoder's thread. Each side only appends or only pops (``deque`` does both atomically) and
each counter has one writer, so no lock is needed.
"""

from __future__ import annotations

from collections import deque

from sentinel_backup.errors import VerifyFailed


class StreamMismatch(VerifyFailed):
    """The decoded stream is not the producer's stream (another byte, or other length)."""


class RawWindow:
    """The producer's raw chunks not yet matched by decoded output."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already matched
        self.kept = 0  # written by the producer's side only
        self.matched = 0  # written by the decoder's side only
        self.peak = 0

    # --- the producer's side --------------------------------------------------------------
    def keep(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(bytes(data))  # bytes(bytes) is the same object: no copy
        self.kept += len(data)
        pending = self.kept - self.matched
        if pending > self.peak:
            self.peak = pending

    # --- the decoder's side (a Sink) ------------------------------------------------------
    def write(self, decoded: bytes) -> None:
        view = memoryview(decoded)
        pos, end = 0, len(view)
        while pos < end:
            if not self._chunks:
                raise StreamMismatch(
                    f"in-stream verification failed: the stream decodes to more bytes than the producer wrote "
                    f"(more than {self.matched})", _HINT)
            head = self._chunks[0]
            n = min(len(head) - self._head, end - pos)
            if not head.startswith(view[pos:pos + n], self._head):  # memcmp, no copy
                at = self.matched + _first_difference(head[self._head:self._head + n], view[pos:pos + n])
                raise StreamMismatch(
                    f"in-stream verification failed: the decoded stream differs from what the producer wrote "
                    f"at byte {at}", _HINT)
            pos += n
            self.matched += n
            self._head += n
            if self._head == len(head):
                self._chunks.popleft()
                self._head = 0

    def close(self) -> None:
        pass

    # --- after the stream ended -----------------------------------------------------------
    def whole(self) -> bool:
        """Every raw byte was decoded back (call after the decoder closed)."""
        return self.matched == self.kept and not self._chunks

    def detail(self) -> str:
        if self.whole():
            return f"the stream decodes to the producer's {self.kept} bytes, compared byte for byte"
        return (f"the stream decodes to only {self.matched} of the producer's {self.kept} bytes "
                "(the stored stream ends early)")


_HINT = "nothing was committed; run the backup again, and report it if it repeats"


def _first_difference(a: bytes, b: memoryview) -> int:
    """Offset of the first byte where a and b differ (only called once, on a mismatch)."""
    other = bytes(b)
    lo, hi = 0, min(len(a), len(other))
    if a[:hi] == other[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] equal, a[:hi] not: halve the range (memcmp each time)
        mid = (lo + hi) // 2
        if a[:mid] == other[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
