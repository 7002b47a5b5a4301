"""Generates ``config_fields.py`` (the settings as data, for the lean reader ``config_lean``) from
the schema, ``config.Settings``: ``python -m sentinel_backup.config_table``. A test compares the
file with :func:`table_source`, so a change of the schema without regenerating fails."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

from sentinel_backup import choices


def _kind(annotation: Any) -> tuple[str, bool]:
    import types
    import typing

    args = typing.get_args(annotation)
    optional = isinstance(annotation, types.UnionType) and type(None) in args
    if optional:
        [annotation] = [a for a in args if a is not type(None)]
    kinds = {str: "str", int: "int", bool: "bool", Path: "path"}
    if annotation in kinds:
        return kinds[annotation], optional
    if isinstance(annotation, type) and issubclass(annotation, Enum) and getattr(choices, annotation.__name__, None):
        return f"enum:{annotation.__name__}", optional
    raise TypeError(f"a setting of type {annotation!r}: teach config_lean._coerce this type, then kinds here")


def table_source() -> str:
    """config_fields.py as it must read for the current schema."""
    from pydantic import AliasChoices
    from pydantic_core import PydanticUndefined

    from sentinel_backup.config import Settings

    decorators = Settings.__pydantic_decorators__
    rows = []
    for name, field in Settings.model_fields.items():
        kind, optional = _kind(field.annotation)
        alias = field.validation_alias
        aliases = tuple(str(c) for c in alias.choices) if isinstance(alias, AliasChoices) else (str(alias),)
        before = tuple(d.cls_var_name for d in decorators.field_validators.values()
                       if name in d.info.fields and d.info.mode == "before")
        after = tuple(d.cls_var_name for d in decorators.field_validators.values()
                      if name in d.info.fields and d.info.mode == "after")
        bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in field.metadata
                  if type(m).__name__ in ("Ge", "Le")}
        required = field.default is PydanticUndefined
        default = None if required else field.default
        default = default.value if isinstance(default, Enum) else default
        extra = {"optional": optional, "required": required, "default": default, "ge": bounds.get("ge"),
                 "le": bounds.get("le"), "before": before, "after": after, "secret": not field.repr}
        given = "".join(f", {k}={v!r}" for k, v in extra.items()
                        if (v is not None and v is not False and v != ()) or (k == "default" and v is False))
        rows.append(f"    FieldSpec({name!r}, {aliases!r}, {kind!r}{given}),")
    checks = tuple(d.cls_var_name for d in decorators.model_validators.values())
    return _TABLE_HEAD + "FIELDS: tuple[FieldSpec, ...] = (\n" + "\n".join(rows) + f"\n)\nMODEL_CHECKS = {checks!r}\n"


_TABLE_HEAD = '''# ruff: noqa: E501
"""GENERATED from config.Settings by ``python -m sentinel_backup.config_table``: do not edit.

The settings as data, for readers that must not import pydantic (config_lean, config_env).
tests/unit/test_config_lean.py fails when this drifts from the schema.
"""

from __future__ import annotations

from sentinel_backup.config_spec import FieldSpec

'''


if __name__ == "__main__":
    target = Path(__file__).with_name("config_fields.py")
    target.write_text(table_source())
    print(f"wrote {target}", file=sys.stderr)
