"""`show` of a physical backup's manifest (kind "physical", PhysicalFacts): LSNs, timeline, WAL
range and the reachable time range, in JSON and in human form."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sentinel_backup.cli.commands.show import document, newest_wal, render
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.layout import Handle, key_for
from sentinel_backup.model.manifest import CompressionInfo, EncryptionInfo, Manifest, PhysicalFacts
from sentinel_backup.storage.local import LocalStorage


def physical_entry() -> Entry:
    start = datetime(2026, 11, 30, 2, 0, 0, tzinfo=UTC)
    stop = datetime(2026, 11, 30, 2, 4, 31, tzinfo=UTC)
    facts = PhysicalFacts(system_identifier="7441234567890123456", timeline=2, start_lsn="0/2000028",
                          stop_lsn="0/2000138", start_wal="000000020000000000000002",
                          stop_wal="000000020000000000000003", wal_segment_size=16 * 1024 * 1024,
                          start_time=start, stop_time=stop, parent_id="base_1", chain_root_id="base_1",
                          chain_position=1)
    manifest = Manifest(id="base_2", kind="physical", database="(cluster)", artifact="sentinel_base_x.tar.zst.age",
                        created_at=start, finished_at=stop, duration_seconds=271.0, tool_version="0.2.0",
                        hostname="db1", format="tar", compression=CompressionInfo(algorithm="zstd", level=3),
                        encryption=EncryptionInfo(method="age", key_id="age1abc"), raw_size_bytes=3 << 30,
                        raw_sha256="a" * 64, size_bytes=1 << 30, sha256="b" * 64, physical=facts)
    return Entry(manifest, {"s3": "basebackups/7441234567890123456/sentinel_base_x.tar.zst.age"})


def test_physical_facts_in_json() -> None:
    doc = document(physical_entry(), {}, {"s3": "s3://bucket/basebackups/7441234567890123456/x"})
    assert doc["physical"]["start_lsn"] == "0/2000028" and doc["physical"]["timeline"] == 2
    assert doc["reachable"] == {"from": "2026-11-30T02:04:31Z", "from_lsn": "0/2000138", "timeline": 2,
                                "to": "the newest WAL in the archive of system 7441234567890123456",
                                "newest_wal": None}
    assert doc["locations"] == {"s3": "s3://bucket/basebackups/7441234567890123456/x"}


def test_physical_facts_in_human_form(capsys: pytest.CaptureFixture[str]) -> None:
    render(document(physical_entry(), {}, {}))
    out = capsys.readouterr().out
    for expected in ("7441234567890123456", "0/2000028", "0/2000138",
                     "000000020000000000000002 .. 000000020000000000000003 (inside the backup)",
                     "from 2026-11-30 02:04:31 UTC (LSN 0/2000138, timeline 2)", "16.0 MiB",
                     "position 1 in the chain of base_1", "1.0 GiB (1073741824 bytes)", "age1abc"):
        assert expected in out, expected


def test_reachable_range_ends_at_the_newest_archived_segment(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sysid, sha = "7441234567890123456", "c" * 64
    for name in ("000000020000000000000003", "000000020000000000000007", "00000002.history",
                 "000000010000000000000009"):
        storage.put_bytes(key_for(Handle("wal", name, sysid, sha, ".zst")), b"x")
    storage.put_bytes(key_for(Handle("wal", "00000003000000000000000A", "1234", sha, ".zst")), b"x")  # another cluster
    newest = newest_wal([storage], sysid)
    assert newest == (2, "000000020000000000000007")
    doc = document(physical_entry(), {}, {}, newest_wal=newest)
    assert doc["reachable"]["newest_wal"] == "000000020000000000000007"
    assert "the end of WAL segment 000000020000000000000007" in doc["reachable"]["to"]
