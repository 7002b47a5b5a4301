"""pg.source and pg.child pure logic: connection strings, per-table statements, failure wording."""

from __future__ import annotations

import json

from sentinel_backup.pg.child import source_error
from sentinel_backup.pg.source import FACTS_BATCH, conninfo, per_table_statements, table_facts


def test_conninfo_quotes_any_database_name() -> None:
    assert conninfo("app") == "dbname='app'"
    assert conninfo("it's a \\ db") == "dbname='it\\'s a \\\\ db'"


def test_facts_are_read_in_batches() -> None:
    names = [f'"s"."t{i}"' for i in range(FACTS_BATCH + 3)]
    statements = per_table_statements(names, "count(*)")
    assert len(statements) == 2 and statements[1].count("UNION ALL") == 2
    assert "(SELECT count(*) FROM \"s\".\"t0\" t)" in statements[0]
    seen: list[str] = []

    def query(sql: str) -> str:
        seen.append(sql)
        return json.dumps({f"n{len(seen)}": len(seen)})

    assert table_facts(query, names, "count(*)") == {"n1": 1, "n2": 2} and len(seen) == 2


def test_failures_carry_the_tools_words_and_a_hint() -> None:
    error = source_error("pg_dump", "pg_dump: error: connection to server failed:\n  Connection refused\n", 1)
    assert error.message == ("pg_dump failed (exit code 1): pg_dump: error: connection to server failed:"
                             " Connection refused")
    assert error.hint is not None and "POSTGRES_HOST" in error.hint
    killed = source_error("psql", "", -9)
    assert killed.message == "psql failed (killed by signal 9): no error text" and killed.hint is None
    assert "LOCK_WAIT_TIMEOUT" in (source_error("pg_dump", "ERROR: canceling statement due to lock timeout", 1).hint
                                   or "")
    assert error.describe() == f"{error.message} (hint: {error.hint})"
