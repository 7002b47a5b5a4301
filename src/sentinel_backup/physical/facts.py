"""What a base backup is, read from the stream itself: ``backup_label`` and ``backup_manifest``.

``backup_label`` (every version) names the start LSN, its WAL file, the timeline and the
start time; PostgreSQL's ``backup_manifest`` (13+; inside the tar with ``-D -`` from 15 on)
names the WAL range the backup needs (``WAL-Ranges``: timeline, start and end LSN). The stop
LSN and its WAL file come from there; the stop time is the server's clock read right after
``pg_basebackup`` ended (an upper bound of the moment the backup became consistent, which is
what "can reach" needs).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sentinel_backup.errors import BackupFailed

_LABEL_START = re.compile(r"^START WAL LOCATION: (?P<lsn>[0-9A-F]+/[0-9A-F]+) \(file (?P<file>[0-9A-F]{24})\)", re.M)
_LABEL_TIME = re.compile(r"^START TIME: (?P<time>.+)$", re.M)
_LABEL_TLI = re.compile(r"^START TIMELINE: (?P<tli>\d+)", re.M)
_LABEL_LABEL = re.compile(r"^LABEL: (?P<label>.*)$", re.M)
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    match = _LSN.match(text.strip())
    if match is None:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def wal_file(timeline: int, lsn: int, segment_size: int) -> str:
    """The WAL file name holding ``lsn`` (as ``pg_walfile_name``: an LSN at a segment's first
    byte belongs to that segment)."""
    segment = lsn // segment_size
    per_log = 0x100000000 // segment_size
    return f"{timeline:08X}{segment // per_log:08X}{segment % per_log:08X}"


def wal_segment_number(name: str, segment_size: int) -> int:
    """The absolute segment number of a 24-hex-digit WAL file name (timeline ignored)."""
    per_log = 0x100000000 // segment_size
    return int(name[8:16], 16) * per_log + int(name[16:24], 16)


@dataclass(frozen=True)
class LabelFacts:
    start_lsn: int
    start_wal: str
    timeline: int
    start_time: datetime | None
    label: str


def parse_label(text: str) -> LabelFacts:
    start = _LABEL_START.search(text)
    tli = _LABEL_TLI.search(text)
    if start is None:
        raise BackupFailed("backup_label has no START WAL LOCATION", "this pg_basebackup output is not understood;"
                           " report it with the PostgreSQL version")
    timeline = int(tli.group("tli")) if tli else int(start.group("file")[:8], 16)
    when = _LABEL_TIME.search(text)
    label = _LABEL_LABEL.search(text)
    return LabelFacts(parse_lsn(start.group("lsn")), start.group("file"), timeline,
                      parse_time(when.group("time")) if when else None, label.group("label") if label else "")


def parse_time(text: str) -> datetime | None:
    """``2026-12-03 08:01:47 UTC`` (backup_label) or ``2026-12-03 08:01:47+00`` (SQL)."""
    text = text.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S %Z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S.%f%z"):
        try:
            moment = datetime.strptime(text.replace("GMT", "UTC"), fmt)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment
    return None


def wal_ranges(manifest: bytes) -> list[tuple[int, int, int]]:
    """(timeline, start LSN, end LSN) of ``WAL-Ranges`` in PostgreSQL's backup_manifest."""
    try:
        doc = json.loads(manifest)
        return [(int(r["Timeline"]), parse_lsn(r["Start-LSN"]), parse_lsn(r["End-LSN"]))
                for r in doc.get("WAL-Ranges", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupFailed(f"backup_manifest cannot be read: {exc}",
                           "report this with the PostgreSQL version") from None
