"""The in-stream comparison of decoded bytes with the producer's raw chunks (pipeline.rawmatch),
alone and inside StreamCheck with the real compressors and ciphers."""

from __future__ import annotations

import random

import pytest

from sentinel_backup.choices import Compression
from sentinel_backup.errors import VerifyFailed
from sentinel_backup.pipeline.instream import StreamCheck
from sentinel_backup.pipeline.rawmatch import RawWindow, StreamMismatch
from sentinel_backup.streams.base import CHUNK, Sink, Tee
from sentinel_backup.streams.compress import ZSTD_JOB_SIZE, compressor
from sentinel_backup.streams.crypto import AesCipher
from sentinel_backup.streams.digest import Digest

MIB = 1 << 20


def dump_like(size: int, seed: int = 7) -> bytes:
    """Compressible text with some randomness (so a flipped byte changes the output)."""
    rnd = random.Random(seed)
    lines = []
    total = 0
    n = 0
    while total < size:
        line = f"{n}\t{rnd.randrange(10**9)}\t{'x' * rnd.randrange(40)}\t{rnd.random()}\n".encode()
        lines.append(line)
        total += len(line)
        n += 1
    return b"".join(lines)[:size]


def cut(data: bytes, rnd: random.Random, most: int) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rnd.randrange(1, most)
        out.append(data[i:i + n])
        i += n
    return out


def test_any_alignment_of_raw_and_decoded_chunks_matches() -> None:
    data = dump_like(300_000)
    rnd = random.Random(1)
    window = RawWindow()
    for piece in cut(data, rnd, 20_000):
        window.keep(piece)
    for piece in cut(data, rnd, 7_000):
        window.write(piece)
    assert window.whole() and window.matched == len(data)
    assert "compared byte for byte" in window.detail()


@pytest.mark.parametrize("where", [0, 1, 19_999, 20_000, 150_001, 299_999])
def test_a_differing_byte_is_found_where_it_is(where: int) -> None:
    data = dump_like(300_000)
    bad = bytearray(data)
    bad[where] ^= 0x20
    window = RawWindow()
    for i in range(0, len(data), 20_000):
        window.keep(data[i:i + 20_000])
    with pytest.raises(StreamMismatch, match=f"differs from what the producer wrote at byte {where}$"):
        for i in range(0, len(bad), 6_999):
            window.write(bytes(bad[i:i + 6_999]))


def test_longer_and_shorter_decoded_streams_are_refused() -> None:
    window = RawWindow()
    window.keep(b"abcdef")
    window.write(b"abc")
    assert not window.whole() and "only 3 of the producer's 6 bytes" in window.detail()
    with pytest.raises(StreamMismatch, match="more bytes than the producer wrote"):
        window.write(b"defg")
    assert isinstance(StreamMismatch("x", "y"), VerifyFailed)  # refused like any other verification failure


def run_check(data: bytes, compression: Compression, *, threads: int = 1, cipher: AesCipher | None = None,
              damage: bool = False) -> tuple[StreamCheck, Digest]:
    check = StreamCheck(compression, cipher)
    stored: Sink = check.sink
    if damage:
        stored = Flip(stored)
    inner = cipher.encryptor(stored) if cipher is not None else stored
    raw = Digest(check.raw_tap(compressor(compression, 3, inner, threads=threads)))
    for i in range(0, len(data), CHUNK):
        raw.write(data[i:i + CHUNK])
    raw.close()
    return check, raw


class Flip:
    """Flips one byte of the second chunk it passes on."""

    def __init__(self, downstream: Sink) -> None:
        self.downstream, self.n = downstream, 0

    def write(self, data: bytes) -> None:
        self.n += 1
        if self.n == 2:
            data = data[:10] + bytes([data[10] ^ 1]) + data[11:]
        self.downstream.write(data)

    def close(self) -> None:
        self.downstream.close()


@pytest.mark.parametrize(("compression", "threads", "bound"), [
    (Compression.GZIP, 0, 6 * MIB), (Compression.ZSTD, 0, 6 * MIB), (Compression.ZSTD, 1, 8 * ZSTD_JOB_SIZE),
    (Compression.NONE, 0, 4 * MIB)])
def test_stream_check_passes_a_good_stream_with_bounded_memory(compression: Compression, threads: int,
                                                               bound: int) -> None:
    data = dump_like(48 * MIB)
    check, raw = run_check(data, compression, threads=threads)
    assert [c.name for c in check.checks(raw, None) if not c.ok] == []
    assert check.window.kept == len(data)
    # Only raw bytes not yet decoded are kept: a few chunks (zstd workers: a few jobs in flight), not the stream.
    assert 0 < check.window.peak <= bound


def test_stream_check_refuses_a_damaged_encrypted_stream() -> None:
    cipher = AesCipher(b"correct horse battery staple")
    data = dump_like(6 * MIB)
    check, raw = run_check(data, Compression.GZIP, cipher=cipher)
    assert all(c.ok for c in check.checks(raw, None))
    with pytest.raises(VerifyFailed, match="in-stream verification failed"):
        run_check(data, Compression.GZIP, cipher=cipher, damage=True)


def test_stream_check_refuses_a_compressor_that_loses_bytes() -> None:
    data = dump_like(3 * MIB)
    check = StreamCheck(Compression.GZIP, None)

    class Lossy:  # drops the last raw chunk before it reaches the compressor
        def __init__(self, downstream: Sink) -> None:
            self.downstream, self.n = downstream, 0

        def write(self, chunk: bytes) -> None:
            self.n += 1
            if self.n < 3:
                self.downstream.write(chunk)

        def close(self) -> None:
            self.downstream.close()

    raw = Digest(check.raw_tap(Lossy(compressor(Compression.GZIP, 6, Tee(check.sink)))))
    for i in range(0, len(data), CHUNK):
        raw.write(data[i:i + CHUNK])
    raw.close()
    [failed] = [c for c in check.checks(raw, None) if not c.ok]
    assert failed.name == "raw" and "only 2097152 of the producer's 3145728 bytes" in failed.detail
