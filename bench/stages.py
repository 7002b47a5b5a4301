"""Where the time goes: throughput of each stream stage, in-process, on dump-like data.

    .venv/bin/python bench/stages.py [--scale 8] [--chunk-kib 64,1024]

Builds dump-like text in memory (pgbench_accounts lines plus the docs table of
bench/dataset.py, in the proportions of the real benchmark database) and pushes it
through the product's own stages (sentinel_backup.streams) one at a time, single
threaded, at the chunk sizes given: 64 KiB is what a read from a default Linux pipe
returns; 1 MiB is the product's CHUNK. Prints MiB/s of raw input per stage, so the
ceiling of a single-threaded pipeline is 1 / sum(1 / stage rate).

Also measures how large the reads from pg_dump's pipe really are (``--pipe-test``).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from dataset import DOCS_ROWS_PER_SCALE, docs_rows  # noqa: E402
from sentinel_backup.config import Compression  # noqa: E402
from sentinel_backup.streams.base import Sink  # noqa: E402
from sentinel_backup.streams.compress import compressor, decompressor  # noqa: E402
from sentinel_backup.streams.digest import Digest  # noqa: E402

MIB = 1024 * 1024


def dump_like(scale: int) -> bytes:
    accounts = b"".join(f"{aid}\t{(aid - 1) // 100000 + 1}\t0\t{' ' * 84}\n".encode()
                        for aid in range(1, scale * 100_000 + 1))
    docs = b"".join(docs_rows(scale * DOCS_ROWS_PER_SCALE))
    return accounts + docs


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


class Counter:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def close(self) -> None:
        pass


def timed(parts: list[bytes], make: Callable[[Sink], Sink]) -> tuple[float, int]:
    end = Counter()
    stage = make(end)
    t0 = time.perf_counter()
    for part in parts:
        stage.write(part)
    stage.close()
    return time.perf_counter() - t0, end.size


def stage_table(data: bytes, chunk: int) -> list[tuple[str, float, float | None]]:
    parts = chunks(data, chunk)
    rows: list[tuple[str, float, float | None]] = []

    def add(name: str, make: Callable[[Sink], Sink], ratio: bool = False) -> None:
        seconds, out = timed(parts, make)
        rows.append((name, len(data) / MIB / seconds, out / len(data) if ratio else None))

    add("sha256 (Digest)", lambda d: Digest(d))
    for level in (1, 2, 4, 6, 9):
        add(f"gzip COMPRESSION_LEVEL={level} (ISA-L)", lambda d, lv=level: compressor(Compression.GZIP, lv, d), True)
    add("zstd -3, 1 thread", lambda d: compressor(Compression.ZSTD, 3, d, threads=1), True)
    add("zstd -3, all cores", lambda d: compressor(Compression.ZSTD, 3, d), True)
    gz = b"".join(chunks_out(data, lambda d: compressor(Compression.GZIP, 6, d)))
    zs = b"".join(chunks_out(data, lambda d: compressor(Compression.ZSTD, 3, d)))
    for name, blob, algo in (("gunzip (verify)", gz, Compression.GZIP), ("unzstd (verify)", zs, Compression.ZSTD)):
        seconds, _ = timed(chunks(blob, chunk), lambda d, a=algo: decompressor(a, d))
        rows.append((name + ", per raw MiB", len(data) / MIB / seconds, None))
    return rows


def chunks_out(data: bytes, make: Callable[[Sink], Sink]) -> list[bytes]:
    out: list[bytes] = []

    class Keep:
        def write(self, block: bytes) -> None:
            out.append(block)

        def close(self) -> None:
            pass

    stage = make(Keep())
    for part in chunks(data, MIB):
        stage.write(part)
    stage.close()
    return out


def pipe_reads(data: bytes) -> tuple[int, float]:
    """Read a child's stdout the way the product does (bufsize=0, read(1 MiB)): number and mean size of reads."""
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    import threading

    def feed() -> None:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    reads, total = 0, 0
    read = getattr(proc.stdout, "read1", proc.stdout.read)
    while True:
        block = read(MIB)
        if not block:
            break
        hashlib.sha256(block)
        reads += 1
        total += len(block)
    writer.join()
    proc.wait()
    return reads, total / max(reads, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--chunk-kib", default="64,1024")
    args = parser.parse_args()
    data = dump_like(args.scale)
    print(f"dump-like data: {len(data) / MIB:.0f} MiB (pgbench scale {args.scale} + docs)\n")
    reads, mean = pipe_reads(data[: 256 * MIB])
    print(f"reads from a child's pipe with read(1 MiB), bufsize=0: {reads} reads, mean {mean / 1024:.0f} KiB\n")
    for chunk in (int(c) * 1024 for c in args.chunk_kib.split(",")):
        print(f"| stage (chunk {chunk // 1024} KiB) | MiB/s of raw input | output/input |")
        print("|---|---:|---:|")
        for name, rate, ratio in stage_table(data, chunk):
            print(f"| {name} | {rate:.0f} | {'' if ratio is None else f'{ratio:.3f}'} |")
        print()


if __name__ == "__main__":
    main()
