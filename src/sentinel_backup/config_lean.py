"""The settings without pydantic: the same environment and ``.env`` rules, the same values and
messages, for the commands whose start-up is their cost (``wal-push``, ``wal-fetch``, ``check``).

One source of truth: the fields (variables, types, defaults, bounds, which validators apply)
come from ``config_fields``, a table generated from the ``Settings`` schema
(``python -m sentinel_backup.config_table`` rewrites it; ``tests/unit/test_config_lean.py``
fails when it drifts and proves both readers agree field by field). The validators
themselves are the schema's, by name: a validator the schema gains that is not implemented
here stops the lean reader (a KeyError in the test), it never passes unchecked.

What pydantic-settings does, and this does too: the process environment wins over the .env
file; a variable set to the empty string is unset (``env_ignore_empty``), and so is a bare
``NAME`` line in the .env; of several names of one setting, the first one set in the environment wins, then the first in
the .env; values
are coerced as pydantic's lax mode does (``" 12 "`` and ``12.0`` are 12; ``yes``/``off`` are
booleans, not `` yes ``); errors name the variable, in field order, before the model-level
checks run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from sentinel_backup import choices
from sentinel_backup.config_derived import SettingsDerived
from sentinel_backup.config_fields import FIELDS, MODEL_CHECKS
from sentinel_backup.config_spec import FieldSpec
from sentinel_backup.config_values import parse_duration, parse_timeout
from sentinel_backup.errors import ConfigError

if TYPE_CHECKING:  # to the type checker a LeanSettings is a Settings: every consumer takes either
    from sentinel_backup.config import Settings as _Base
else:
    _Base = SettingsDerived

HINT = "fix the variables above in the environment or .env (see docs/configuration.md)"


def env_file_path(env_file: Path | None) -> Path:
    """The .env to read: ``--env-file`` (must exist), else SENTINEL_ENV_FILE, else ./.env."""
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"--env-file {env_file} does not exist", "give the path of an existing .env file")
    return env_file if env_file is not None else Path(os.environ.get("SENTINEL_ENV_FILE", ".env"))


def read_env_file(path: Path) -> dict[str, str | None]:
    """The .env's variables as pydantic-settings reads them (python-dotenv, UTF-8); {} when absent."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return dict(dotenv_values(path, encoding="utf-8"))


_UNSET = object()


def raw_values(file_values: Mapping[str, str | None], environ: Mapping[str, str]) -> dict[str, Any]:
    """Field name -> the raw value it gets (the environment wins; empty is unset), absent when unset."""
    env = {k: v for k, v in environ.items() if v != ""}
    dotenv = {k: v for k, v in file_values.items() if v is not None and v != ""}
    out: dict[str, Any] = {}
    for spec in FIELDS:
        for source in (env, dotenv):  # the environment wins, whichever of the field's names it uses
            value = next((source[a] for a in spec.aliases if a in source), _UNSET)
            if value is not _UNSET:
                out[spec.name] = value
                break
    return out


# --- coercion, as pydantic's lax mode does it from strings ------------------------------

_INT = re.compile(r"[+-]?\d+(?:_\d+)*(?:\.0+)?")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class _Invalid(Exception):
    def __init__(self, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


def _enum_message(cls: type[Enum]) -> str:
    names = [f"'{m.value}'" for m in cls]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"Input should be {listed}"


def _coerce(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        if spec.optional:
            return None
        raise _Invalid(_NONE_MESSAGES.get(spec.kind, f"Input should be a valid {spec.kind}"))
    if not isinstance(value, str):  # a value given in code (model_copy) is taken as it is
        return value
    if spec.kind == "str":
        return value
    if spec.kind == "path":
        return Path(value)
    if spec.kind == "bool":
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _Invalid("Input should be a valid boolean, unable to interpret input")
    if spec.kind == "int":
        text = value.strip()
        if not text.isascii() or not _INT.fullmatch(text):
            raise _Invalid("Input should be a valid integer, unable to parse string as an integer")
        number = int(text.split(".")[0])
        if spec.ge is not None and number < spec.ge:
            raise _Invalid(f"Input should be greater than or equal to {spec.ge}")
        if spec.le is not None and number > spec.le:
            raise _Invalid(f"Input should be less than or equal to {spec.le}")
        return number
    cls = _enum(spec)
    try:
        return cls(value)
    except ValueError:
        raise _Invalid(_enum_message(cls)) from None


_NONE_MESSAGES = {"str": "Input should be a valid string", "int": "Input should be a valid integer",
                  "bool": "Input should be a valid boolean", "path": "Input is not a valid path"}


def _enum(spec: FieldSpec) -> type[Enum]:
    cls = getattr(choices, spec.kind.removeprefix("enum:"))
    assert isinstance(cls, type) and issubclass(cls, Enum)
    return cls


def _default(spec: FieldSpec) -> Any:
    if spec.kind.startswith("enum:") and spec.default is not None:
        return _enum(spec)(spec.default)
    return spec.default


# --- the schema's validators, by name (config.Settings holds the originals) --------------

def _level(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().upper()
        return "WARN" if value == "WARNING" else value
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _empty_is_unset(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value.strip() if isinstance(value, str) else value


def _empty_optional(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _webhooks(value: str | None) -> str | None:
    if not value:
        return value
    from sentinel_backup.notify import split_target

    for item in value.split(","):
        if item.strip():
            split_target(item)
    return value


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _timeout(value: str) -> str:
    parse_timeout(value)
    return value


def _slot(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,63}", value.strip()):
        raise ValueError("must be 1-63 lowercase letters, digits or underscores (a replication slot name)")
    return value.strip()


def _zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a known time zone (use a name like UTC or Europe/Paris)") from None
    return value


def _dbs(value: str) -> str:
    if not [d for d in value.split(",") if d.strip()]:
        raise ValueError("names no database")
    return value


def _server(value: Any) -> Any:
    from sentinel_backup.model.layout import server_setting

    return server_setting(value)


VALIDATORS: dict[str, Any] = {
    "_level": _level, "_lower": _lower, "_empty_is_unset": _empty_is_unset, "_empty_optional": _empty_optional,
    "_webhooks": _webhooks, "_age": _duration, "_full_every": _duration, "_wal_age": _duration,
    "_slot": _slot, "_timeout": _timeout, "_zone": _zone, "_dbs": _dbs, "_server": _server,
}


def _model_check(name: str, s: LeanSettings) -> None:
    """The schema's model validators (after every field is valid), by name, in its order."""
    if name == "_directory_format":
        if s.pg_dump_jobs > 1 and s.backup_format is not choices.BackupFormat.DIRECTORY:
            raise ValueError(f"PG_DUMP_JOBS={s.pg_dump_jobs} needs BACKUP_FORMAT=directory"
                             " (pg_dump runs parallel only for the directory format); set PG_DUMP_JOBS=1 or"
                             " BACKUP_FORMAT=directory")
        if s.backup_format is choices.BackupFormat.DIRECTORY and s.postgres_container:
            raise ValueError("BACKUP_FORMAT=directory needs pg_dump on this host (it writes a folder), not in"
                             " POSTGRES_CONTAINER; use BACKUP_FORMAT=custom in container mode, or connect directly"
                             " (POSTGRES_HOST/POSTGRES_PORT) with matching client tools")
    elif name == "_levels_per_algorithm":
        level = s.compression_level
        if level is not None:
            if s.compression is choices.Compression.GZIP and not 1 <= level <= 9:
                raise ValueError("COMPRESSION_LEVEL for gzip must be 1-9")
            if s.compression is choices.Compression.ZSTD and not 1 <= level <= 22:
                raise ValueError("COMPRESSION_LEVEL for zstd must be 1-22")
    elif name == "_spool":
        if s.wal_push_async and s.wal_spool_dir is None:
            raise ValueError("WAL_PUSH_ASYNC=true needs WAL_SPOOL_DIR (a local folder on another disk than pg_wal)")
        if s.wal_fetch_prefetch and s.wal_spool_dir is None:
            raise ValueError("WAL_FETCH_PREFETCH needs WAL_SPOOL_DIR (where prefetched segments wait)")
    else:
        raise KeyError(f"model validator {name} of the schema has no lean twin in config_lean")


def describe(variable: str, kind: str, message: str, value: Any) -> str:
    """One problem as ``VARIABLE: problem (got value)``; secrets are never shown (config_env uses it too)."""
    if kind == "missing":
        return f"{variable} is required but not set"
    secret = variable.endswith(("PASSWORD", "SECRET_KEY", "URL", "URLS"))
    shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
    return f"{variable}: {message.removeprefix('Value error, ')}{shown}"


def _field(spec: FieldSpec, given: dict[str, Any], problems: list[str]) -> Any:
    if spec.name not in given:
        if spec.required:
            problems.append(describe(spec.aliases[0], "missing", "", None))
        return _default(spec)
    value = shown = given[spec.name]
    try:
        for name in reversed(spec.before):  # pydantic runs the last declared "before" validator first
            value = VALIDATORS[name](value)
        shown = value
        value = _coerce(spec, value)
        for name in spec.after:
            value = VALIDATORS[name](value)
    except _Invalid as exc:
        problems.append(describe(spec.aliases[0], exc.kind, exc.message, shown))
    except ValueError as exc:
        problems.append(describe(spec.aliases[0], "value_error", str(exc), shown))
    return value


class LeanSettings(_Base):
    """The settings as plain attributes (what ``Settings`` holds), built without pydantic."""

    def __init__(self, given: Mapping[str, Any]) -> None:
        problems: list[str] = []
        values = {spec.name: _field(spec, dict(given), problems) for spec in FIELDS}
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems), HINT)
        self.__dict__.update(values)
        self._aws_env: dict[str, str] = {}
        self._warnings: list[str] = []
        for name in MODEL_CHECKS:
            try:
                _model_check(name, self)
            except ValueError as exc:
                raise ConfigError("invalid configuration: " + describe("configuration", "value_error", str(exc), {}),
                                  HINT) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, **(update or {}))
        return copy

    def __repr__(self) -> str:
        secret = {s.name for s in FIELDS if s.secret}
        shown = ", ".join(f"{s.name}={getattr(self, s.name)!r}" for s in FIELDS if s.name not in secret)
        return f"LeanSettings({shown})"


def load_lean(env_file: Path | None = None, **overrides: Any) -> LeanSettings:
    """``config.load_settings`` without pydantic: the same file, precedence, values and messages;
    ``overrides`` (by variable name, e.g. ``SERVER_NAME``) win over both, as there."""
    path = env_file_path(env_file)
    file_values = read_env_file(path)
    given = raw_values(file_values, os.environ)
    given.update({spec.name: overrides[a] for spec in FIELDS for a in spec.aliases if a in overrides})
    settings = LeanSettings(given)
    from sentinel_backup.config_env import unknown_variables

    settings._warnings = unknown_variables(file_values, os.environ)
    if any(k.startswith("AWS_") for k in file_values):
        from sentinel_backup.storage.aws_env import from_env_file

        settings._aws_env = from_env_file(file_values, os.environ)
    return settings
