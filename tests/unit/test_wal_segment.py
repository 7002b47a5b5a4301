"""WAL file anatomy: headers, names, positions and gaps, for any segment size."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sentinel_backup.wal.segment import (
    WalFileError,
    check_segment,
    control_system_id,
    is_segment,
    missing_segments,
    parse_header,
    segment_name,
    segment_number,
)

MB = 1 << 20


def header(*, sysid: int = 7714987486134324860, tli: int = 1, pageaddr: int = 6 * MB, seg_size: int = MB,
           blcksz: int = 8192, info: int = 0x0002) -> bytes:
    return struct.pack("<HHIQI4xQII", 0xD110, info, tli, pageaddr, 0, sysid, seg_size, blcksz)


def test_long_header_fields() -> None:
    parsed = parse_header(header())
    assert parsed.system_id == 7714987486134324860 and parsed.segment_size == MB and parsed.timeline == 1
    assert parsed.page_address == 6 * MB and parsed.block_size == 8192


@pytest.mark.parametrize("bad", [header(info=0), header(seg_size=3 * MB), header(seg_size=1024),
                                 header(blcksz=1000), header(sysid=0), b"\0" * 20])
def test_not_a_long_header(bad: bytes) -> None:
    with pytest.raises(WalFileError):
        parse_header(bad)


def test_check_segment_matches_name_size_and_position() -> None:
    check_segment(parse_header(header()), "000000010000000000000006", MB)
    with pytest.raises(WalFileError, match="is 1000 bytes"):
        check_segment(parse_header(header()), "000000010000000000000006", 1000)
    with pytest.raises(WalFileError, match="not the one its name says"):
        check_segment(parse_header(header()), "000000010000000000000007", MB)


@pytest.mark.parametrize("size", [MB, 16 * MB, 1 << 30])
def test_names_and_numbers_round_trip(size: int) -> None:
    per_log = 0x100000000 // size
    for number in (0, 1, per_log - 1, per_log, per_log + 5, 3 * per_log + 7):
        name = segment_name(2, number, size)
        assert segment_number(name, size) == (2, number)
    assert segment_name(1, per_log, size) == "000000010000000100000000"


def test_16mb_names_are_the_familiar_ones() -> None:
    assert segment_number("0000000100000001000000FF", 16 * MB) == (1, 256 + 255)
    assert segment_name(1, 256 + 255 + 1, 16 * MB) == "000000010000000200000000"


def test_is_segment() -> None:
    assert is_segment("000000010000000000000006")
    assert not is_segment("000000010000000000000006.partial")
    assert not is_segment("00000002.history")
    assert not is_segment("000000010000000000000006.00000028.backup")


def test_gaps_are_found_per_timeline_with_the_real_segment_size() -> None:
    size = MB  # 4096 segments per "log": names roll over at 000000001000
    names = ["000000010000000000000FFE", "000000010000000100000001", "00000002.history",
             "000000020000000100000001", "000000020000000100000003", "000000010000000000000FFF.partial"]
    assert missing_segments(names, size) == ["000000010000000000000FFF",  # a .partial is no segment
                                             "000000010000000100000000", "000000020000000100000002"]
    # with 16 MB segments the same names are 256 per log apart: a huge gap, cut at the limit
    assert len(missing_segments(names, 16 * MB, limit=10)) == 10


def test_gaps_against_a_given_range() -> None:
    names = ["000000010000000000000005", "000000010000000000000006"]
    assert missing_segments(names, MB, first="000000010000000000000003", last="000000010000000000000008") == [
        "000000010000000000000003", "000000010000000000000004", "000000010000000000000007",
        "000000010000000000000008"]
    assert missing_segments([], MB) == []


def test_system_id_from_pg_control(tmp_path: Path) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(struct.pack("<Q", 1234567890123) + b"\0" * 100)
    assert control_system_id(tmp_path) == 1234567890123
    with pytest.raises(WalFileError, match="cannot read the system identifier") as caught:
        control_system_id(tmp_path / "nowhere")
    assert "--system-id" in (caught.value.hint or "")
