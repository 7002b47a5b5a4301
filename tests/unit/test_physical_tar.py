"""The tar walker and extractor on archives written by Python's tarfile, in every chunking."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from sentinel_backup.errors import RestoreFailed
from sentinel_backup.physical.extract import TarExtractor
from sentinel_backup.physical.facts import format_lsn, parse_label, parse_lsn, wal_file, wal_ranges
from sentinel_backup.streams.tar import CapturingReader, TarObserver, TarWalker

LABEL = (b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n"
         b"BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-03 08:01:47 UTC\nLABEL: x\n"
         b"START TIMELINE: 1\n")
MANIFEST = b'{"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]}'


def archive(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        folder = tarfile.TarInfo("base")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


MEMBERS = {"backup_label": LABEL, "base/1/1259": os.urandom(20000), "global/pg_control": b"c" * 8192,
           "empty": b"", "backup_manifest": MANIFEST}


@pytest.mark.parametrize("chunk", [1, 7, 511, 512, 513, 4096, 1 << 20])
def test_walker_captures_members_and_sees_the_end_in_any_chunking(chunk: int) -> None:
    data = archive(MEMBERS)
    walker = TarWalker(capture=("backup_label", "backup_manifest"))
    for start in range(0, len(data), chunk):
        walker.feed(data[start:start + chunk])
    assert walker.complete(), walker.detail()
    assert walker.captured == {"backup_label": LABEL, "backup_manifest": MANIFEST}
    assert walker.members == len(MEMBERS) + 1


def test_capturing_reader_fills_whole_chunks_from_a_real_pipe() -> None:
    """pg_basebackup writes its stdout in 4 KiB pieces: read1(n) gathers n bytes (less only at the end)."""
    data = archive(MEMBERS)
    read_fd, write_fd = os.pipe()
    writer = os.fork()
    if writer == 0:  # a child writing small pieces, as pg_basebackup does
        os.close(read_fd)
        for start in range(0, len(data), 4096):
            os.write(write_fd, data[start:start + 4096])
        os._exit(0)
    os.close(write_fd)
    walker = TarWalker(capture=("backup_label", "backup_manifest"))
    with os.fdopen(read_fd, "rb", buffering=0) as raw:
        reader = CapturingReader(raw, walker)  # type: ignore[arg-type]
        chunks = []
        while chunk := reader.read1(10000):
            chunks.append(chunk)
    os.waitpid(writer, 0)
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks[:-1]] == [10000] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= 10000
    assert walker.complete() and walker.captured["backup_manifest"] == MANIFEST


def test_a_truncated_archive_is_not_complete() -> None:
    data = archive(MEMBERS)
    end = (len(data.rstrip(b"\0")) + 511) // 512 * 512  # where the end-of-archive zero blocks begin
    for cut in (end + 512, end, len(data) // 2, 100):
        observer = TarObserver()
        observer.write(data[:cut])
        assert not observer.complete()
        assert "missing" in observer.detail() or "broken" in observer.detail()


def test_a_damaged_header_or_trailing_data_is_not_complete() -> None:
    data = bytearray(archive(MEMBERS))
    data[600] ^= 0xFF  # inside the second header
    walker = TarWalker()
    walker.feed(bytes(data))
    assert not walker.complete() and "checksum" in walker.detail()
    walker = TarWalker()
    walker.feed(archive(MEMBERS) + b"garbage")
    assert not walker.complete()


def test_extractor_writes_files_links_and_modes(tmp_path: Path) -> None:
    data = archive(MEMBERS, links={"pg_tblspc/16390": "/old/place"})
    root = tmp_path / "pgdata"
    root.mkdir()
    extractor = TarExtractor(root, {"16390": tmp_path / "ts"})
    for start in range(0, len(data), 333):
        extractor.write(data[start:start + 333])
    extractor.close()
    for name, content in MEMBERS.items():
        assert (root / name).read_bytes() == content
    assert (root / "base").stat().st_mode & 0o777 == 0o700
    assert os.readlink(root / "pg_tblspc" / "16390") == str(tmp_path / "ts")


def test_extractor_maps_tablespace_members_and_rewrites_the_map(tmp_path: Path) -> None:
    data = archive({"tablespace_map": b"16390 /old/place\n", "pg_tblspc/16390/PG_15_1/5/100": b"rows"},
                   links={"pg_tblspc/16390": "/old/place"})
    root = tmp_path / "pgdata"
    root.mkdir()
    extractor = TarExtractor(root, {"16390": tmp_path / "ts"})
    extractor.write(data)
    extractor.close()
    assert (tmp_path / "ts" / "PG_15_1" / "5" / "100").read_bytes() == b"rows"
    assert (root / "tablespace_map").read_text() == f"16390 {tmp_path / 'ts'}\n"


def test_extractor_refuses_names_outside_and_truncation(tmp_path: Path) -> None:
    with pytest.raises(RestoreFailed, match="outside"):
        TarExtractor(tmp_path).write(archive({"../evil": b"x"}))
    extractor = TarExtractor(tmp_path / "x")
    (tmp_path / "x").mkdir()
    data = archive(MEMBERS)
    extractor.write(data[:(len(data.rstrip(b"\0")) + 511) // 512 * 512])
    with pytest.raises(RestoreFailed, match="truncated"):
        extractor.close()


def test_facts_from_label_and_manifest() -> None:
    label = parse_label(LABEL.decode())
    assert (label.start_lsn, label.start_wal, label.timeline, label.label) == (0x2000028, "000000010000000000000002",
                                                                               1, "x")
    assert label.start_time is not None and label.start_time.isoformat() == "2026-12-03T08:01:47+00:00"
    assert wal_ranges(MANIFEST) == [(1, 0x2000028, 0x2000100)]
    assert format_lsn(parse_lsn("1/A0000028")) == "1/A0000028"
    assert wal_file(1, parse_lsn("0/2000100"), 16 << 20) == "000000010000000000000002"
    assert wal_file(2, parse_lsn("1/00100000"), 1 << 20) == "000000020000000100000001"
    assert wal_file(1, parse_lsn("0/FFFFFFFF"), 1 << 20) == "000000010000000000000FFF"  # 4096 segments of 1 MB per log
