"""Artifact names and the suffixes beside them, without the manifest model (no pydantic):
what listing a destination needs (catalog, retention, check). ``model.manifest`` re-exports them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sentinel_backup.model.layout import split_logical

FORMAT_VERSION = 2  # 2: kind "physical" with its facts; version 1 documents are read unchanged
PREFIX = "sentinel_backup_"
GLOBALS_PREFIX = "sentinel_globals_"
MANIFEST_SUFFIX = ".manifest.json"
SHA256_SUFFIX = ".sha256"
DRILL_SUFFIX = ".drill.json"  # the drill record beside an artifact (written by drill.Drill)
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMP = r"\d{8}T\d{6}Z"
_EXT = r"sql|dump|dir\.tar"  # plain (.sql[.gz|.zst]), custom, directory (a tar of the folder)
_NAME = re.compile(rf"^(?:{PREFIX}(?P<db>.+)|{GLOBALS_PREFIX[:-1]})_(?P<stamp>{_STAMP})(?P<ext>\.(?:{_EXT})\S*)$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
# Files of the original shell version (``sentinel_backup_<db>_<YYYYMMDD_HHMMSS>.sql.gz[.enc]``, no
# manifest). The database and the date are optional: old scripts wrote other variants.
_LEGACY = re.compile(
    rf"^{PREFIX}(?:(?P<db>.+?)_)?(?P<date>\d{{4}}-?\d{{2}}-?\d{{2}})"
    r"(?:[_T-]?(?P<time>\d{2}[-:]?\d{2}[-:]?\d{2}))?\.sql\.gz(?:\.enc)?$"
)
_LEGACY_ANY = re.compile(rf"^{PREFIX}.+\.sql\.gz(?:\.enc)?$")


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def safe_name(database: str) -> str:
    """A database name made safe for a file name or object key (reversible enough to read)."""
    return _SAFE.sub(lambda m: "%" + "%".join(f"{b:02X}" for b in m.group().encode()), database)


def artifact_name(database: str | None, moment: datetime, extension: str) -> str:
    """``sentinel_backup_<db>_<stamp><ext>``, or ``sentinel_globals_<stamp><ext>`` for globals."""
    head = GLOBALS_PREFIX if database is None else f"{PREFIX}{safe_name(database)}_"
    return f"{head}{stamp(moment)}{extension}"


def backup_id(artifact: str) -> str:
    """The id of a backup: its artifact name without prefix and extension, after ``<server>/``
    for a named server's (``servers/<server>/<name>``)."""
    server, name = split_logical(artifact)
    match = _NAME.match(name)
    if match is None:
        return artifact
    plain = name[: match.start("ext")].removeprefix(PREFIX)
    return f"{server}/{plain}" if server else plain


def parse_name(key: str) -> tuple[str | None, datetime] | None:
    """(safe database name or None for globals, time) from an artifact name, or None."""
    match = _NAME.match(key)
    if match is None:
        return None
    moment = datetime.strptime(match.group("stamp"), STAMP_FORMAT).replace(tzinfo=UTC)
    return match.group("db"), moment


def is_legacy_name(key: str) -> bool:
    """A name the shell version wrote (and this tool never does): ``sentinel_backup_*.sql.gz[.enc]``
    without this tool's UTC stamp."""
    return parse_name(key) is None and _LEGACY_ANY.match(key) is not None


def parse_legacy_name(name: str) -> tuple[str | None, datetime | None]:
    """(database, UTC time) from a shell-version file name; either may be unknown."""
    match = _LEGACY.match(name)
    if match is None:
        return None, None
    digits = re.sub(r"\D", "", match.group("date") + (match.group("time") or "000000"))
    try:
        moment = datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        moment = None
    return match.group("db"), moment


def checksum_line(sha256: str, artifact: str) -> bytes:
    """A line in ``sha256sum -c`` format."""
    return f"{sha256}  {artifact}\n".encode()
