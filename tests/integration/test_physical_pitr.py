"""Point-in-time recovery end to end: a PostgreSQL 15 cluster (1 MB segments) archiving through
the real ``wal-push`` (run as the postgres OS user), base backups through ``backup --physical``,
restores through ``restore --physical`` whose ``restore_command`` calls the real ``wal-fetch``;
every restored copy is started as a real server and counted exactly."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sentinel_backup.demo.cluster import free_port
from tests.helpers import Result, cli
from tests.plugins.archive import ArchivingCluster, WalTool, give_to_postgres

PG = Path("/usr/lib/postgresql/15/bin")


class Restored:
    """A restored copy running on a private socket."""

    def __init__(self, pgdata: Path, port: int) -> None:
        self.pgdata, self.port = pgdata, port

    def sql(self, sql: str) -> str:
        socket_dir = (self.pgdata / "postmaster.pid").read_text().splitlines()[4]
        proc = subprocess.run([str(PG / "psql"), "-X", "-A", "-t", "-q", "-h", socket_dir, "-p", str(self.port), "-U",
                               "postgres", "-d", "postgres", "-c", sql], capture_output=True, text=True, check=True)
        return proc.stdout.strip()

    def stop(self) -> None:
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*run_as, str(PG / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False)


def restore(archive: ArchivingCluster, tool: WalTool, pgdata: Path, *args: str) -> tuple[Result, Restored]:
    port = free_port()
    result = cli(archive.values, "--env-file", str(archive.env_file), "restore", "--physical", *args, "--pgdata",
                 str(pgdata), "--start", str(port), "--keep-running", "--tool-command", " ".join(tool.argv))
    assert result.code == 0, result.output + "\n" + _log(pgdata)
    return result, Restored(pgdata, port)


def _log(pgdata: Path) -> str:
    log = pgdata / "sentinel-restore.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def count(restored: Restored) -> int:
    try:
        return int(restored.sql("SELECT count(*) FROM items"))
    finally:
        restored.stop()


def shared_backup_dir(archive: ArchivingCluster) -> ArchivingCluster:
    """BACKUP_DIR owned by postgres, so that wal-push (run by PostgreSQL as postgres) and the
    backups run here as root share it (docs/operations.md: one owner for BACKUP_DIR)."""
    archive.backup_dir.mkdir(exist_ok=True)
    give_to_postgres(archive.backup_dir, 0o700)
    return archive


def insert(archive: ArchivingCluster, first: int, last: int) -> None:
    archive.psql(f"INSERT INTO items SELECT generate_series({first}, {last})")


def flush(archive: ArchivingCluster) -> None:
    """Finish the current segment and wait until the archive holds it."""
    archive.wait_archived(archive.switch())


def test_pitr_to_a_time_a_restore_point_the_end_and_after_a_timeline_switch(
        archiving_cluster: Callable[..., ArchivingCluster], wal_tool: WalTool, work: Path) -> None:
    archive = shared_backup_dir(archiving_cluster())
    archive.psql("CREATE TABLE items(id int)")
    insert(archive, 1, 100)
    done = cli(archive.values, "backup", "--physical")
    assert done.code == 0, done.output
    insert(archive, 101, 200)
    moment = archive.psql("SELECT clock_timestamp()")
    time.sleep(0.05)  # the next commit is strictly later than the recorded time
    insert(archive, 201, 300)
    archive.psql("SELECT pg_create_restore_point('before_400')")
    insert(archive, 301, 400)
    flush(archive)

    _, at_time = restore(archive, wal_tool, work / "at-time", "--target-time", moment.replace(" ", "T"))
    assert count(at_time) == 200
    result, at_name = restore(archive, wal_tool, work / "at-name", "--target-name", "before_400",
                              "--target-action", "pause")
    assert "Recovery ended (paused)" in result.stdout
    assert at_name.sql("SELECT pg_is_in_recovery()") == "t"
    assert count(at_name) == 300
    result, at_end = restore(archive, wal_tool, work / "at-end")
    assert "Recovery ended (promoted)" in result.stdout
    assert count(at_end) == 400

    # A PITR that promoted timeline 2 and archives into the same archive (a real replacement).
    _, replacement = restore(archive, wal_tool, work / "replacement", "--target-time", moment.replace(" ", "T"),
                             "--keep-archiving")
    try:
        assert replacement.sql("SELECT timeline_id FROM pg_control_checkpoint()") in ("1", "2")
        replacement.sql("INSERT INTO items SELECT generate_series(1001, 1050)")
        finished = replacement.sql("SELECT pg_walfile_name(pg_switch_wal())")
        assert finished.startswith("00000002")
        while replacement.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < finished:
            time.sleep(0.2)
    finally:
        replacement.stop()
    sysid = archive.system_id()
    assert list((archive.backup_dir / "wal" / sysid / "00000002").glob("00000002.history.*"))
    _, followed = restore(archive, wal_tool, work / "followed")
    assert followed.sql("SELECT timeline_id FROM pg_control_checkpoint()") == "3"  # promoted once more
    assert count(followed) == 250


def test_pitr_with_s3_only_and_age(archiving_cluster: Callable[..., ArchivingCluster], wal_tool: WalTool,
                                   s3_server: object, s3_bucket: str, work: Path) -> None:
    keys = wal_tool.folder("keys")
    identity = keys / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True,
                               check=True).stdout.strip()
    wal_tool.secret_file(keys, "identity.txt", identity.read_bytes())
    values = {**s3_server.s3_env(s3_bucket), "LOCAL_ENABLED": "false",  # type: ignore[attr-defined]
              "ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age", "AGE_RECIPIENTS": recipient,
              "AGE_IDENTITY_FILE": str(identity)}
    archive = shared_backup_dir(archiving_cluster(values))
    archive.psql("CREATE TABLE items(id int)")
    insert(archive, 1, 70)
    done = cli(archive.values, "backup", "--physical")
    assert done.code == 0, done.output
    (entry,) = cli(archive.values, "list", "--json").json()
    assert entry["destinations"] == ["s3"] and entry["artifact"].endswith(".tar.zst.age")
    assert not list(archive.backup_dir.rglob("sentinel_base_*"))
    insert(archive, 71, 130)
    flush(archive)
    result, restored = restore(archive, wal_tool, work / "restored")
    assert "from s3" in result.stdout
    assert count(restored) == 130


def test_retention_keeps_exactly_the_wal_kept_backups_need(
        archiving_cluster: Callable[..., ArchivingCluster], wal_tool: WalTool, work: Path) -> None:
    archive = shared_backup_dir(archiving_cluster())
    archive.psql("CREATE TABLE items(id int)")
    insert(archive, 1, 10)
    assert cli(archive.values, "backup", "--physical").code == 0
    for _ in range(3):
        flush(archive)
    time.sleep(1.1)  # the next base backup gets its own second-stamped name
    insert(archive, 11, 20)
    assert cli(archive.values, "backup", "--physical").code == 0
    insert(archive, 21, 30)
    flush(archive)
    listed = cli(archive.values, "list", "--json").json()
    newer, older = listed
    start = newer["physical"]["start_wal"]
    sysid = archive.system_id()
    folder = archive.backup_dir / "wal" / sysid / "00000001"
    segments = sorted(p.name.split(".")[0] for p in folder.iterdir() if len(p.name.split(".")[0]) == 24
                      and ".backup." not in p.name)
    before = [s for s in segments if s < start]
    assert before and start in segments

    env = {**archive.values, "RETENTION_KEEP_LAST": "1"}
    dry = cli(env, "prune", "--dry-run")
    assert dry.code == 0, dry.output
    assert f"WAL remove {sysid} timeline 1: {before[0]} .. {before[-1]}" in dry.stdout
    assert f"WAL keep {sysid} timeline 1: {start} .." in dry.stdout
    assert len(list(folder.iterdir())) >= len(segments)  # nothing deleted by a dry run
    pruned = cli(env, "prune")
    assert pruned.code == 0, pruned.output
    (kept,) = cli(archive.values, "list", "--json").json()
    assert kept["id"] == newer["id"] and older["id"] != newer["id"]
    left = sorted(p.name.split(".")[0] for p in folder.iterdir() if ".backup." not in p.name)
    assert left == [s for s in segments if s >= start]
    stamp = older["id"].removeprefix("base_")
    assert not list((archive.backup_dir / "basebackups").rglob(f"*{stamp}*"))  # removed whole
    _, restored = restore(archive, wal_tool, work / "restored")
    assert count(restored) == 30
