"""The shape of one setting as data (a row of the generated config_fields.FIELDS), without pydantic."""

from __future__ import annotations

from typing import Any, NamedTuple


class FieldSpec(NamedTuple):
    name: str
    aliases: tuple[str, ...]
    kind: str  # str, int, bool, path, enum:<choices class>
    optional: bool = False
    required: bool = False
    default: Any = None
    ge: int | None = None
    le: int | None = None
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    secret: bool = False
