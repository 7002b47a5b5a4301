"""Restore drills end to end: `verify --restore` and VERIFY_AFTER_BACKUP=restore against a real PostgreSQL.

Every test ends by checking that no scratch database (``sentinel_drill_*``) is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import big_database, cli, load, reap


@pytest.fixture
def complex_db(pg: TempCluster, new_db: str) -> str:
    load(pg, new_db, "complex.sql")
    return new_db


def scratch_databases(pg: TempCluster) -> list[str]:
    out = pg.psql(r"SELECT datname FROM pg_database WHERE datname LIKE 'sentinel\_drill\_%'")
    return [line for line in out.splitlines() if line]


def only_backup(env: dict[str, str]) -> dict[str, Any]:
    listed = cli(env, "list", "--json").json()
    assert len(listed) == 1, listed
    item: dict[str, Any] = listed[0]
    return item


def manifest_path(env: dict[str, str], item: dict[str, Any]) -> Path:
    return Path(env["BACKUP_DIR"]) / f"{item['artifact']}.manifest.json"


def drill_record(env: dict[str, str], item: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((Path(env["BACKUP_DIR"]) / f"{item['artifact']}.drill.json").read_text())
    return record


def edit_manifest(env: dict[str, str], item: dict[str, Any], change: Any) -> None:
    """Change the manifest JSON only (verify's SHA-256 covers the artifact, not the manifest)."""
    path = manifest_path(env, item)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def test_good_backup_passes_and_records_the_drill(pg: TempCluster, complex_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db}
    assert cli(env, "backup").code == 0
    item = only_backup(env)
    assert item["drilled"] is False and item["drill"] is None

    result = cli(env, "verify", "latest", "--restore")
    assert result.code == 0, result.output
    assert f"Drill of {item['id']} from local: PASSED" in result.stdout
    assert "DIFFERS" not in result.stdout

    record = drill_record(env, item)
    assert record["passed"] is True and record["error"] is None and record["differences"] == {}
    assert record["backup_id"] == item["id"] and record["database"] == complex_db
    assert record["destination"] == "local"
    assert isinstance(record["restore_seconds"], float) and record["restore_seconds"] > 0
    assert record["tables_checked"] == item["tables"] == 8
    assert record["scratch_database"].startswith("sentinel_drill_")
    assert scratch_databases(pg) == []

    listed = only_backup(env)  # `list` shows that it was drilled and how it went
    assert listed["drilled"] is True
    assert listed["drill"]["passed"] is True and listed["drill"]["restore_seconds"] == record["restore_seconds"]
    human = cli(env, "list")
    assert human.code == 0 and "DRILL" in human.stdout and "passed" in human.stdout


def test_altered_manifest_counts_fail_the_drill_naming_the_table(pg: TempCluster, complex_db: str,
                                                                 base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db}
    assert cli(env, "backup").code == 0
    item = only_backup(env)

    def alter(doc: dict[str, Any]) -> None:
        assert doc["tables"]["app.everything"] == 1500
        doc["tables"]["app.everything"] = 1499

    edit_manifest(env, item, alter)
    assert cli(env, "verify", "latest").code == 0  # the artifact itself is intact

    result = cli(env, "verify", "latest", "--restore")
    assert result.code == 1, result.output
    assert "FAILED" in result.stdout
    assert "DIFFERS app.everything: manifest 1499, restored 1500" in result.stdout
    record = drill_record(env, item)
    assert record["passed"] is False
    assert record["differences"] == {"app.everything": {"manifest": 1499, "restored": 1500}}
    assert scratch_databases(pg) == []
    listed = only_backup(env)
    assert listed["drilled"] is True and listed["drill"]["passed"] is False
    assert "FAILED" in cli(env, "list").stdout


def test_a_restore_that_fails_fails_the_drill_with_the_error(pg: TempCluster, new_db: str,
                                                             base_env: dict[str, str]) -> None:
    # A table owned by a role that no longer exists when the drill runs: the plain dump's
    # ALTER TABLE ... OWNER TO stops psql (ON_ERROR_STOP), as on a server lacking the role.
    role = f"sentinel_gone_{new_db}"
    pg.psql(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role}")
    pg.psql(f"CREATE TABLE owned AS SELECT g AS id FROM generate_series(1, 100) g; ALTER TABLE owned OWNER TO {role}",
            new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "MIN_BACKUP_SIZE": "0"}
    assert cli(env, "backup").code == 0
    item = only_backup(env)
    pg.psql(f"REASSIGN OWNED BY {role} TO {pg.user}; DROP OWNED BY {role}", new_db)
    pg.psql(f"DROP ROLE {role}")

    result = cli(env, "verify", "latest", "--restore")
    assert result.code == 1, result.output
    assert "FAILED" in result.stdout
    assert f'role "{role}" does not exist' in result.stdout
    record = drill_record(env, item)
    assert record["passed"] is False and f'role "{role}" does not exist' in record["error"]
    assert record["restore_seconds"] is None
    assert scratch_databases(pg) == []


def test_no_permission_for_a_scratch_database_fails_with_a_clear_reason(pg: TempCluster, complex_db: str,
                                                                         base_env: dict[str, str]) -> None:
    """DRILL_* points the drill at a role without CREATEDB: the drill fails and says why."""
    pg.psql("DO $$ BEGIN CREATE ROLE sentinel_no_createdb LOGIN PASSWORD 'drill-pw'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    env = {**base_env, "POSTGRES_DB": complex_db}
    assert cli(env, "backup").code == 0
    item = only_backup(env)
    drill_env = {**env, "DRILL_HOST": "127.0.0.1", "DRILL_PORT": str(pg.port), "DRILL_USER": "sentinel_no_createdb",
                 "DRILL_PASSWORD": "drill-pw"}
    result = cli(drill_env, "verify", "latest", "--restore")
    assert result.code == 1, result.output
    assert "permission denied to create database" in result.stdout
    assert "the role sentinel_no_createdb needs CREATEDB" in result.stdout
    assert "separate drill server" in result.stdout and "read access" not in result.stdout
    assert "drill-pw" not in result.output
    record = drill_record(env, item)
    assert record["passed"] is False and "permission denied to create database" in record["error"]
    assert scratch_databases(pg) == []


def test_drill_sql_file_checks_name_the_false_query(pg: TempCluster, complex_db: str, base_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    checks = tmp_path / "drill.sql"
    checks.write_text("-- the table is all there\n"
                      "SELECT count(*) = 1500 FROM app.everything;\n"
                      "SELECT count(*) = 0 FROM app.everything;\n")
    env = {**base_env, "POSTGRES_DB": complex_db, "DRILL_SQL_FILE": str(checks)}
    assert cli(env, "backup").code == 0
    item = only_backup(env)

    result = cli(env, "verify", "latest", "--restore")
    assert result.code == 1, result.output
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("ok") and "count(*) = 1500" in line for line in lines), result.stdout
    assert any(line.strip().startswith("FAILED") and "count(*) = 0" in line for line in lines), result.stdout
    record = drill_record(env, item)
    assert record["passed"] is False and record["differences"] == {} and record["error"] is None
    assert [(c["ok"], c["detail"]) for c in record["checks"]] == [(True, "returned 't'"), (False, "returned 'f'")]
    assert "count(*) = 0" in record["checks"][1]["sql"]
    assert scratch_databases(pg) == []


def test_manifest_table_hashes_are_recorded_and_compared(pg: TempCluster, complex_db: str,
                                                         base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db, "MANIFEST_TABLE_HASHES": "true"}
    assert cli(env, "backup").code == 0
    item = only_backup(env)
    manifest = json.loads(manifest_path(env, item).read_text())
    assert manifest["table_hashes"] is not None
    assert set(manifest["table_hashes"]) == set(manifest["tables"])
    assert manifest["table_hashes"]["app.everything"].startswith("1500:")

    passed = cli(env, "verify", "latest", "--restore")
    assert passed.code == 0, passed.output
    assert drill_record(env, item)["passed"] is True

    # The drill compares the hashes: a manifest hash that does not match the restored content fails it.
    def alter(doc: dict[str, Any]) -> None:
        doc["table_hashes"]["app.everything"] = "1500:" + "0" * 32

    edit_manifest(env, item, alter)
    failed = cli(env, "verify", "latest", "--restore")
    assert failed.code == 1, failed.output
    assert "DIFFERS app.everything (content)" in failed.stdout
    record = drill_record(env, item)
    assert list(record["differences"]) == ["app.everything (content)"]
    assert record["differences"]["app.everything (content)"]["restored"] == manifest["table_hashes"]["app.everything"]
    assert scratch_databases(pg) == []


def test_verify_after_backup_restore_drills_every_run(pg: TempCluster, complex_db: str,
                                                      base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db, "VERIFY_AFTER_BACKUP": "restore"}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    item = only_backup(env)
    assert f"Drill of {item['id']} passed" in result.output
    assert item["drilled"] is True
    assert item["drill"]["passed"] is True and item["drill"]["restore_seconds"] > 0
    assert item["drill"]["tables_checked"] == 8 and item["drill"]["destination"] == "local"
    assert drill_record(env, item)["passed"] is True
    assert scratch_databases(pg) == []


def test_failed_drill_after_backup_fails_the_run(pg: TempCluster, complex_db: str, base_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    checks = tmp_path / "drill.sql"
    checks.write_text("SELECT false")
    env = {**base_env, "POSTGRES_DB": complex_db, "VERIFY_AFTER_BACKUP": "restore", "DRILL_SQL_FILE": str(checks)}
    result = cli(env, "backup")
    assert result.code == 1, result.output
    item = only_backup(env)  # the backup itself was committed
    assert item["drilled"] is True and item["drill"]["passed"] is False
    assert scratch_databases(pg) == []


# --- interrupted drill -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_db(pg: TempCluster) -> Any:
    """About 150 MB of rows, so a restore takes a few seconds."""
    name = big_database(pg, "drill_big", 1_200_000)
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


@pytest.fixture(scope="module")
def big_backup(pg: TempCluster, big_db: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One backup of big_db, shared by the interruption tests (each interrupted drill leaves no record)."""
    env = {**pg.env(), "BACKUP_DIR": str(tmp_path_factory.mktemp("big") / "backups"), "POSTGRES_DB": big_db,
           "COMPRESSION": "zstd"}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    return env


def restoring(pg: TempCluster, process: subprocess.Popen[str]) -> str:
    """Wait until the drill's scratch database exists and rows are being copied into it; its name."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"the drill ended before it was interrupted: {process.communicate()}"
        assert time.monotonic() < deadline, "the drill never started restoring"
        names = scratch_databases(pg)
        if names and pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{names[0]}'"
                             " AND query ILIKE 'COPY%'") != "0":
            return names[0]
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_interrupted_drill_leaves_no_scratch_database(pg: TempCluster, big_backup: dict[str, str], new_db: str,
                                                      base_env: dict[str, str], signum: signal.Signals) -> None:
    env = {**base_env, **big_backup}
    item = only_backup(env)

    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    child.update(env)
    process = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "verify", "latest", "--restore"],
                               env=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        scratch = restoring(pg, process)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        reap(process)

    assert process.returncode == (130 if signum == signal.SIGTERM else -signal.SIGKILL), stdout + stderr
    assert "PASSED" not in stdout
    assert not (Path(env["BACKUP_DIR"]) / f"{item['artifact']}.drill.json").exists()  # no verdict on a cut drill
    if signum == signal.SIGTERM:
        assert scratch_databases(pg) == []  # dropped on the way out
    else:
        # Killed outright, the drill could not drop it: the next drill does, once nobody uses it.
        deadline = time.monotonic() + 60
        while pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch}'") != "0":
            assert time.monotonic() < deadline, "the killed drill's psql never went away"
            time.sleep(0.1)
        # Any later drill (here of another, small backup) drops it.
        pg.psql("CREATE TABLE t AS SELECT 1 AS one", new_db)
        small = {**base_env, "POSTGRES_DB": new_db, "MIN_BACKUP_SIZE": "0"}
        assert cli(small, "backup").code == 0
        again = cli(small, "verify", "latest", "--restore")
        assert again.code == 0, again.output
        assert f"Dropping scratch database {scratch} left by an interrupted drill" in again.output
    assert scratch_databases(pg) == []


# --- drill records and retention -------------------------------------------------------------
def test_retention_keeps_a_drill_record_with_its_backup(pg: TempCluster, complex_db: str, base_env: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from sentinel_backup.config import Settings
    from sentinel_backup.jobs.backup import prune_job

    env = {**base_env, "POSTGRES_DB": complex_db, "RETENTION_KEEP_LAST": "5"}
    assert cli(env, "backup").code == 0
    assert cli(env, "verify", "latest", "--restore").code == 0
    item = only_backup(env)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    prune_job(settings, now=datetime.now(UTC) + timedelta(days=3))  # the backup is now three days old, and kept
    assert (Path(env["BACKUP_DIR"]) / item["artifact"]).exists()
    assert only_backup(env)["drilled"] is True
