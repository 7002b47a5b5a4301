"""What a WAL file says about itself: the cluster it belongs to, its timeline, its position.

A WAL segment starts with a long page header (``XLogLongPageHeaderData``, little-endian on
every platform PostgreSQL archives from here)::

    0  uint16 xlp_magic      2  uint16 xlp_info (XLP_LONG_HEADER = 0x0002)
    4  uint32 xlp_tli        8  uint64 xlp_pageaddr (LSN of the segment's first byte)
    16 uint32 xlp_rem_len    24 uint64 xlp_sysid     32 uint32 xlp_seg_size   36 uint32 xlp_xlog_blcksz

``.history`` and ``.backup`` files carry no system identifier: it is read from
``global/pg_control`` (its first 8 bytes) of the data directory the command runs in
(``archive_command`` and ``restore_command`` run with the data directory as working folder).

Segment names: ``TTTTTTTTXXXXXXXXYYYYYYYY`` = timeline, then the segment number split in
"log" and "seg" parts with ``0x100000000 // segment size`` segments per log. Nothing here
assumes 16 MB: the size comes from the header (or ``SHOW wal_segment_size``).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from sentinel_backup.errors import SentinelError

LONG_HEADER_SIZE = 40
XLP_LONG_HEADER = 0x0002
MIN_SEG_SIZE = 1 << 20
MAX_SEG_SIZE = 1 << 30
_SEGMENT = re.compile(r"^(?P<tli>[0-9A-F]{8})(?P<log>[0-9A-F]{8})(?P<seg>[0-9A-F]{8})(?P<suffix>\.partial)?$")


class WalFileError(SentinelError):
    """The file handed to wal-push is not a WAL file of a cluster this tool can identify."""


@dataclass(frozen=True)
class SegmentHeader:
    timeline: int
    page_address: int
    system_id: int
    segment_size: int
    block_size: int


def parse_header(head: bytes, what: str = "WAL segment") -> SegmentHeader:
    """The long page header at the start of a segment; WalFileError when it is not one."""
    if len(head) < LONG_HEADER_SIZE:
        raise WalFileError(f"{what} is too short to hold a WAL page header ({len(head)} bytes)",
                           "archive_command must pass %p (the path of a complete WAL file)")
    _magic, info, tli, pageaddr, _rem = struct.unpack_from("<HHIQI", head, 0)
    sysid, seg_size, blcksz = struct.unpack_from("<QII", head, 24)
    valid_size = MIN_SEG_SIZE <= seg_size <= MAX_SEG_SIZE and seg_size & (seg_size - 1) == 0
    valid_block = 1024 <= blcksz <= 65536 and blcksz & (blcksz - 1) == 0
    if not info & XLP_LONG_HEADER or not valid_size or not valid_block or sysid == 0:
        raise WalFileError(f"{what} does not start with a WAL long page header",
                           "the file is not a WAL segment, or it is damaged; check pg_wal")
    return SegmentHeader(tli, pageaddr, sysid, seg_size, blcksz)


def segment_number(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a segment name (``.partial`` allowed)."""
    match = _SEGMENT.match(name)
    if match is None:
        raise ValueError(f"not a WAL segment name: {name!r}")
    per_log = 0x100000000 // segment_size
    return int(match["tli"], 16), int(match["log"], 16) * per_log + int(match["seg"], 16)


def segment_name(timeline: int, number: int, segment_size: int) -> str:
    per_log = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def is_segment(name: str) -> bool:
    """A full segment name (no .partial, .history, .backup)."""
    match = _SEGMENT.match(name)
    return match is not None and match["suffix"] is None


def check_segment(header: SegmentHeader, name: str, size: int) -> None:
    """The header must describe the segment the name says, and the file must be whole."""
    timeline, number = segment_number(name, header.segment_size)
    if size != header.segment_size:
        raise WalFileError(f"{name} is {size} bytes, but its header says segments are {header.segment_size} bytes",
                           "only complete segments are archived; check pg_wal (a truncated or damaged file)")
    if header.page_address != number * header.segment_size:
        raise WalFileError(f"{name} holds the segment at {header.page_address:X}, not the one its name says",
                           "the file was renamed or is damaged; never archive a file under another name")
    del timeline  # a segment switched to a new timeline may start with a page of the old one


def control_system_id(data_dir: Path) -> int:
    """The system identifier of a data directory, from ``global/pg_control``."""
    path = data_dir / "global" / "pg_control"
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError as exc:
        raise WalFileError(f"cannot read the system identifier from {path}: {exc.strerror}",
                           "run the command in the data directory (archive_command and restore_command do),"
                           " or pass --system-id") from None
    if len(head) < 8 or (sysid := struct.unpack("<Q", head)[0]) == 0:
        raise WalFileError(f"{path} holds no system identifier", "pass --system-id")
    return int(sysid)


def missing_segments(names: list[str], segment_size: int, first: str | None = None,
                     last: str | None = None, *, limit: int = 1000) -> list[str]:
    """Segment names absent between ``first`` and ``last`` (default: the lowest and highest
    segment in ``names``), per timeline, in order; at most ``limit`` of them. Names that are
    not full segments (.history, .backup, .partial) are ignored."""
    by_timeline: dict[int, set[int]] = {}
    for name in names:
        if is_segment(name):
            tli, number = segment_number(name, segment_size)
            by_timeline.setdefault(tli, set()).add(number)
    start = segment_number(first, segment_size) if first else None
    end = segment_number(last, segment_size) if last else None
    gaps: list[str] = []
    for tli in sorted(by_timeline):
        present = by_timeline[tli]
        low = start[1] if start and start[0] == tli else min(present)
        high = end[1] if end and end[0] == tli else max(present)
        for number in range(low, high + 1):
            if number not in present:
                gaps.append(segment_name(tli, number, segment_size))
                if len(gaps) >= limit:
                    return gaps
    return gaps
