"""wal-receive feeding the archive from a real server through pg_receivewal and a replication slot."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from sentinel_backup.model.layout import handle_for
from tests.helpers import cli, reap
from tests.plugins.archive import WAIT_SECONDS


@pytest.fixture
def small_segments() -> Iterator[TempCluster]:
    cluster = TempCluster(initdb_args=["--wal-segsize=1"])
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _switch(cluster: TempCluster) -> str:
    cluster.psql("CREATE TABLE IF NOT EXISTS ping (at timestamptz); INSERT INTO ping VALUES (now())")
    return cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")


def _archived(backup_dir: Path) -> dict[str, str]:
    """WAL name -> its key."""
    found = {}
    for path in (backup_dir / "wal").rglob("*"):
        handle = handle_for(str(path.relative_to(backup_dir)))
        if path.is_file() and handle is not None:
            found[handle.name] = str(path.relative_to(backup_dir))
    return found


def _receive(cluster: TempCluster, tmp_path: Path, *command: str) -> tuple[str, list[str], dict[str, str]]:
    """Run ``command`` (wal-receive, or schedule with WAL_RECEIVE_ENABLED) until three switched
    segments are archived, then SIGTERM it; its output and the segment names."""
    backup_dir = tmp_path / "backups"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "S3_", "MINIO_", "PG"))}
    env.update({**cluster.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(backup_dir), "COMPRESSION": "zstd",
                "WAL_RECEIVE_DIR": str(tmp_path / "staging"), "WAL_RECEIVE_SLOT": "sentinel_test",
                "LOG_LEVEL": "INFO", "WAL_RECEIVE_ENABLED": "true", "BACKUP_SCHEDULE": "0 3 1 1 *"})
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", *command], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while cluster.psql("SELECT count(*) FROM pg_stat_replication") != "1":
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "pg_receivewal never connected"
            time.sleep(0.2)
        names = [_switch(cluster) for _ in range(3)]
        while not set(names) <= set(_archived(backup_dir)):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, f"not archived: {names} vs {sorted(_archived(backup_dir))}"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT_SECONDS)
    finally:
        reap(proc)
    assert proc.returncode == 0, out
    return out, names, env


def test_wal_receive_streams_segments_into_the_archive_and_stops_cleanly(small_segments: TempCluster,
                                                                         tmp_path: Path) -> None:
    cluster = small_segments
    backup_dir, staging = tmp_path / "backups", tmp_path / "staging"
    out, names, env = _receive(cluster, tmp_path, "wal-receive")
    assert "wal-receive stopped" in out
    assert cluster.psql("SELECT slot_name FROM pg_replication_slots") == "sentinel_test"
    assert not [p for p in staging.iterdir() if not p.name.endswith(".partial")]  # pushed, then removed
    sysid = cluster.psql("SELECT system_identifier FROM pg_control_system()")
    for name in names:
        key = _archived(backup_dir)[name]
        assert key.startswith(f"wal/{sysid}/00000001/")
        plain = subprocess.run(["zstd", "-d", "-c", str(backup_dir / key)], capture_output=True, check=True).stdout
        assert hashlib.sha256(plain).hexdigest() == key.split(".")[1]

    # check (archive_mode is off here): the slot is reported, unused now, and the archive has no gap
    env["WAL_RECEIVE_ENABLED"] = "false"  # a standalone wal-receive service: the slot alone is enough
    checks = {c["name"]: c for c in cli(env, "check", "--json").json()["checks"]}
    assert checks["wal-receive slot"]["status"] == "warning" and "sentinel_test" in checks["wal-receive slot"]["detail"]
    assert checks["archiving"]["status"] == "ok" and "wal-receive" in checks["archiving"]["detail"]
    assert checks["wal archive local"]["status"] == "ok", checks["wal archive local"]


def test_schedule_runs_wal_receive_beside_its_jobs(small_segments: TempCluster, tmp_path: Path) -> None:
    out, names, _ = _receive(small_segments, tmp_path, "schedule")
    assert "wal-receive stopped" in out and "scheduler stopped" in out
    assert set(names) <= set(_archived(tmp_path / "backups"))
