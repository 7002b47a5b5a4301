"""Container mode: every client tool runs through `docker exec -i <container>`."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import DATA, assert_same_data, cli, load


@pytest.fixture
def docker(tmp_path: Path, pg: TempCluster) -> tuple[Path, Path]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    shutil.copy(DATA / "fake-docker", bin_dir / "docker")
    return bin_dir, tmp_path / "docker-calls.jsonl"


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_backup_and_restore_through_docker_exec(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                                docker: tuple[Path, Path]) -> None:
    load(pg, new_db, "complex.sql")
    bin_dir, log = docker
    env = {k: v for k, v in base_env.items() if k != "PG_BIN_DIR"}
    env.update({"POSTGRES_DB": new_db, "POSTGRES_CONTAINER": "db", "FAKE_DOCKER_LOG": str(log),
                "FAKE_DOCKER_PG_BIN": str(pg.bin_dir), "FAKE_DOCKER_CONTAINER": "db"})
    result = cli(env, "backup", path_prefix=str(bin_dir))
    assert result.code == 0, result.output

    argvs = calls(log)
    password = env["POSTGRES_PASSWORD"]
    assert all(password not in " ".join(a) for a in argvs)
    dumps = [a for a in argvs if "pg_dump" in a and "--version" not in a]
    assert len(dumps) == 1
    dump = dumps[0]
    conn = ["-U", "postgres", "-h", "127.0.0.1", "-p", env["POSTGRES_PORT"]]
    prefix = ["exec", "-i", "-e", "PGAPPNAME", "-e", "PGCONNECT_TIMEOUT", "-e", "PGPASSWORD", "db", "pg_dump", *conn]
    assert dump[: len(prefix)] == prefix
    snapshot = dump[dump.index("--snapshot") + 1]
    assert dump[len(prefix):] == ["--snapshot", snapshot, "-F", "p", "--lock-wait-timeout=300000",  # default 5m
                                  "-d", f"dbname='{new_db}'"]
    versions = [a for a in argvs if "--version" in a]
    assert versions and versions[0][-3:] == ["db", "pg_dump", "--version"]
    sessions = [a for a in argvs if a[a.index("db") + 1] == "psql"]
    assert sessions, "the snapshot session runs psql in the container too"

    # the same backup as a direct one: same data, same table counts
    item = cli(env, "list", "--json", path_prefix=str(bin_dir)).json()[0]
    manifest = json.loads((Path(env["BACKUP_DIR"]) / f"{item['artifact']}.manifest.json").read_text())
    assert manifest["source"]["container"] == "db" and manifest["tables"]["app.everything"] == 1500
    raw = gzip.decompress((Path(env["BACKUP_DIR"]) / item["artifact"]).read_bytes())
    assert b"PostgreSQL database dump complete" in raw

    target = f"{new_db}_via_docker"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create", path_prefix=str(bin_dir))
    assert restored.code == 0, restored.output
    try:
        assert_same_data(pg, new_db, target)
        restores = [a for a in calls(log) if "--single-transaction" in a]
        assert restores and restores[-1][:3] == ["exec", "-i", "-e"] and "psql" in restores[-1]
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}")


def test_unknown_container(new_db: str, base_env: dict[str, str], docker: tuple[Path, Path], pg: TempCluster) -> None:
    bin_dir, log = docker
    env = {**base_env, "POSTGRES_DB": new_db, "POSTGRES_CONTAINER": "nope", "FAKE_DOCKER_LOG": str(log),
           "FAKE_DOCKER_PG_BIN": str(pg.bin_dir)}
    result = cli(env, "backup", path_prefix=str(bin_dir))
    assert result.code == 1
    assert "No such container: nope" in result.output and "POSTGRES_CONTAINER" in result.output


def test_list_selective_and_globals_restore_through_docker_exec(pg: TempCluster, new_db: str,
                                                                base_env: dict[str, str],
                                                                docker: tuple[Path, Path]) -> None:
    load(pg, new_db, "complex.sql")
    bin_dir, log = docker
    env = {k: v for k, v in base_env.items() if k != "PG_BIN_DIR"}
    env.update({"POSTGRES_DB": new_db, "POSTGRES_CONTAINER": "db", "FAKE_DOCKER_LOG": str(log),
                "FAKE_DOCKER_PG_BIN": str(pg.bin_dir), "FAKE_DOCKER_CONTAINER": "db", "BACKUP_FORMAT": "custom",
                "BACKUP_GLOBALS": "true"})
    assert cli(env, "backup", path_prefix=str(bin_dir)).code == 0
    database_id = next(b["id"] for b in cli(env, "list", "--json").json() if b["kind"] == "database")
    listed = cli(env, "restore", database_id, "--list", path_prefix=str(bin_dir))
    assert listed.code == 0 and " TABLE DATA app docs " in listed.stdout, listed.output
    target = f"{new_db}_docs"
    try:
        part = cli(env, "restore", database_id, "-n", "app", "-t", "docs", "--target-db", target, "--create",
                   path_prefix=str(bin_dir))
        assert part.code == 0, part.output
        assert pg.psql("SELECT count(*) FROM app.docs", target) == pg.psql("SELECT count(*) FROM app.docs", new_db)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}")
    dry = cli(env, "restore", "--globals", "--dry-run", path_prefix=str(bin_dir))
    assert dry.code == 0 and "-- skipped (role postgres exists): CREATE ROLE postgres;" in dry.stdout, dry.output
    argvs = calls(log)
    assert any(a[a.index("db") + 1:a.index("db") + 2] == ["pg_restore"] and "-l" in a for a in argvs)
    assert any("-n" in a and "-t" in a and "pg_restore" in a for a in argvs)
    assert all(env["POSTGRES_PASSWORD"] not in " ".join(a) for a in argvs)
