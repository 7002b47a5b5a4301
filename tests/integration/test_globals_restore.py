"""`restore --globals [ID|latest]` against a real PostgreSQL: roles created, roles that exist
left exactly as they are, a failing statement reported while the others still run,
`--dry-run` changing nothing; and a database actually named `globals` backed up and restored
beside a globals backup without the two ever being taken for each other."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli

ROLES = ("sg_owner", "sg_reporting", "sg_keeper")


@pytest.fixture
def cluster_globals(pg: TempCluster) -> Iterator[Path]:
    """Roles (one with a password and a membership) and a tablespace in a folder of its own;
    everything is removed afterwards, as they are cluster-wide."""
    folder = Path(tempfile.mkdtemp(prefix="sentinel-ts-"))
    shutil.chown(folder, "postgres", "postgres")
    pg.psql("CREATE ROLE sg_reporting NOLOGIN; CREATE ROLE sg_owner LOGIN PASSWORD 'owner-secret-1';"
            " GRANT sg_reporting TO sg_owner; CREATE ROLE sg_keeper LOGIN CONNECTION LIMIT 5")
    pg.psql(f"CREATE TABLESPACE sg_space LOCATION '{folder}'")
    try:
        yield folder
    finally:
        pg.psql("DROP TABLESPACE IF EXISTS sg_space", check=False)
        pg.psql("DROP DATABASE IF EXISTS globals WITH (FORCE)", check=False)
        pg.psql("DROP DATABASE IF EXISTS globals_copy WITH (FORCE)", check=False)
        for role in ROLES:
            pg.psql(f"DROP ROLE IF EXISTS {role}", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def role_exists(pg: TempCluster, role: str) -> bool:
    return pg.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == "1"


def test_globals_restore_reports_created_skipped_and_failed(pg: TempCluster, cluster_globals: Path,
                                                            base_env: dict[str, str]) -> None:
    pg.psql("CREATE DATABASE globals")
    pg.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 42)", "globals")
    env = {**base_env, "POSTGRES_DB": "globals", "BACKUP_GLOBALS": "true", "MIN_BACKUP_SIZE": "0"}
    assert cli(env, "backup").code == 0
    listed = cli(env, "list", "--json").json()
    by_kind = {item["kind"]: item for item in listed}
    assert by_kind["database"]["database"] == "globals" and by_kind["globals"]["id"] != by_kind["database"]["id"]
    globals_id, database_id = by_kind["globals"]["id"], by_kind["database"]["id"]

    # the roles and the tablespace get lost; a role that stays is changed after the backup
    pg.psql("DROP TABLESPACE sg_space")
    shutil.rmtree(cluster_globals)  # CREATE TABLESPACE will fail: its folder is gone
    pg.psql("DROP ROLE sg_owner; DROP ROLE sg_reporting; ALTER ROLE sg_keeper CONNECTION LIMIT 7")

    dry = cli(env, "restore", "--globals", "--dry-run")
    assert dry.code == 0, dry.output
    assert "CREATE ROLE sg_owner;" in dry.stdout and "-- skipped (role sg_keeper exists): CREATE ROLE sg_keeper;" \
        in dry.stdout and "CREATE TABLESPACE sg_space" in dry.stdout
    assert not role_exists(pg, "sg_owner")  # nothing changed

    applied = cli(env, "restore", "--globals", "latest")
    assert applied.code == 1, applied.output  # the tablespace failed, the rest ran
    out = applied.stdout
    assert "roles created (2): sg_owner, sg_reporting" in out or "roles created (2): sg_reporting, sg_owner" in out
    assert "sg_keeper" in out.split("roles skipped")[1].splitlines()[0]
    assert "FAILED CREATE TABLESPACE sg_space" in out and "owner-secret" not in applied.output
    assert role_exists(pg, "sg_owner") and role_exists(pg, "sg_reporting")
    assert pg.psql("SELECT pg_has_role('sg_owner', 'sg_reporting', 'MEMBER')") == "t"
    assert pg.psql("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'sg_owner'") == "t"
    assert pg.psql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'sg_keeper'") == "7"  # left as it was

    # the folder is back: a second run creates the tablespace and skips every role
    cluster_globals.mkdir()
    shutil.chown(cluster_globals, "postgres", "postgres")
    again = cli(env, "restore", "--globals", globals_id)
    assert again.code == 0, again.output
    assert "roles created (0)" in again.stdout and "tablespaces created (1): sg_space" in again.stdout
    assert pg.psql("SELECT count(*) FROM pg_tablespace WHERE spcname = 'sg_space'") == "1"

    # the database named globals: `latest --database globals` and its id restore the database
    restored = cli(env, "restore", "latest", "--database", "globals", "--target-db", "globals_copy", "--create")
    assert restored.code == 0, restored.output
    assert database_id in restored.stdout and pg.psql("SELECT count(*) FROM t", "globals_copy") == "42"
    refused = cli(env, "restore", "--globals", database_id)
    assert refused.code == 2 and "not of the globals" in refused.stderr
    not_a_db = cli(env, "restore", globals_id, "--target-db", "globals_copy2", "--create")
    assert not_a_db.code == 2 and f"restore --globals {globals_id}" in not_a_db.stderr
    shown = cli(env, "show", "latest", "--database", "globals", "--json")
    assert shown.code == 0 and shown.json()["id"] == database_id


def test_globals_options_that_do_not_go_together(base_env: dict[str, str], new_db: str) -> None:
    env = {**base_env, "POSTGRES_DB": new_db}
    for args in (("--globals", "--target-db", "x"), ("--dry-run", "latest"), ("--list", "--target-db", "x")):
        result = cli(env, "restore", *args)
        assert result.code == 2 and "Traceback" not in result.output, (args, result.output)
    none = cli(env, "restore", "--globals")
    assert none.code == 2 and "BACKUP_GLOBALS=true" in none.stderr
