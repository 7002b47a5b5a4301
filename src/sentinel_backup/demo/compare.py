"""Compare two databases table by table: row counts and an order-independent content hash."""

from __future__ import annotations

from collections.abc import Callable

# One statement returning {"schema.table": "count:md5"} for every table with data.
CONTENT_SQL = r"""
SELECT coalesce(json_object_agg(name, fingerprint ORDER BY name), '{}'::json) FROM (
  SELECT format('%I.%I', ns.nspname, c.relname) AS name,
         (xpath('/row/f/text()', query_to_xml(format(
            'SELECT count(*) || '':'' || coalesce(md5(string_agg(md5(t::text), '''' ORDER BY md5(t::text))), '''')'
            ' AS f FROM %I.%I t', ns.nspname, c.relname), false, true, '')))[1]::text AS fingerprint
  FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'm') AND ns.nspname NOT IN ('pg_catalog', 'information_schema')
    AND ns.nspname NOT LIKE 'pg\_%'
) t
"""


def fingerprints(query: Callable[[str, str], str], database: str) -> dict[str, str]:
    """Table -> "rows:md5" of the database, via ``query(sql, database) -> JSON text``."""
    import json

    return dict(json.loads(query(CONTENT_SQL, database)))


def differences(left: dict[str, str], right: dict[str, str]) -> list[str]:
    return [name for name in sorted(set(left) | set(right)) if left.get(name) != right.get(name)]
