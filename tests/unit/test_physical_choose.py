"""Which base backup a physical restore starts from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sentinel_backup.errors import ConfigError, NotFound
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.manifest import CompressionInfo, Manifest, PhysicalFacts
from sentinel_backup.physical.restore import Target, choose_base, parse_target_time

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def base(hours: int, stop_lsn: str, sysid: str = "7000000000000000001") -> Entry:
    moment = T0 + timedelta(hours=hours)
    facts = PhysicalFacts(system_identifier=sysid, timeline=1, start_lsn="0/1000028", stop_lsn=stop_lsn,
                          start_wal="000000010000000000000001", stop_wal="000000010000000000000001",
                          wal_segment_size=1 << 20, stop_time=moment + timedelta(minutes=5))
    manifest = Manifest(id=f"base_{hours}", kind="physical", database="(cluster)", artifact=f"a{hours}",
                        created_at=moment, finished_at=moment, duration_seconds=1, tool_version="t", hostname="h",
                        compression=CompressionInfo(algorithm="gzip", level=6), raw_size_bytes=1, raw_sha256="",
                        size_bytes=1, sha256="", physical=facts, format="tar")
    return Entry(manifest, {"local": manifest.artifact})


NEWEST_FIRST = [base(48, "0/9000000"), base(24, "0/5000000"), base(0, "0/2000000")]


def test_newest_base_that_precedes_the_target() -> None:
    assert choose_base(NEWEST_FIRST, "latest", Target()).id == "base_48"
    assert choose_base(NEWEST_FIRST, "latest", Target(time=T0 + timedelta(hours=30))).id == "base_24"
    assert choose_base(NEWEST_FIRST, "latest", Target(time=T0 + timedelta(hours=24, minutes=2))).id == "base_0"
    assert choose_base(NEWEST_FIRST, "latest", Target(lsn="0/6000000")).id == "base_24"
    assert choose_base(NEWEST_FIRST, "base_0", Target()).id == "base_0"
    with pytest.raises(NotFound, match="precedes"):
        choose_base(NEWEST_FIRST, "latest", Target(time=T0))


def test_targets_are_checked() -> None:
    with pytest.raises(ConfigError, match="at most one"):
        Target(name="x", lsn="0/1")
    with pytest.raises(ConfigError, match="not an LSN"):
        Target(lsn="yesterday")
    with pytest.raises(ConfigError, match="time zone"):
        parse_target_time("2026-12-02 17:58:00")
    assert parse_target_time("2026-12-02 17:58:00+00:00") == datetime(2026, 12, 2, 17, 58, tzinfo=UTC)
    assert Target(time=T0, action="pause").settings() == {"recovery_target_time": "2026-12-02 12:00:00+00:00",
                                                           "recovery_target_action": "pause"}


def test_two_clusters_need_an_id() -> None:
    with pytest.raises(ConfigError, match="2 clusters"):
        choose_base([base(1, "0/3000000", "7000000000000000002"), *NEWEST_FIRST], "latest", Target())
