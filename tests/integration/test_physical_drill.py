"""Drills of physical backups on a real PostgreSQL 18 archiving through the real ``wal-push``:
``verify --restore`` restores the chain into a scratch server and recovers to a restore point the
drill created between its two markers. Drills that pass, and drills that fail for the right
reason: a WAL segment removed from the archive (a gap), a corrupt base backup, a restore point
never reached (the archiver stopped working)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Result, cli
from tests.plugins.archive import ArchivingCluster, WalTool


def scratch_left() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("sentinel-drill-*"))


@pytest.fixture
def backed_up(archiving_cluster18: Callable[..., ArchivingCluster]) -> ArchivingCluster:
    """A full and an incremental backup, rows after each, archived."""
    archive = archiving_cluster18()
    archive.psql("CREATE TABLE items(id int primary key); INSERT INTO items SELECT generate_series(1, 500)")
    archive.psql("CREATE DATABASE second; ")
    archive.psql("CREATE TABLE other(x int); INSERT INTO other VALUES (1)", "second")
    assert cli(archive.values, "backup", "--physical").code == 0
    archive.psql("INSERT INTO items SELECT generate_series(501, 900)")
    time.sleep(1.1)
    done = cli(archive.values, "backup", "--physical", "--incremental")
    assert done.code == 0, done.output
    archive.psql("INSERT INTO items SELECT generate_series(901, 1000)")
    archive.wait_archived(archive.switch())
    return archive


def drill(archive: ArchivingCluster, tool: WalTool, *args: str, env: dict[str, str] | None = None) -> Result:
    return cli({**archive.values, **(env or {})}, "--env-file", str(archive.env_file), "verify", "latest",
               "--physical", "--restore", "--tool-command", " ".join(tool.argv), *args)


def test_a_drill_passes_records_rto_and_rpo_and_cleans_a_leftover(backed_up: ArchivingCluster, wal_tool: WalTool,
                                                                  tmp_path: Path) -> None:
    archive = backed_up
    leftover = Path(tempfile.mkdtemp(prefix="sentinel-drill-999999-"))  # a killed drill's (no such process)
    (leftover / "data").mkdir()
    checks = tmp_path / "checks.sql"
    checks.write_text("SELECT count(*) = 1000 FROM items;\nSELECT true")
    metrics = tmp_path / "metrics.prom"
    result = drill(archive, wal_tool, env={"DRILL_SQL_FILE": str(checks), "METRICS_FILE": str(metrics)})
    assert result.code == 0, result.output
    assert "PASSED" in result.stdout and "marker A present, B absent" in result.stdout
    assert not leftover.exists() and scratch_left() == []
    newest = cli(archive.values, "list", "--json").json()[0]
    record = newest["drill"]
    assert record["passed"] is True and record["restore_seconds"] > 0 and record["recovery_seconds"] > 0
    assert record["reached_time"] and record["restore_point"].startswith("sentinel_drill_")
    assert record["tables_checked"] >= 3  # items, the marker table, other in database second
    assert [c["ok"] for c in record["checks"]] == [True, True, True]
    assert 'sentinel_backup_drill_success{database="(cluster)"} 1' in metrics.read_text()
    # the source holds the marker rows of the last drill: A and B
    assert archive.psql("SELECT string_agg(phase, ',' ORDER BY phase) FROM sentinel_drill.marker") == "A,B"


def test_a_gap_in_the_archive_fails_the_drill(backed_up: ArchivingCluster, wal_tool: WalTool) -> None:
    archive = backed_up
    newest = cli(archive.values, "list", "--json").json()[0]
    start = newest["physical"]["start_wal"]
    folder = archive.backup_dir / "wal" / archive.system_id() / start[:8]
    segments = sorted(p for p in folder.iterdir() if p.name[:24] > start and len(p.name.split(".")[0]) == 24
                      and ".backup." not in p.name)
    segments[0].unlink()
    result = drill(archive, wal_tool)
    assert result.code == 1 and "FAILED" in result.stdout and "has a gap" in result.stdout, result.output
    assert segments[0].name[:24] in result.stdout
    assert scratch_left() == []


def test_a_corrupt_base_backup_fails_the_drill(backed_up: ArchivingCluster, wal_tool: WalTool) -> None:
    archive = backed_up
    root = cli(archive.values, "list", "--json").json()[-1]
    artifact = archive.backup_dir / root["artifact"]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 3] ^= 0x55
    artifact.write_bytes(bytes(data))
    result = drill(archive, wal_tool)
    assert result.code == 1 and "FAILED" in result.stdout, result.output
    assert f"chain member {root['id']}" in result.stdout
    assert scratch_left() == []
    assert cli(archive.values, "list", "--json").json()[0]["drill"]["passed"] is False


def test_a_restore_point_never_reached_fails_the_drill(backed_up: ArchivingCluster, wal_tool: WalTool) -> None:
    archive = backed_up
    archive.psql("ALTER SYSTEM SET archive_command = '/bin/false'; SELECT pg_reload_conf()")
    result = drill(archive, wal_tool)
    assert result.code == 1 and "FAILED" in result.stdout, result.output
    assert "was never reached" in result.stdout
    assert scratch_left() == []
    assert not [p for p in Path(tempfile.gettempdir()).glob("sentinel-combine-*") if p.stat().st_uid == os.getuid()]
