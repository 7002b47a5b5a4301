"""Drills of physical backups on a real PostgreSQL 18 archiving through the real ``wal-push``:
``verify --restore`` restores the chain into a scratch server and recovers to a restore point the
drill created between its two markers. Drills that pass, and drills that fail for the right
reason: a WAL segment removed from the archive (a gap), a corrupt base backup, a restore point
never reached (the archiver stopped working).

One archiving cluster and its two backups serve the whole module (``backed_up``, built once);
a test that damages something (a WAL segment, a base backup, the archive_command, a role) puts
it back, so that the tests pass in any order."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import Result, cli
from tests.integration.test_incremental_chain import leftover_scratch
from tests.plugins.archive import ArchivingCluster, WalTool


def scratch_left() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("sentinel-drill-*"))


@pytest.fixture(scope="module")
def backed_up(shared_archiving18: ArchivingCluster) -> ArchivingCluster:
    """A full and an incremental backup, rows after each, archived."""
    archive = shared_archiving18
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
    assert 'sentinel_backup_drill_success{database="(cluster)",kind="physical",server=""} 1' in metrics.read_text()
    # the source holds the marker rows of the last drill: A and B
    assert archive.psql("SELECT string_agg(phase, ',' ORDER BY phase) FROM sentinel_drill.marker") == "A,B"


def test_a_gap_in_the_archive_fails_the_drill(backed_up: ArchivingCluster, wal_tool: WalTool) -> None:
    archive = backed_up
    newest = cli(archive.values, "list", "--json").json()[0]
    start = newest["physical"]["start_wal"]
    folder = archive.backup_dir / "wal" / archive.system_id() / start[:8]
    segments = sorted(p for p in folder.iterdir() if p.name[:24] > start and len(p.name.split(".")[0]) == 24
                      and ".backup." not in p.name)
    aside = segments[0].with_name(f".aside-{segments[0].name}")
    segments[0].rename(aside)
    try:
        result = drill(archive, wal_tool)
    finally:
        aside.rename(segments[0])
    assert result.code == 1 and "FAILED" in result.stdout and "has a gap" in result.stdout, result.output
    assert segments[0].name[:24] in result.stdout
    assert scratch_left() == []


def test_a_corrupt_base_backup_fails_the_drill(backed_up: ArchivingCluster, wal_tool: WalTool) -> None:
    archive = backed_up
    root = cli(archive.values, "list", "--json").json()[-1]
    artifact = archive.backup_dir / root["artifact"]
    original = artifact.read_bytes()
    data = bytearray(original)
    data[len(data) // 3] ^= 0x55
    artifact.write_bytes(bytes(data))
    try:
        result = drill(archive, wal_tool)
    finally:
        artifact.write_bytes(original)
    assert result.code == 1 and "FAILED" in result.stdout, result.output
    assert f"chain member {root['id']}" in result.stdout
    assert scratch_left() == []
    assert cli(archive.values, "list", "--json").json()[0]["drill"]["passed"] is False


def test_a_restore_point_never_reached_fails_the_drill(backed_up: ArchivingCluster, wal_tool: WalTool) -> None:
    archive = backed_up
    command = archive.psql("SHOW archive_command").replace("'", "''")
    archive.psql("ALTER SYSTEM SET archive_command = '/bin/false'; SELECT pg_reload_conf()")
    try:
        result = drill(archive, wal_tool)
    finally:
        archive.psql(f"ALTER SYSTEM SET archive_command = '{command}'; SELECT pg_reload_conf()")
    assert result.code == 1 and "FAILED" in result.stdout, result.output
    assert "was never reached" in result.stdout
    assert scratch_left() == []
    assert not leftover_scratch()


def test_sigterm_during_a_drill_removes_the_scratch_server_and_folder(backed_up: ArchivingCluster,
                                                                      wal_tool: WalTool) -> None:
    archive = backed_up
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    env.update(archive.values)
    # no restore point: recovery waits on restore_command, a slow one that gives the signal its moment
    slow = Path(tempfile.mkdtemp(prefix="sentinel-slow-"))
    os.chmod(slow, 0o755)
    script = slow / "slow-fetch"
    script.write_text("#!/bin/sh\nsleep 2\nexec " + " ".join(wal_tool.argv) + ' "$@"\n')
    os.chmod(script, 0o755)
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "--env-file", str(archive.env_file), "verify",
                             "latest", "--physical", "--restore", "--tool-command", str(script)],
                            env={**env, "DRILL_PITR_MARKER": "false"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pid_file = None
        for _ in range(3000):  # a safety net, not a limit: until the scratch server runs
            found = [p / "data" / "postmaster.pid" for p in scratch_left() if (p / "data" / "postmaster.pid").exists()]
            if found:
                pid_file = found[0]
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert pid_file is not None
        postmaster = int(pid_file.read_text().split("\n", 1)[0])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(slow, ignore_errors=True)
    assert proc.returncode != 0 and "Traceback" not in err, out + err
    assert scratch_left() == []
    try:
        os.kill(postmaster, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_drill_job_of_drill_schedule_drills_the_newest_physical_backup(
        backed_up: ArchivingCluster, wal_tool: WalTool, monkeypatch: pytest.MonkeyPatch) -> None:
    """What DRILL_SCHEDULE runs (jobs.backup.drill_job), with the tool installed on PATH as the
    restore_command's program (a wrapper the postgres OS user can run)."""
    from sentinel_backup.config import load_settings
    from sentinel_backup.jobs.backup import drill_job
    archive = backed_up
    bin_dir = Path(tempfile.mkdtemp(prefix="sentinel-bin-"))
    os.chmod(bin_dir, 0o755)
    wrapper = bin_dir / "sentinel-backup"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(wal_tool.argv) + ' "$@"\n')
    os.chmod(wrapper, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key in [k for k in os.environ if k.startswith(("POSTGRES_", "PG"))]:
        monkeypatch.delenv(key)
    try:
        (report,) = drill_job(load_settings(archive.env_file), env_file=archive.env_file)
    finally:
        shutil.rmtree(bin_dir, ignore_errors=True)
    assert report.passed, report
    assert report.database == "(cluster)" and report.restore_seconds
    assert cli(archive.values, "list", "--json").json()[0]["drill"]["passed"] is True
    assert scratch_left() == []


def test_a_role_that_may_not_write_the_marker_is_told_how_to_proceed(backed_up: ArchivingCluster,
                                                                     wal_tool: WalTool) -> None:
    archive = backed_up
    def markers() -> str:  # the marker schema exists if an earlier drill of this cluster made it
        if archive.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'sentinel_drill'") == "0":
            return "no schema"
        return archive.psql("SELECT coalesce(string_agg(m::text, ',' ORDER BY m::text), '')"
                            " FROM sentinel_drill.marker m")

    before = markers()
    archive.psql("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
    try:
        result = drill(archive, wal_tool, env={"POSTGRES_USER": "reader", "POSTGRES_PASSWORD": "reader-pw"})
    finally:
        archive.psql("DROP ROLE reader")
    assert result.code == 1 and "FAILED" in result.stdout, result.output
    assert "marker could not be written" in result.stdout and "DRILL_PITR_MARKER=false" in result.stdout
    assert markers() == before  # nothing written: no schema created, no marker row added
    assert scratch_left() == []


def test_drill_amcheck_checks_every_database_and_records_it(backed_up: ArchivingCluster, wal_tool: WalTool) -> None:
    archive = backed_up
    result = drill(archive, wal_tool, env={"DRILL_AMCHECK": "true"})
    assert result.code == 0 and "PASSED" in result.stdout, result.output
    record = cli(archive.values, "list", "--json").json()[0]["drill"]
    (amcheck,) = [c for c in record["checks"] if c["sql"] == "pg_amcheck"]
    assert amcheck["ok"] is True and "no corruption" in amcheck["detail"]
    assert record["amcheck_seconds"] > 0
    # the extension was created on the scratch server only, never on the source
    assert archive.psql("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'") == "0"
    assert scratch_left() == []


# A B-tree index whose operator class's comparison function is replaced after the index was
# built: the pages are intact (checksums pass, every table reads), but the items are out of
# order for the operator class, which bt_index_check reports. Written on the source, it
# reaches the drill's scratch server through the WAL archive like any corruption a backup holds.
CORRUPT_INDEX_SQL = """
CREATE FUNCTION sentinel_cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT btint4cmp($1, $2)';
CREATE OPERATOR CLASS sentinel_ops FOR TYPE int USING btree AS OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =,
    OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 sentinel_cmp(int, int);
CREATE INDEX items_scrambled ON items (id sentinel_ops);
CREATE OR REPLACE FUNCTION sentinel_cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT btint4cmp($2, $1)';
"""


def test_drill_amcheck_fails_the_drill_naming_the_corrupt_index(backed_up: ArchivingCluster,
                                                                 wal_tool: WalTool) -> None:
    archive = backed_up
    archive.psql(CORRUPT_INDEX_SQL)
    assert cli(archive.values, "--env-file", str(archive.env_file), "verify", "latest", "--physical", "--restore",
               "--tool-command", " ".join(wal_tool.argv)).code == 0  # without DRILL_AMCHECK nothing notices
    result = drill(archive, wal_tool, env={"DRILL_AMCHECK": "true"})
    assert result.code == 1 and "FAILED" in result.stdout, result.output
    assert 'btree index postgres.public.items_scrambled' in result.stdout
    record = cli(archive.values, "list", "--json").json()[0]["drill"]
    assert record["passed"] is False
    (amcheck,) = [c for c in record["checks"] if c["sql"] == "pg_amcheck"]
    assert not amcheck["ok"] and "item order invariant violated" in amcheck["detail"]
    assert scratch_left() == []


def test_amcheck_result_reads_pg_amcheck_output() -> None:
    from sentinel_backup.physical.drill import amcheck_result
    assert amcheck_result("pg_amcheck", 0, "", "").ok
    found = amcheck_result("pg_amcheck", 2, 'heap table "db.public.t", block 3, offset 7:\n    xmin 9 precedes\n'
                           'btree index "db.public.t_pkey":\n    ERROR:  index "t_pkey" is corrupt\n', "")
    assert not found.ok and "2 relation(s): heap table db.public.t, btree index db.public.t_pkey" in found.detail
    assert "first finding: xmin 9 precedes" in found.detail
    failed = amcheck_result("pg_amcheck", 1, "", 'pg_amcheck: error: extension "amcheck" is not available')
    assert not failed.ok and "is not available" in failed.detail and "DRILL_AMCHECK=false" in (failed.hint or "")
