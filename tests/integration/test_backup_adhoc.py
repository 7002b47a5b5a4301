"""`backup --database NAME` (repeatable): an ad-hoc backup of chosen databases without editing
.env, against a real PostgreSQL. It overrides POSTGRES_DB for this run only: the metrics of
the configured databases stay, the last-run record `check` judges the scheduled runs by is
left as it was, and an unknown name is a usage error before anything is dumped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli


@pytest.fixture
def other_db(pg: TempCluster, new_db: str) -> Iterator[str]:
    name = f"{new_db}_other"
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g", name)
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def databases_backed_up(env: dict[str, str]) -> list[tuple[str, str]]:
    return sorted((b["kind"], b["database"]) for b in cli(env, "list", "--json").json())


def test_adhoc_backup_of_chosen_databases(pg: TempCluster, new_db: str, other_db: str, base_env: dict[str, str],
                                          tmp_path: Path) -> None:
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g", new_db)
    metrics = tmp_path / "metrics" / "sentinel.prom"
    metrics.parent.mkdir()
    env = {**base_env, "POSTGRES_DB": new_db, "METRICS_FILE": str(metrics)}
    assert cli(env, "backup").code == 0
    last_run = Path(env["BACKUP_DIR"]) / ".sentinel-last-run.json"
    record = last_run.read_text()

    adhoc = cli(env, "backup", "--database", other_db)
    assert adhoc.code == 0, adhoc.output
    assert databases_backed_up(env) == [("database", new_db), ("database", other_db)]
    assert last_run.read_text() == record  # the scheduled run's record stays
    text = metrics.read_text()
    series = 'sentinel_backup_last_success_timestamp_seconds{{database="{}",kind="database",server=""}}'
    assert series.format(new_db) in text  # carried forward
    assert series.format(other_db) in text

    both = cli(env, "backup", "--database", new_db, "--database", other_db)
    assert both.code == 0, both.output
    assert databases_backed_up(env) == [("database", new_db)] * 2 + [("database", other_db)] * 2  # no globals

    # the next scheduled run (POSTGRES_DB as configured) drops the ad-hoc database's series
    assert cli(env, "backup").code == 0
    assert f'database="{other_db}"' not in metrics.read_text()
    assert json.loads(last_run.read_text())["databases"].keys() == {new_db}


def test_adhoc_unknown_database_is_a_usage_error(new_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": new_db}
    result = cli(env, "backup", "--database", "no_such_db_here")
    assert result.code == 2, result.output
    assert "database no_such_db_here does not exist" in result.stderr and new_db in result.stderr
    assert "Traceback" not in result.output
    comma = cli(env, "backup", "--database", f"{new_db},postgres")
    assert comma.code == 2 and "one name per --database" in comma.stderr
    assert not list(Path(env["BACKUP_DIR"]).glob("sentinel_backup_*"))
