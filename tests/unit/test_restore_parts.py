"""The pure parts of selective and globals restores: pg_restore's selection rules over the
manifest's table names, and the globals SQL split into statements and classified."""

from __future__ import annotations

from sentinel_backup.logical.globals import classify, dry_run_text, mask, plan, split_statements
from sentinel_backup.logical.selective import RestoreSelection, split_qualified

TABLES = {"app.orders": 10, "app.customers": 5, '"Weird Schema"."Mixed ""Case"" Table"': 3, "public.orders": 7,
          '"a.b".c': 1}


def test_split_qualified_unquotes_like_format_I() -> None:
    assert split_qualified("app.orders") == ("app", "orders")
    assert split_qualified('"Weird Schema"."Mixed ""Case"" Table"') == ("Weird Schema", 'Mixed "Case" Table')
    assert split_qualified('"a.b".c') == ("a.b", "c")
    assert split_qualified("orders") == ("public", "orders")


def test_selection_follows_pg_restore() -> None:
    by_name = RestoreSelection(tables=("orders",))
    assert by_name.expected(TABLES) == {"app.orders": 10, "public.orders": 7}  # -t alone: any schema
    both = RestoreSelection(schemas=("app",), tables=("orders",))
    assert both.expected(TABLES) == {"app.orders": 10}
    assert both.pg_restore_args() == ["-n", "app", "-t", "orders"]
    schema = RestoreSelection(schemas=("Weird Schema", "a.b"))
    assert set(schema.expected(TABLES) or {}) == {'"Weird Schema"."Mixed ""Case"" Table"', '"a.b".c'}
    assert schema.schemas_needed(TABLES) == ["Weird Schema", "a.b"]
    assert by_name.schemas_needed(TABLES) == ["app", "public"]
    assert RestoreSelection().expected(TABLES) == TABLES and RestoreSelection().empty


GLOBALS = r"""\restrict abc123
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';

CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE "App; Owner";
ALTER ROLE "App; Owner" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:a;b''c';
COMMENT ON ROLE "App; Owner" IS E'line one;\nit''s \' here';
GRANT postgres TO "App; Owner" GRANTED BY postgres;
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';

\unrestrict abc123
"""


def test_globals_sql_is_split_into_statements() -> None:
    statements = split_statements(GLOBALS)
    assert statements[0] == "SET default_transaction_read_only = off"
    assert "ALTER ROLE \"App; Owner\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:a;b''c'" in statements
    assert "COMMENT ON ROLE \"App; Owner\" IS E'line one;\\nit''s \\' here'" in statements
    assert len(statements) == 9 and not any(s.startswith(("\\", "--")) for s in statements)


def test_existing_roles_and_tablespaces_are_skipped() -> None:
    planned = plan(GLOBALS, roles={"postgres"}, tablespaces={"fast"})
    skipped = [(s.kind, s.name) for s in planned if s.skip]
    assert skipped == [("create_role", "postgres"), ("role", "postgres"), ("create_tablespace", "fast")]
    run = [s for s in planned if not s.skip]
    assert [s.kind for s in run] == ["set", "set", "create_role", "role", "role", "other"]
    assert run[2].name == "App; Owner"
    text = dry_run_text(planned)
    assert "-- skipped (role postgres exists): CREATE ROLE postgres;" in text and 'CREATE ROLE "App; Owner";' in text
    assert classify("GRANT a TO b", set(), set()).kind == "other"


def test_passwords_are_masked() -> None:
    assert mask("ALTER ROLE x WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:a''b'") == \
        "ALTER ROLE x WITH LOGIN PASSWORD '***'"
