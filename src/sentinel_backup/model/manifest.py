"""The manifest: a JSON document beside each artifact, written last (the commit point).

An artifact without its manifest is an incomplete leftover, never a backup.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel_backup.errors import VerifyFailed
from sentinel_backup.model.names import (  # the names live where no pydantic is needed; re-exported here
    DRILL_SUFFIX,
    FORMAT_VERSION,
    GLOBALS_PREFIX,
    MANIFEST_SUFFIX,
    PREFIX,
    SHA256_SUFFIX,
    STAMP_FORMAT,
    artifact_name,
    backup_id,
    checksum_line,
    is_legacy_name,
    parse_legacy_name,
    parse_name,
    safe_name,
    stamp,
)


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


__all__ = [
    "DRILL_SUFFIX", "FORMAT_VERSION", "GLOBALS_PREFIX", "MANIFEST_SUFFIX", "PREFIX", "SHA256_SUFFIX", "STAMP_FORMAT",
    "CompressionInfo", "EncryptionInfo", "Manifest", "PhysicalFacts", "artifact_name", "backup_id", "checksum_line",
    "is_legacy_name", "parse_legacy_name", "parse_name", "safe_name", "stamp"
]
