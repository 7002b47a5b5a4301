"""Incremental base backups on a real PostgreSQL 18 (summarize_wal = on, WAL archived through the
real ``wal-push``): full, changes, incremental, more changes, incremental; restores of the chain
through ``pg_combinebackup`` to the latest point and to a time between the two incrementals,
each started as a real server and counted exactly; a deleted or corrupt chain member refused
before anything is written; the clear refusal on PostgreSQL 15.

The chain is built once per module on one archiving cluster (``built_chain``); a test that only
reads it, or puts back what it damages, uses it as it is (``chain``), and a test that adds or
prunes backups works on a private copy of its BACKUP_DIR (``chain_copy``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from sentinel_backup.interrupt import process_alive
from sentinel_backup.physical.incremental import SCRATCH_PREFIX
from tests.helpers import cli
from tests.integration.test_physical_pitr import count, restore
from tests.plugins.archive import ArchivingCluster, WalTool


def insert(archive: ArchivingCluster, first: int, last: int) -> None:
    archive.psql(f"INSERT INTO items SELECT g, md5(g::text) FROM generate_series({first}, {last}) g")


def leftover_scratch() -> list[Path]:
    """Chain scratch folders whose restore has ended (a live pid is another test's restore running
    beside this one on the other xdist worker, not a leftover)."""
    return [p for p in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")
            if not process_alive(int(p.name[len(SCRATCH_PREFIX):].split("-")[0]))]


def backup(archive: ArchivingCluster, *args: str) -> None:
    time.sleep(1.1)  # each base backup gets its own second-stamped name
    done = cli(archive.values, "backup", *args)
    assert done.code == 0, done.output


@pytest.fixture(scope="module")
def built_chain(shared_archiving18: ArchivingCluster) -> tuple[ArchivingCluster, str]:
    """full (1..1000), incremental (..2000), incremental (..3000, then 3001..3500 only archived);
    returns the archive and a time between the two incrementals (2000 rows, before 2001..2500)."""
    archive = shared_archiving18
    archive.psql("CREATE TABLE items(id int primary key, note text)")
    insert(archive, 1, 1000)
    backup(archive, "--physical")
    insert(archive, 1001, 2000)
    archive.psql("UPDATE items SET note = 'changed' WHERE id % 97 = 0")
    backup(archive, "--physical", "--incremental")
    moment = archive.psql("SELECT clock_timestamp()")
    time.sleep(0.05)
    insert(archive, 2001, 3000)
    archive.psql("DELETE FROM items WHERE id BETWEEN 10 AND 19")
    backup(archive, "--incremental")
    insert(archive, 3001, 3500)
    archive.wait_archived(archive.switch())
    return archive, moment


@pytest.fixture
def chain(built_chain: tuple[ArchivingCluster, str]) -> tuple[ArchivingCluster, str]:
    """The module's chain, for a test that leaves it as it found it."""
    return built_chain


@pytest.fixture
def chain_copy(built_chain: tuple[ArchivingCluster, str], tmp_path: Path) -> tuple[ArchivingCluster, str]:
    """The module's chain with a private copy of its BACKUP_DIR (backups and WAL archive), for a
    test that adds or removes backups; the server is the same."""
    archive, moment = built_chain
    folder = tmp_path / "backups"
    shutil.copytree(archive.backup_dir, folder, ignore=shutil.ignore_patterns(".*"))  # no temporary files
    copy = ArchivingCluster(archive.tool, archive.folder, archive.env_file, {**archive.values,
                                                                             "BACKUP_DIR": str(folder)})
    copy.cluster = archive.cluster
    return copy, moment


def test_chain_backup_list_and_restores(chain: tuple[ArchivingCluster, str], wal_tool: WalTool,
                                        work: Path) -> None:
    archive, moment = chain
    listed = cli(archive.values, "list", "--json").json()
    newest, middle, root = listed
    assert [e["physical"]["chain_position"] for e in listed] == [2, 1, 0]
    assert newest["physical"]["parent_id"] == middle["id"] and middle["physical"]["parent_id"] == root["id"]
    assert newest["physical"]["chain_root_id"] == root["id"] == middle["physical"]["chain_root_id"]
    assert newest["size_bytes"] < root["size_bytes"]  # only the changed blocks
    text = cli(archive.values, "list").stdout
    assert f"incremental 2 of {root['id']}" in text

    result, latest = restore(archive, wal_tool, work / "latest")
    assert "combined a chain of 3" in result.stdout
    try:
        assert latest.sql("SELECT count(*), count(*) FILTER (WHERE note = 'changed') FROM items") == "3490|20"
    finally:
        latest.stop()
    assert not leftover_scratch()  # scratch removed

    result, between = restore(archive, wal_tool, work / "between", "--target-time", moment.replace(" ", "T"))
    assert "combined a chain of 2" in result.stdout
    assert count(between) == 2000


def test_a_missing_or_corrupt_member_is_refused_before_anything_is_written(
        chain: tuple[ArchivingCluster, str], wal_tool: WalTool, work: Path) -> None:
    archive, _ = chain
    _, middle, _ = cli(archive.values, "list", "--json").json()
    artifact = Path(middle["locations"]["local"]["path"])
    artifact = artifact if artifact.is_absolute() else archive.backup_dir / artifact
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    original = artifact.read_bytes()
    artifact.write_bytes(bytes(data))
    try:
        refused = cli(archive.values, "restore", "--physical", "latest", "--pgdata", str(work / "corrupt"),
                      "--tool-command", " ".join(wal_tool.argv))
    finally:
        artifact.write_bytes(original)
    assert refused.code != 0 and f"chain member {middle['id']}" in refused.stderr, refused.output
    assert "Traceback" not in refused.output and not (work / "corrupt").exists()

    aside = artifact.with_name(f".aside-{artifact.name}")
    artifact.rename(aside)
    try:
        refused = cli(archive.values, "restore", "--physical", "latest", "--pgdata", str(work / "missing"),
                      "--tool-command", " ".join(wal_tool.argv))
    finally:
        aside.rename(artifact)
    assert refused.code != 0 and f"chain member {middle['id']} is missing" in refused.stderr, refused.output
    assert not (work / "missing").exists()
    assert not leftover_scratch()


def test_postgresql_15_refuses_incremental_naming_the_version(cluster15: TempCluster, tmp_path: Path) -> None:
    env = {**cluster15.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(tmp_path / "backups")}
    refused = cli(env, "backup", "--physical", "--incremental")
    assert refused.code == 2, refused.output
    assert "PostgreSQL 17 or newer" in refused.stderr and "PostgreSQL 15" in refused.stderr
    assert "Traceback" not in refused.output
    assert not list((tmp_path / "backups").rglob("sentinel_base_*"))


def test_summarize_wal_off_is_refused_with_the_fix(pg18: TempCluster, tmp_path: Path) -> None:
    env = {**pg18.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(tmp_path / "backups")}
    refused = cli(env, "backup", "--physical", "--incremental")
    assert refused.code == 2, refused.output
    assert "summarize_wal = on" in refused.stderr and "ALTER SYSTEM SET summarize_wal" in refused.stderr
    checked = cli({**env, "PHYSICAL_INCREMENTAL": "true"}, "check")
    assert checked.code != 0
    line = next(line for line in checked.output.splitlines() if "incremental backups" in line)
    assert "summarize_wal = on" in line and "CRITICAL" in line.upper(), checked.output
    pg18.psql("ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()")
    try:
        checked = cli({**env, "PHYSICAL_INCREMENTAL": "true"}, "check")
        line = next(line for line in checked.output.splitlines() if "incremental backups" in line)
        assert "PostgreSQL 18" in line and "CRITICAL" not in line.upper(), checked.output
    finally:
        pg18.psql("ALTER SYSTEM RESET summarize_wal; SELECT pg_reload_conf()")


@pytest.fixture(scope="module")
def cluster15() -> Iterator[TempCluster]:
    with TempCluster() as pg:
        yield pg


def test_retention_removes_a_chain_whole_newest_first(chain_copy: tuple[ArchivingCluster, str]) -> None:
    archive, _ = chain_copy
    old = [e["id"] for e in cli(archive.values, "list", "--json").json()]
    backup(archive, "--physical")  # a new chain (a full backup)
    env = {**archive.values, "RETENTION_KEEP_LAST": "1"}
    dry = cli(env, "prune", "--dry-run", "--json")
    assert dry.code == 0, dry.output
    (local,) = dry.json()
    removed = [d["id"] for d in local["decisions"] if d["action"] == "remove"]
    assert removed == old  # newest first: the incrementals before their full backup
    assert cli(env, "prune").code == 0
    (kept,) = cli(archive.values, "list", "--json").json()
    assert kept["id"] not in old and kept["physical"]["chain_position"] == 0
    stamps = [i.removeprefix("base_") for i in old]
    assert not [p for p in (archive.backup_dir / "basebackups").rglob("*") if any(s in p.name for s in stamps)]


def test_an_unreadable_parent_manifest_gives_a_full_backup(chain_copy: tuple[ArchivingCluster, str]) -> None:
    archive, _ = chain_copy
    newest = cli(archive.values, "list", "--json").json()[0]
    (archive.backup_dir / newest["physical"]["backup_manifest"]).unlink()
    time.sleep(1.1)
    done = cli(archive.values, "backup", "--incremental")
    assert done.code == 0, done.output
    assert "Full base backup instead of an incremental" in done.output
    assert cli(archive.values, "list", "--json").json()[0]["physical"]["chain_position"] == 0


def test_an_age_encrypted_chain_restores(archiving_cluster18: Callable[..., ArchivingCluster], wal_tool: WalTool,
                                         work: Path) -> None:
    """The parent's backup_manifest is decoded with AGE_IDENTITY_FILE for the incremental; the
    restore decrypts every member."""
    keys = wal_tool.folder("keys18")
    identity = keys / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True,
                               check=True).stdout.strip()
    wal_tool.secret_file(keys, "identity.txt", identity.read_bytes())
    archive = archiving_cluster18({"ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age", "AGE_RECIPIENTS": recipient,
                                   "AGE_IDENTITY_FILE": str(identity)})
    archive.psql("CREATE TABLE items(id int primary key, note text)")
    insert(archive, 1, 300)
    backup(archive, "--physical")
    insert(archive, 301, 600)
    backup(archive, "--physical", "--incremental")
    insert(archive, 601, 700)
    archive.wait_archived(archive.switch())
    newest = cli(archive.values, "list", "--json").json()[0]
    assert newest["physical"]["chain_position"] == 1 and newest["artifact"].endswith(".tar.zst.age")
    result, restored = restore(archive, wal_tool, work / "restored")
    assert "combined a chain of 2" in result.stdout
    assert count(restored) == 700
