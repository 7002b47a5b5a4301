"""Stream stages: compression round trips, truncation, bounded decode, the thread handoff."""

from __future__ import annotations

import os
import threading

import pytest

from sentinel_backup.choices import Compression
from sentinel_backup.errors import VerifyFailed
from sentinel_backup.streams.base import Handoff, NullSink
from sentinel_backup.streams.compress import DECODE_SLICE, compressor, decompressor, isal_level
from sentinel_backup.streams.digest import Digest


class Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def compress(algorithm: Compression, data: bytes, chunk: int = 100_000) -> bytes:
    out = Collect()
    head = compressor(algorithm, 6 if algorithm is Compression.GZIP else 3, out)
    for i in range(0, len(data), chunk):
        head.write(data[i:i + chunk])
    head.close()
    return out.data


SAMPLE = b"".join(b"%d|row %d|" % (i, i) + b" " * 80 + b"\n" for i in range(60_000))


@pytest.mark.parametrize("algorithm", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_round_trip_any_chunking(algorithm: Compression) -> None:
    packed = compress(algorithm, SAMPLE)
    for chunk in (7, 4096, 65_536, len(packed) + 1):
        out = Collect()
        head = decompressor(algorithm, out)
        for i in range(0, len(packed), chunk):
            head.write(packed[i:i + chunk])
        head.close()
        assert out.data == SAMPLE and out.closed


@pytest.mark.parametrize("algorithm", [Compression.GZIP, Compression.ZSTD])
def test_truncated_and_corrupt_input_is_refused(algorithm: Compression) -> None:
    packed = compress(algorithm, SAMPLE)
    with pytest.raises(VerifyFailed, match="truncated"):
        head = decompressor(algorithm, NullSink())
        head.write(packed[:-20])
        head.close()
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(VerifyFailed):
        head = decompressor(algorithm, NullSink())
        head.write(bytes(broken))
        head.close()
    with pytest.raises(VerifyFailed):
        decompressor(algorithm, NullSink()).close()  # empty is not a backup


@pytest.mark.parametrize("algorithm", [Compression.GZIP, Compression.ZSTD])
def test_decode_output_is_bounded_per_call(algorithm: Compression) -> None:
    """Highly compressible input must not come out as one huge block (flat memory)."""
    packed = compress(algorithm, b"\0" * (64 << 20))
    out = Collect()
    head = decompressor(algorithm, out)
    head.write(packed)
    head.close()
    assert sum(map(len, out.parts)) == 64 << 20
    assert max(map(len, out.parts)) <= DECODE_SLICE * 1100


def test_gzip_members_concatenate_like_gunzip() -> None:
    out = Collect()
    head = decompressor(Compression.GZIP, out)
    head.write(compress(Compression.GZIP, b"first\n") + compress(Compression.GZIP, b"second\n"))
    head.close()
    assert out.data == b"first\nsecond\n"


def test_isal_levels_keep_their_order() -> None:
    assert [isal_level(n) for n in range(1, 10)] == [0, 1, 1, 2, 2, 2, 3, 3, 3]


def test_digest_counts_and_hashes() -> None:
    import hashlib

    d = Digest(NullSink())
    d.write(b"abc")
    d.write(b"def")
    assert d.size == 6 and d.sha256 == hashlib.sha256(b"abcdef").hexdigest()


def test_handoff_delivers_in_order_and_closes() -> None:
    out = Collect()
    h = Handoff(out)
    chunks = [os.urandom(1000) for _ in range(50)]
    for c in chunks:
        h.write(c)
    h.close()
    assert out.parts == chunks and out.closed


def test_handoff_raises_a_downstream_error() -> None:
    class Boom(Collect):
        def write(self, data: bytes) -> None:
            raise VerifyFailed("downstream broke")

    h = Handoff(Boom())
    with pytest.raises(VerifyFailed, match="downstream broke"):
        for _ in range(100):
            h.write(b"x")
        h.close()
    h.abort()
    assert not h.thread.is_alive()


def test_handoff_abort_stops_the_thread() -> None:
    before = threading.active_count()
    h = Handoff(Collect())
    h.write(b"partial")
    h.abort()
    assert not h.thread.is_alive() and threading.active_count() == before


def test_abort_ends_the_thread_even_after_a_lost_wake_up() -> None:
    """A stop signal raised in the main thread halfway through the queue's notify (between
    releasing the waiting thread's lock and forgetting it) leaves a stale waiter first in line:
    the next single notification goes to it and the thread sleeps on. abort must still end it
    (the restore-signal hang: the restore waited forever in abort)."""
    handoff = Handoff(NullSink())
    handoff.write(b"x")
    while not handoff.queue.not_empty._waiters:  # type: ignore[attr-defined]  # the thread waits for more
        threading.Event().wait(0.001)
    stale = threading.Lock()
    stale.acquire()
    with handoff.queue.mutex:
        handoff.queue.not_empty._waiters.appendleft(stale)  # type: ignore[attr-defined]  # what the signal leaves
    handoff.abort()
    assert not handoff.thread.is_alive()


def test_abort_returns_when_the_thread_is_blocked_in_its_downstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread stuck inside downstream.write (a child that stopped reading) cannot be woken:
    abort gives up after ABORT_WAIT and lets the caller kill that child, which ends the write."""
    from sentinel_backup.streams import base

    release, entered = threading.Event(), threading.Event()

    class Stuck:
        def write(self, data: bytes) -> None:
            entered.set()
            release.wait()

        def close(self) -> None:
            pass

    monkeypatch.setattr(base, "ABORT_WAIT", 0.2)
    h = base.Handoff(Stuck())
    h.write(b"x")
    assert entered.wait(10)
    h.abort()  # returns although the thread is still blocked
    assert h.thread.is_alive()
    release.set()  # what killing the child does to the blocked write
    h.thread.join(10)
    assert not h.thread.is_alive()
