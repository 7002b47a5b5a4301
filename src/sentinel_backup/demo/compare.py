"""Compare two databases table by table: row counts and an order-independent content hash."""

from __future__ import annotations

import json
from collections.abc import Callable

from ..source import STABLE_SETTINGS, TABLE_HASHES_SQL


def fingerprints(query: Callable[[str, str], str], database: str) -> dict[str, str]:
    """Table -> "rows:md5" of the database, via ``query(sql, database) -> JSON text``."""
    return dict(json.loads(query(f"{STABLE_SETTINGS}; {TABLE_HASHES_SQL}", database)))


def differences(left: dict[str, str], right: dict[str, str]) -> list[str]:
    return [name for name in sorted(set(left) | set(right)) if left.get(name) != right.get(name)]
