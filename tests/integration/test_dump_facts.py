"""The manifest's table facts describe exactly what pg_dump dumped, and a locked table
fails the backup promptly, naming the table and the session holding it.

The table set computed from PG_DUMP_OPTIONS is compared with the table of contents
(``pg_restore -l``) of a real custom-format dump made with the same options.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from sentinel_backup.config import settings_from
from sentinel_backup.demo.cluster import TempCluster
from sentinel_backup.logical.selection import parse_options, selection_sql
from sentinel_backup.pg.source import Source
from tests.helpers import Result, cli

SCHEMA = """
CREATE SCHEMA app; CREATE SCHEMA audit; CREATE SCHEMA "Weird.Schema";
CREATE TABLE public.plain (id int); INSERT INTO public.plain SELECT generate_series(1, 5);
CREATE TABLE public."MixedCase" (id int); INSERT INTO public."MixedCase" VALUES (1), (2);
CREATE TABLE public.mixedcase (id int); INSERT INTO public.mixedcase VALUES (1);
CREATE TABLE public.audit_log (id int); INSERT INTO public.audit_log VALUES (1);
CREATE UNLOGGED TABLE public.scratch (id int); INSERT INTO public.scratch VALUES (1), (2), (3);
CREATE TABLE "Weird.Schema"."Odd.Name" (id int); INSERT INTO "Weird.Schema"."Odd.Name" VALUES (7);
CREATE TABLE app.orders (id int); INSERT INTO app.orders SELECT generate_series(1, 11);
CREATE TABLE app.items (id int); INSERT INTO app.items SELECT generate_series(1, 4);
CREATE TABLE app.parent (id int); INSERT INTO app.parent VALUES (1);
CREATE TABLE app.child (extra int) INHERITS (app.parent); INSERT INTO app.child VALUES (2, 2), (3, 3);
CREATE TABLE app.measure (at date, v int) PARTITION BY RANGE (at);
CREATE TABLE app.measure_2023 PARTITION OF app.measure FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE app.measure_2024 PARTITION OF app.measure FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO app.measure VALUES ('2023-05-01', 1), ('2024-05-01', 2), ('2024-06-01', 3);
CREATE MATERIALIZED VIEW app.mv AS SELECT id FROM app.orders WHERE id < 4;
CREATE MATERIALIZED VIEW app.mv_empty AS SELECT id FROM app.orders WITH NO DATA;
CREATE VIEW app.v AS SELECT * FROM app.orders;
CREATE SEQUENCE app.seq;
CREATE TABLE audit.events (id int); INSERT INTO audit.events SELECT generate_series(1, 9);
"""

OPTION_SETS = [
    "",
    "--exclude-table-data=audit.*",
    "-N audit",
    "--exclude-schema=audit -T public.audit_log",
    "--exclude-sch=audit",
    "-n app",
    "-napp -tpublic.plain",
    "-t plain -t MixedCase",
    "-t plain --table '\"MixedCase\"'",
    "--table=app.measure*",
    "-t app.measure",
    "-t '\"Weird.Schema\".\"Odd.Name\"'",
    "-t '\"Weird.Schema\".*' -t MIXEDCASE",
    "-T app.ite?s --exclude-table-data app.parent",
    "-t 'app.[ip]*'",
    "-t app.o+rders -t '*.plain'",
    "--exclude-table-data=APP.MV",
    "-s",
    "--schema-only -n app",
    "--section=pre-data --section=data",
    "--no-unlogged-table-data",
    "-v --inserts -Z 1 -O -x",
]


@pytest.fixture(scope="module")
def facts_db(pg: TempCluster) -> str:
    name = "facts_selection"
    pg.psql(f"DROP DATABASE IF EXISTS {name}")
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql(SCHEMA, name)
    return name


def toc(pg: TempCluster, database: str, options: list[str], tmp_path: Path) -> dict[str, set[str]]:
    """TOC entries of a real custom-format dump: description -> {"schema.name"} (names quoted as %I.%I)."""
    archive = tmp_path / "dump.custom"
    subprocess.run([str(pg.bin_dir / "pg_dump"), "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", pg.user,
                    "-F", "c", "-f", str(archive), *options, database], check=True, capture_output=True)
    listing = subprocess.run([str(pg.bin_dir / "pg_restore"), "-l", str(archive)], check=True,
                             capture_output=True, text=True).stdout
    quote = json.loads(pg.psql("SELECT json_object_agg(n, quote_ident(n)) FROM (SELECT nspname AS n FROM "
                               "pg_namespace UNION SELECT relname FROM pg_class) s", database))
    entries: dict[str, set[str]] = {}
    for line in listing.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        for desc in ("MATERIALIZED VIEW DATA", "TABLE DATA", "TABLE"):
            head = line.split(" ", 3)[3] if line.count(" ") >= 3 else ""
            rest = head[len(desc) + 1:].split(" ")
            if head.startswith(desc + " ") and len(rest) == 3:  # schema name owner (not "TABLE ATTACH ...")
                entries.setdefault(desc, set()).add(f"{quote[rest[0]]}.{quote[rest[1]]}")
                break
    return entries


def computed(pg: TempCluster, database: str, options: list[str]) -> list[list[object]]:
    listed = json.loads(pg.psql(selection_sql(parse_options(options)), database))
    assert isinstance(listed, list)
    return listed


@pytest.mark.parametrize("options", OPTION_SETS)
def test_computed_tables_match_pg_dumps_table_of_contents(pg: TempCluster, facts_db: str, options: str,
                                                          tmp_path: Path) -> None:
    argv = shlex.split(options)
    entries = toc(pg, facts_db, argv, tmp_path)
    listed = computed(pg, facts_db, argv)
    partitioned = set(pg.psql("SELECT format('%I.%I', relnamespace::regnamespace::text, relname) FROM pg_class"
                              " WHERE relkind = 'p'", facts_db).splitlines())
    assert {n for n, kind, data in listed if kind == "r" and data} == entries.get("TABLE DATA", set())
    assert {n for n, kind, data in listed if kind == "m" and data} == entries.get("MATERIALIZED VIEW DATA", set())
    assert {n for n, kind, _ in listed if kind == "r"} == entries.get("TABLE", set()) - partitioned


@pytest.mark.parametrize(("pg16_form", "pg15_equivalent"), [
    ("--table-and-children=app.measure", "-t app.measure -t app.measure_2023 -t app.measure_2024"),
    ("--table-and-children=app.parent -t plain", "-t app.parent -t app.child -t plain"),
    ("--exclude-table-and-children=app.measure", "-T app.measure -T app.measure_2023 -T app.measure_2024"),
    ("--exclude-table-data-and-children=app.parent", "--exclude-table-data=app.parent --exclude-table-data=app.child"),
])
def test_and_children_forms_match_their_explicit_equivalent(pg: TempCluster, facts_db: str, pg16_form: str,
                                                            pg15_equivalent: str, tmp_path: Path) -> None:
    """The test server's pg_dump is 15: the PG16 forms are compared with the tables they name."""
    entries = toc(pg, facts_db, shlex.split(pg15_equivalent), tmp_path)
    listed = computed(pg, facts_db, shlex.split(pg16_form))
    assert {n for n, kind, data in listed if kind == "r" and data} == entries.get("TABLE DATA", set())
    assert computed(pg, facts_db, shlex.split(pg15_equivalent)) == listed


def test_snapshot_records_rows_of_dumped_tables_and_zero_for_excluded_data(pg: TempCluster, facts_db: str) -> None:
    settings = settings_from({**pg.env(), "POSTGRES_DB": facts_db, "BACKUP_DIR": "/nonexistent"})
    selection = parse_options(["--exclude-table-data=audit.*", "-T", "app.items"])
    with Source(settings).snapshot(facts_db, hashes=True, selection=selection) as snap:
        assert snap.tables["audit.events"] == 0
        assert snap.tables["app.orders"] == 11
        assert snap.tables["app.mv"] == 3
        assert "app.items" not in snap.tables
        assert "app.mv_empty" not in snap.tables  # not populated: pg_dump emits no REFRESH
        assert snap.tables['public."MixedCase"'] == 2
        assert snap.tables['"Weird.Schema"."Odd.Name"'] == 1
        assert snap.hashes is not None and set(snap.hashes) == set(snap.tables)
        assert snap.hashes["audit.events"] == "0:"
        assert snap.hashes["app.orders"].startswith("11:")


def test_excluded_table_data_backs_up_restores_and_drills(pg: TempCluster, new_db: str,
                                                          base_env: dict[str, str]) -> None:
    # without the unpopulated matview, whose count alone failed backups before
    pg.psql(SCHEMA.replace("CREATE MATERIALIZED VIEW app.mv_empty", "CREATE VIEW app.mv_empty").replace(
        " WITH NO DATA", ""), new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "PG_DUMP_OPTIONS": "--exclude-table-data=audit.*"}
    backup = cli(env, "backup")
    assert backup.code == 0, backup.output
    manifest = json.loads(next(Path(env["BACKUP_DIR"]).glob("*.manifest.json")).read_text())
    assert manifest["tables"]["audit.events"] == 0
    assert manifest["tables"]["app.orders"] == 11
    drill = cli(env, "verify", "latest", "--restore")
    assert drill.code == 0, drill.output
    target = f"{new_db}_restored"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create")
    try:
        assert restored.code == 0, restored.output
        assert pg.psql("SELECT count(*) FROM audit.events", target) == "0"
        assert pg.psql("SELECT count(*) FROM app.orders", target) == "11"
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", check=False)


def test_schema_only_backup_drills_with_every_table_at_zero(pg: TempCluster, new_db: str,
                                                            base_env: dict[str, str]) -> None:
    pg.psql(SCHEMA, new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "PG_DUMP_OPTIONS": "-s", "MIN_BACKUP_SIZE": "0"}
    backup = cli(env, "backup")
    assert backup.code == 0, backup.output
    manifest = json.loads(next(Path(env["BACKUP_DIR"]).glob("*.manifest.json")).read_text())
    assert manifest["tables"] and set(manifest["tables"].values()) == {0}
    drill = cli(env, "verify", "latest", "--restore")
    assert drill.code == 0, drill.output


def test_options_that_cannot_be_interpreted_are_refused_before_any_dump(pg: TempCluster, new_db: str,
                                                                        base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": new_db, "PG_DUMP_OPTIONS": "--filter=/etc/sentinel/filter.txt"}
    result = cli(env, "backup")
    assert result.code == 2, result.output
    assert "--filter" in result.output and "Traceback" not in result.output
    assert not list(Path(env["BACKUP_DIR"]).glob("*.manifest.json"))


def test_facts_need_no_xml_functions(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    """A role that may not run query_to_xml/xpath (as on a server built without libxml) still backs up."""
    pg.psql(SCHEMA, new_db)
    pg.psql("DROP ROLE IF EXISTS noxml; CREATE ROLE noxml LOGIN PASSWORD 'noxml'")
    pg.psql("REVOKE EXECUTE ON FUNCTION pg_catalog.query_to_xml(text, boolean, boolean, text) FROM PUBLIC;"
            "REVOKE EXECUTE ON FUNCTION pg_catalog.xpath(text, xml, text[]) FROM PUBLIC;"
            "GRANT USAGE ON SCHEMA app, audit, \"Weird.Schema\" TO noxml;"
            "GRANT SELECT ON ALL TABLES IN SCHEMA public, app, audit, \"Weird.Schema\" TO noxml;"
            "GRANT SELECT ON ALL SEQUENCES IN SCHEMA app TO noxml", new_db)
    try:
        env = {**base_env, "POSTGRES_DB": new_db, "POSTGRES_USER": "noxml", "POSTGRES_PASSWORD": "noxml",
               "PG_DUMP_OPTIONS": "--no-owner"}
        result = cli(env, "backup")
        assert result.code == 0, result.output
        manifest = json.loads(next(Path(env["BACKUP_DIR"]).glob("*.manifest.json")).read_text())
        assert manifest["tables"]["app.orders"] == 11
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {new_db} WITH (FORCE)", check=False)
        pg.psql("DROP ROLE IF EXISTS noxml", check=False)


# --- locks --------------------------------------------------------------------------------
def test_a_locked_table_fails_the_backup_naming_it_and_its_holder(pg: TempCluster, new_db: str,
                                                                  base_env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE free (id int); INSERT INTO free VALUES (1);"
            "CREATE TABLE locked (id int); INSERT INTO locked VALUES (1)", new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "LOCK_WAIT_TIMEOUT": "3s", "MIN_BACKUP_SIZE": "0"}
    with psycopg.connect(pg.dsn(new_db), application_name="lock-holder") as holder:
        holder.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        holder_pid = holder.info.backend_pid
        t0 = time.monotonic()
        result = cli(env, "backup", timeout=120)
        elapsed = time.monotonic() - t0
        holder.rollback()
    assert result.code == 1, result.output
    assert elapsed < 60, elapsed  # bounded by LOCK_WAIT_TIMEOUT, not by the holder
    assert "waiting for a lock on table public.locked" in result.output
    assert f"pid {holder_pid}" in result.output and "lock-holder" in result.output
    assert "LOCK_WAIT_TIMEOUT" in result.output and "Traceback" not in result.output
    warnings = [line for line in result.output.splitlines() if "Waiting for a lock on public.locked" in line]
    assert warnings and f"pid {holder_pid}" in warnings[0]
    backups = Path(env["BACKUP_DIR"])
    assert not list(backups.glob("*.manifest.json")) and not list(backups.glob("sentinel_backup_*"))


def test_a_lock_released_in_time_lets_the_backup_complete(pg: TempCluster, new_db: str,
                                                          base_env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE briefly (id int); INSERT INTO briefly VALUES (1), (2)", new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "LOCK_WAIT_TIMEOUT": "2m", "MIN_BACKUP_SIZE": "0"}
    results: list[Result] = []
    with psycopg.connect(pg.dsn(new_db), application_name="brief-holder") as holder:
        holder.execute("LOCK TABLE briefly IN ACCESS EXCLUSIVE MODE")
        run = threading.Thread(target=lambda: results.append(cli(env, "backup", timeout=120)))
        run.start()
        try:
            waiting = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sentinel-backup'"
                       " AND wait_event_type = 'Lock'")
            for _ in range(600):
                if pg.psql(waiting) != "0":
                    break
                time.sleep(0.1)
            time.sleep(5)  # the watcher looks after 2 s of waiting
        finally:
            holder.rollback()
            run.join()
    result = results[0]
    assert result.code == 0, result.output
    assert "Waiting for a lock on public.briefly" in result.output and "brief-holder" in result.output
    manifest = json.loads(next(Path(env["BACKUP_DIR"]).glob("*.manifest.json")).read_text())
    assert manifest["tables"] == {"public.briefly": 2}
