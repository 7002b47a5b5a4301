"""A real PostgreSQL 15 cluster for the whole test session (initdb + pg_ctl)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[TempCluster]:
    cluster = TempCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def new_db(pg: TempCluster) -> Iterator[str]:
    """A fresh, empty database name on the session cluster (dropped afterwards)."""
    name = f"t_{next(_names)}"
    pg.psql(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


@pytest.fixture
def base_env(pg: TempCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a sentinel-backup run against the session cluster, BACKUP_DIR in tmp."""
    env = {**pg.env(), "BACKUP_DIR": str(tmp_path / "backups"), "LOG_LEVEL": "INFO"}
    for key in list(__import__("os").environ):
        if key.startswith(("POSTGRES_", "S3_", "MINIO_", "ENCRYPT", "AGE_", "WEBHOOK", "RETENTION", "PG")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return env
