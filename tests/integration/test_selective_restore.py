"""`restore ID --list` and `restore ID --schema S --table T` against a real PostgreSQL:
pg_restore's own listing and selection, the row-count check over the selected tables only,
and the clear refusal for plain (SQL) backups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli, load


@pytest.fixture
def complex_db(pg: TempCluster, new_db: str) -> str:
    load(pg, new_db, "complex.sql")
    return new_db


@pytest.fixture
def target_db(pg: TempCluster, new_db: str) -> Iterator[str]:
    name = f"{new_db}_part"
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def tables_of(pg: TempCluster, database: str) -> list[str]:
    out = pg.psql("SELECT string_agg(format('%I.%I', schemaname, tablename), '|' ORDER BY 1) FROM pg_tables"
                  " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", database)
    return sorted(out.split("|")) if out else []


def custom_backup(env: dict[str, str]) -> str:
    result = cli(env, "backup")
    assert result.code == 0, result.output
    return str(cli(env, "list", "--json").json()[0]["id"])


def test_list_shows_the_table_of_contents(complex_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db, "BACKUP_FORMAT": "custom", "ENCRYPT_ENABLED": "true",
           "ENCRYPTION_KEY_PATH": str(Path(base_env["BACKUP_DIR"]).parent / "key")}
    Path(env["ENCRYPTION_KEY_PATH"]).write_text("correct horse battery staple\n")
    Path(env["ENCRYPTION_KEY_PATH"]).chmod(0o600)
    backup = custom_backup(env)
    listed = cli(env, "restore", backup, "--list")
    assert listed.code == 0, listed.output
    assert "Format: CUSTOM" in listed.stdout
    assert " TABLE app everything " in listed.stdout and " TABLE DATA app everything " in listed.stdout
    assert " SCHEMA - app " in listed.stdout


def test_schema_and_table_selection(pg: TempCluster, complex_db: str, target_db: str,
                                    base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db, "BACKUP_FORMAT": "custom"}
    backup = custom_backup(env)
    weird = '"Weird Schema"."Mixed Case Table"'

    one = cli(env, "restore", backup, "--schema", "Weird Schema", "--table", "Mixed Case Table",
              "--target-db", target_db, "--create")
    assert one.code == 0, one.output
    assert "row counts of 1 selected tables match the manifest" in one.stdout
    assert tables_of(pg, target_db) == [weird]
    assert pg.psql(f"SELECT count(*) FROM {weird}", target_db) == pg.psql(f"SELECT count(*) FROM {weird}", complex_db)

    # a whole schema, everything in it (types, sequences, indexes), replacing the target restored above;
    # pg_restore -j 2 from the artifact file
    whole = cli(env, "restore", backup, "--schema", "app", "--target-db", target_db, "--clean", "--jobs", "2")
    assert whole.code == 0, whole.output
    app_tables = [t for t in tables_of(pg, complex_db) if t.startswith("app.")]
    assert tables_of(pg, target_db) == app_tables and len(app_tables) > 3
    assert f"row counts of {len(app_tables)} selected tables" in whole.stdout or "selected tables match" in whole.stdout
    assert pg.psql("SELECT count(*) FROM app.everything", target_db) == \
        pg.psql("SELECT count(*) FROM app.everything", complex_db)
    assert pg.psql("SELECT count(*) FROM pg_indexes WHERE schemaname = 'app'", target_db) == \
        pg.psql("SELECT count(*) FROM pg_indexes WHERE schemaname = 'app'", complex_db)


def test_a_table_whose_types_are_not_selected_names_the_fix(pg: TempCluster, complex_db: str, target_db: str,
                                                            base_env: dict[str, str]) -> None:
    """pg_restore -t restores no type the table needs: the error says to select the schema."""
    env = {**base_env, "POSTGRES_DB": complex_db, "BACKUP_FORMAT": "custom"}
    backup = custom_backup(env)
    result = cli(env, "restore", backup, "-n", "app", "-t", "everything", "--target-db", target_db, "--create")
    assert result.code == 1, result.output
    assert 'type "app.positive" does not exist' in result.stderr and "--schema app" in result.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target_db}'") == "0"


def test_row_count_check_covers_the_selected_tables(pg: TempCluster, complex_db: str, target_db: str,
                                                    base_env: dict[str, str]) -> None:
    """A manifest whose count of a selected table is wrong fails the selective restore; a wrong
    count of a table not selected does not matter."""
    import json
    env = {**base_env, "POSTGRES_DB": complex_db, "BACKUP_FORMAT": "custom"}
    backup = custom_backup(env)
    item = cli(env, "list", "--json").json()[0]
    path = Path(env["BACKUP_DIR"]) / f"{item['artifact']}.manifest.json"
    doc = json.loads(path.read_text())
    doc["tables"]["app.audit"] += 1  # not selected below
    path.write_text(json.dumps(doc))
    ok = cli(env, "restore", backup, "-n", "app", "-t", "docs", "--target-db", target_db, "--create")
    assert ok.code == 0, ok.output
    doc["tables"]["app.docs"] += 1
    path.write_text(json.dumps(doc))
    bad = cli(env, "restore", backup, "-n", "app", "-t", "docs", "--target-db", target_db, "--clean")
    assert bad.code == 1 and "app.docs: manifest" in bad.stderr, bad.output
    assert pg.psql("SELECT count(*) FROM app.docs", target_db) == pg.psql("SELECT count(*) FROM app.docs",
                                                                          complex_db)  # target untouched


def test_selection_matching_nothing_is_a_usage_error(complex_db: str, target_db: str,
                                                     base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db, "BACKUP_FORMAT": "custom"}
    backup = custom_backup(env)
    dotted = cli(env, "restore", backup, "--table", "app.everything", "--target-db", target_db, "--create")
    assert dotted.code == 2 and "--schema app --table everything" in dotted.stderr, dotted.output
    missing = cli(env, "restore", backup, "--schema", "nope", "--target-db", target_db, "--create")
    assert missing.code == 2 and f"restore {backup} --list" in missing.stderr, missing.output


def test_plain_backups_refuse_selection_and_listing(pg: TempCluster, complex_db: str, target_db: str,
                                                    base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db}
    backup = custom_backup(env)
    for args in (("--table", "everything", "--target-db", target_db, "--create"), ("--list",)):
        result = cli(env, "restore", backup, *args)
        assert result.code == 2, result.output
        assert "plain SQL dump" in result.stderr and "BACKUP_FORMAT=custom" in result.stderr
        assert "Traceback" not in result.output
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target_db}'") == "0"
