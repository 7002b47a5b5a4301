"""The manifest: a JSON document beside each artifact, written last (the commit point).

An artifact without its manifest is an incomplete leftover, never a backup.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel_backup.errors import VerifyFailed
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


class CompressionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    algorithm: str
    level: int


class EncryptionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str
    key_id: str  # a non-secret identifier: recipients for age, key fingerprint for AES


class PhysicalFacts(BaseModel):
    """What a physical base backup is: where it starts and ends in the WAL, of which cluster.
    The WAL from ``start_wal`` to the segment holding ``stop_lsn`` (on ``timeline``) is what
    the backup needs to reach consistency; ``wal_included`` says whether it is in the tar."""

    model_config = ConfigDict(extra="allow")
    system_identifier: str
    timeline: int
    start_lsn: str  # "0/2000028"
    stop_lsn: str
    start_wal: str  # the WAL file holding start_lsn, e.g. "000000010000000000000002"
    stop_wal: str
    wal_segment_size: int
    wal_included: bool = True  # pg_basebackup -X fetch: the needed WAL is inside the tar
    backup_label: str = ""  # the label pg_basebackup was given
    backup_manifest_key: str | None = None  # PostgreSQL's own backup_manifest, stored beside
    backup_manifest_sha256: str | None = None  # of its plaintext (what an incremental backup's parent must be)
    tablespaces: list[dict[str, Any]] = Field(default_factory=list)  # oid, location, artifact key
    pg_basebackup_version: str | None = None
    # incremental chains (PostgreSQL 17+): the parent's id, the chain's full backup, place in it
    parent_id: str | None = None
    chain_root_id: str | None = None
    chain_position: int = 0
    start_time: datetime | None = None  # server time at start and end of the backup (from the
    stop_time: datetime | None = None  # backup label / history file): the earliest reachable point


class Manifest(BaseModel):
    """What, when and how one backup was taken. ``format_version`` guards readers."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    id: str
    kind: Literal["database", "globals", "physical"] = "database"
    database: str
    artifact: str
    created_at: datetime
    finished_at: datetime
    duration_seconds: float
    tool_version: str
    hostname: str
    server: str = ""  # SERVER_NAME it was taken under ("": unnamed, as every backup before it existed)
    source: dict[str, Any] = Field(default_factory=dict)
    server_version: str | None = None
    pg_dump_version: str | None = None
    format: Literal["plain", "custom", "directory", "tar"] = "plain"
    compression: CompressionInfo
    encryption: EncryptionInfo | None = None
    raw_size_bytes: int
    raw_sha256: str
    size_bytes: int
    sha256: str
    snapshot: str | None = None
    tables: dict[str, int] | None = None
    table_hashes: dict[str, str] | None = None  # MANIFEST_TABLE_HASHES: "rows:md5" per table
    physical: PhysicalFacts | None = None  # kind "physical" only

    @property
    def manifest_key(self) -> str:
        return self.artifact + MANIFEST_SUFFIX

    @property
    def checksum_key(self) -> str:
        return self.artifact + SHA256_SUFFIX

    def to_json(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise VerifyFailed(f"{where}: manifest is not valid JSON ({exc})", "the manifest is damaged") from None
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise VerifyFailed(f"{where}: manifest format_version {version!r} is not supported by this version",
                               "upgrade sentinel-backup to read it")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise VerifyFailed(f"{where}: manifest is invalid: {exc.errors()[0]['msg']}",
                               "the manifest is damaged") from None


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
