"""What the environment and the ``.env`` file hold besides the settings: the names the tool
reads (from the schema's generated table, so no pydantic), and a warning for every unknown
(misspelled?) variable."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from sentinel_backup.config_fields import FIELDS

# Variables of the tool that are not settings of the schema.
OTHER_TOOL_VARIABLES = ("SENTINEL_ENV_FILE",)
# Non-tool variables a .env may hold for the system or a container (not misspellings).
SYSTEM_VARIABLES = ("TZ", "LANG", "LANGUAGE", "TMPDIR", "PATH", "HOME", "USER")
# First words of schema names too generic to claim in the environment (DOCKER_HOST, PG_VERSION
# of the postgres image, MAX_..., MIN_...): typos there are caught in the .env only.
_SHARED_PREFIXES = ("DOCKER_", "PG_", "MAX_", "MIN_")
_LIBPQ = re.compile(r"PG[A-Z]+")


def tool_variables() -> list[str]:
    """Every variable name the tool reads, from the schema."""
    return [*(name for spec in FIELDS for name in spec.aliases), *OTHER_TOOL_VARIABLES]


def tool_prefixes() -> tuple[str, ...]:
    """``POSTGRES_``, ``S3_``, ``RETENTION_``, ...: the first word of every schema variable."""
    firsts = {name.split("_", 1)[0] + "_" for name in tool_variables() if "_" in name}
    return tuple(sorted(firsts - set(_SHARED_PREFIXES)))


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_variables(file_values: Mapping[str, str | None], environ: Mapping[str, str]) -> list[str]:
    """A warning for every .env key the tool does not read, and for every environment variable
    with one of the tool's prefixes that it does not know, with the nearest known name."""
    known = tool_variables()
    aws: frozenset[str] = frozenset()
    if any(k.startswith("AWS_") for k in file_values):
        from sentinel_backup.storage.aws_env import variables  # botocore's tables: imported only when needed

        aws = variables()
    warnings = []
    for name in file_values:
        if name in known or name in aws or name in SYSTEM_VARIABLES:
            continue
        if _LIBPQ.fullmatch(name):
            if name not in environ:
                warnings.append(f"{name} in the .env file is not used: libpq variables are read from the process "
                                f"environment only (export {name} in the environment)")
            continue
        if name.startswith("AWS_"):
            warnings.append(f"{name} in the .env file is not an AWS SDK variable this tool passes on"
                            f"{_suggest(name, sorted(aws))}; it is ignored (export it if the SDK should see it)")
            continue
        warnings.append(f"unknown variable {name} in the .env file{_suggest(name, known)}: it is ignored")
    prefixes = tool_prefixes()
    for name in sorted(environ):
        if name.startswith(prefixes) and name not in known and name not in file_values:
            warnings.append(f"unknown variable {name} in the environment{_suggest(name, known)}: it is ignored")
    return warnings


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as ``VARIABLE: problem (got value)``; secrets are never shown."""
    from sentinel_backup.config_lean import describe

    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else ""
    variable = next((spec.aliases[0] for spec in FIELDS if spec.name == name), name or "configuration")
    return describe(variable, str(error.get("type")), str(error.get("msg", "invalid")), error.get("input"))
