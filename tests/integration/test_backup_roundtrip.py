"""Backup -> list -> verify -> restore against a real PostgreSQL, compared with the source."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import assert_same_data, cli, large_objects, load, schema_dump


@pytest.fixture
def complex_db(pg: TempCluster, new_db: str) -> str:
    load(pg, new_db, "complex.sql")
    return new_db


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_plain_roundtrip(pg: TempCluster, complex_db: str, base_env: dict[str, str], compression: str) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db, "COMPRESSION": compression}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    assert "Backup process completed" in result.stdout

    listed = cli(env, "list", "--json").json()
    assert len(listed) == 1
    item = listed[0]
    assert item["database"] == complex_db and item["format"] == "plain" and item["compression"] == compression
    assert item["encryption"] is None and item["destinations"] == ["local"]
    folder = Path(env["BACKUP_DIR"])
    artifact = folder / item["locations"]["local"]["path"]
    assert artifact.name.endswith({"gzip": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}[compression])
    assert item["size_bytes"] == artifact.stat().st_size
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o600

    manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert manifest["tables"]["app.everything"] == 1500
    assert manifest["tables"]['"Weird Schema"."Mixed Case Table"'] == 50
    assert manifest["tables"]["app.measurements_2025"] + manifest["tables"]["app.measurements_2026"] == 701
    assert manifest["server_version"].startswith("15") and "pg_dump" in manifest["pg_dump_version"]

    verified = cli(env, "verify", "latest")
    assert verified.code == 0, verified.output
    assert "FAILED" not in verified.stdout

    target = f"{complex_db}_restored"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create")
    assert restored.code == 0, restored.output
    try:
        assert_same_data(pg, complex_db, target)
        assert schema_dump(pg, complex_db) == schema_dump(pg, target)
        assert large_objects(pg, target) == large_objects(pg, complex_db) != ""
        assert pg.psql("SELECT last_value FROM app.ticket_seq", target) == pg.psql(
            "SELECT last_value FROM app.ticket_seq", complex_db)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}")


def test_custom_format_parallel_restore(pg: TempCluster, complex_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db, "BACKUP_FORMAT": "custom"}
    assert cli(env, "backup").code == 0
    item = cli(env, "list", "--json").json()[0]
    assert item["format"] == "custom" and item["path" if False else "locations"]["local"]["path"].endswith(".dump")
    assert cli(env, "verify").code == 0
    target = f"{complex_db}_custom"
    result = cli(env, "restore", "latest", "--target-db", target, "--create", "--jobs", "2")
    assert result.code == 0, result.output
    try:
        assert_same_data(pg, complex_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}")


def test_restore_refuses_existing_target_without_clean(pg: TempCluster, complex_db: str,
                                                       base_env: dict[str, str], new_db: str) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db}
    assert cli(env, "backup").code == 0
    pg.psql("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)", new_db)
    refused = cli(env, "restore", "latest", "--target-db", new_db)
    assert refused.code == 2 and "already exists" in refused.stderr and "--clean" in refused.stderr
    assert pg.psql("SELECT x FROM keep_me", new_db) == "42"
    missing = cli(env, "restore", "latest", "--target-db", "no_such_db_here")
    assert missing.code == 2 and "--create" in missing.stderr

    replaced = cli(env, "restore", "latest", "--target-db", new_db, "--clean")
    assert replaced.code == 0, replaced.output
    assert_same_data(pg, complex_db, new_db)
    assert pg.psql("SELECT to_regclass('public.keep_me') IS NULL", new_db) == "t"


def test_several_databases_and_globals(pg: TempCluster, base_env: dict[str, str]) -> None:
    names = ["multi_a", "multi_b"]
    for name in names:
        pg.psql(f"DROP DATABASE IF EXISTS {name}")
        pg.psql(f"CREATE DATABASE {name}")
        pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g", name)
    pg.psql("DO $$ BEGIN CREATE ROLE sentinel_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    env = {**base_env, "POSTGRES_DB": ",".join(names)}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    listed = cli(env, "list", "--json").json()
    kinds = sorted((i["kind"], i["database"]) for i in listed)
    assert kinds == [("database", "multi_a"), ("database", "multi_b"), ("globals", "globals")]
    globals_file = Path(env["BACKUP_DIR"]) / next(i for i in listed if i["kind"] == "globals")["artifact"]
    import gzip

    assert b"CREATE ROLE sentinel_reader" in gzip.decompress(globals_file.read_bytes())
    ambiguous = cli(env, "verify", "latest")
    assert ambiguous.code == 2 and "--database" in ambiguous.stderr
    assert cli(env, "verify", "latest", "--database", "multi_b").code == 0


def test_all_databases(pg: TempCluster, base_env: dict[str, str], new_db: str) -> None:
    pg.psql("CREATE TABLE x AS SELECT 1 AS one", new_db)
    env = {**base_env, "POSTGRES_DB": "all", "MIN_BACKUP_SIZE": "0"}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    databases = {i["database"] for i in cli(env, "list", "--json").json()}
    assert {"postgres", new_db, "globals"} <= databases
    assert "template0" not in databases and "template1" not in databases


def test_env_file_and_environment_precedence(pg: TempCluster, complex_db: str, base_env: dict[str, str],
                                             tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    lines = [f"{k}={v}" for k, v in base_env.items() if k != "BACKUP_DIR"]
    env_file.write_text("\n".join([*lines, f"POSTGRES_DB={complex_db}", f"BACKUP_DIR={tmp_path}/from-file",
                                   "COMPRESSION=zstd"]) + "\n")
    result = cli({"COMPRESSION": "gzip"}, "--env-file", str(env_file), "backup")
    assert result.code == 0, result.output
    files = os.listdir(tmp_path / "from-file")
    assert any(f.endswith(".sql.gz") for f in files), files  # the environment won over the file


def test_two_runs_in_the_same_second_keep_both_backups(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    """A second run must never overwrite (or, failing, delete) the first run's backup."""
    from datetime import UTC, datetime

    from sentinel_backup.config import settings_from
    from sentinel_backup.logical.run import BackupRun
    from sentinel_backup.storage.local import LocalStorage

    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 3000) AS n", new_db)
    settings = settings_from({**base_env, "POSTGRES_DB": new_db})
    storage = LocalStorage(settings.backup_dir)
    storage.prepare()
    moment = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)
    first = BackupRun(settings, [storage], clock=lambda: moment).run()
    second = BackupRun(settings, [storage], clock=lambda: moment).run()
    names = [o.manifest.artifact for o in (*first.outcomes, *second.outcomes) if o.manifest]
    assert len(names) == 2 and names[0] != names[1], names
    assert names[1].endswith("20261129T030001Z.sql.gz")
    listed = cli({**base_env, "POSTGRES_DB": new_db}, "list", "--json").json()
    assert sorted(i["artifact"] for i in listed) == sorted(names)
    for name in names:
        assert cli({**base_env, "POSTGRES_DB": new_db}, "verify", name).code == 0
