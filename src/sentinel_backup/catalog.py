"""What backups exist: manifests found on every destination, merged by id.

A backup is listed only when its manifest is present (the commit point); artifacts
without one are incomplete leftovers, left to retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import log
from .errors import ConfigError, NotFound, SentinelError
from .manifest import DRILL_SUFFIX, MANIFEST_SUFFIX, Manifest
from .storage.base import Storage

logger = log.get("catalog")
DRILL_FIELDS = ("passed", "started_at", "destination", "restore_seconds", "tables_checked", "differences", "checks",
                "error")


@dataclass
class Entry:
    """One backup and where its copies live (destination name -> artifact key), and on which
    destinations a drill record lies beside it (destination name -> record key)."""

    manifest: Manifest
    locations: dict[str, str] = field(default_factory=dict)
    drills: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.manifest.id

    def to_json(self, drill: dict[str, Any] | None = None) -> dict[str, Any]:
        """The listing of this backup; ``drill`` is its newest drill record (None: never drilled)."""
        m = self.manifest
        doc: dict[str, Any] = {
            "id": m.id, "kind": m.kind, "database": m.database,
            "created_at": m.created_at.isoformat().replace("+00:00", "Z"),
            "size_bytes": m.size_bytes, "raw_size_bytes": m.raw_size_bytes, "sha256": m.sha256,
            "format": m.format, "compression": m.compression.algorithm,
            "encryption": m.encryption.model_dump() if m.encryption else None,
            "destinations": sorted(self.locations),
            "locations": {name: {"path" if name == "local" else "key": key} for name, key in self.locations.items()},
            "artifact": m.artifact, "duration_seconds": m.duration_seconds,
            "tables": len(m.tables) if m.tables is not None else None,
            "drilled": drill is not None,
            "drill": {k: drill.get(k) for k in DRILL_FIELDS} if drill is not None else None,
        }
        return doc


@dataclass
class Catalog:
    entries: list[Entry]
    errors: dict[str, str] = field(default_factory=dict)  # destination -> why it could not be listed

    def find(self, wanted: str, database: str | None = None) -> Entry:
        """A backup by id, or ``latest`` (of ``database`` when given)."""
        pool = [e for e in self.entries if database is None or e.manifest.database == database]
        if wanted == "latest":
            pool = [e for e in pool if e.manifest.kind == "database"] or pool
            databases = {e.manifest.database for e in pool}
            if len(databases) > 1 and database is None:
                raise ConfigError(f"`latest` is ambiguous: there are backups of {', '.join(sorted(databases))}",
                                  "add --database NAME or give a backup id (sentinel-backup list)")
            if not pool:
                raise NotFound("no backups found" + (f" of {database}" if database else ""),
                               "run `sentinel-backup backup` first, or check BACKUP_DIR / the bucket")
            return pool[0]
        for entry in self.entries:
            if entry.id == wanted or entry.manifest.artifact == wanted:
                return entry
        raise NotFound(f"no backup with id {wanted!r}", "run `sentinel-backup list` to see the ids")


def scan(destinations: list[Storage], *, strict: bool = True) -> Catalog:
    """Read every manifest on every destination, newest first."""
    merged: dict[str, Entry] = {}
    errors: dict[str, str] = {}
    for storage in destinations:
        try:
            listed = {o.key for o in storage.list()}
        except SentinelError as exc:
            if strict and len(destinations) == 1:
                raise
            errors[storage.name] = exc.message
            logger.warning(f"Cannot list {storage.name}: {exc.message}")
            continue
        for key in sorted(k for k in listed if k.endswith(MANIFEST_SUFFIX)):
            try:
                manifest = Manifest.from_json(storage.read_bytes(key), f"{storage.name}:{key}")
            except SentinelError as exc:
                logger.warning(f"Skipping {storage.name}:{key}: {exc.message}")
                continue
            entry = merged.setdefault(manifest.id, Entry(manifest))
            entry.locations[storage.name] = manifest.artifact
            if manifest.artifact + DRILL_SUFFIX in listed:
                entry.drills[storage.name] = manifest.artifact + DRILL_SUFFIX
    entries = sorted(merged.values(), key=lambda e: (e.manifest.created_at, e.id), reverse=True)
    return Catalog(entries, errors)
