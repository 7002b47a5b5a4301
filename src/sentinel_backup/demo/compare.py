"""Compare two databases table by table: row counts and an order-independent content hash."""

from __future__ import annotations

from collections.abc import Callable

from sentinel_backup.pg.source import HASH_EXPRESSION, STABLE_SETTINGS, list_tables, table_facts


def fingerprints(query: Callable[[str, str], str], database: str) -> dict[str, str]:
    """Table -> "rows:md5" of the database, via ``query(sql, database) -> JSON text``."""
    names = list_tables(lambda sql: query(sql, database))
    facts = table_facts(lambda sql: query(f"{STABLE_SETTINGS}; {sql}", database), names, HASH_EXPRESSION)
    return {name: str(value) for name, value in facts.items()}


def differences(left: dict[str, str], right: dict[str, str]) -> list[str]:
    return [name for name in sorted(set(left) | set(right)) if left.get(name) != right.get(name)]
