"""What backups exist: manifests found on every destination, merged by id.

Manifests are looked for where ``model.layout`` puts backups: logical ones at the root (the
unnamed server's) and under ``servers/<server>/``, physical base backups under
``basebackups/<system id>/``. A catalog scanned for one server (``scan(..., server=NAME)``) holds
that server's backups in ``entries`` (what ``list`` and ``latest`` see); the other servers'
are kept aside, so that any backup is still found by its id. How a copy's location is shown
comes from its backend (``Storage.locate``).

A backup is listed only when its manifest is present (the commit point); artifacts
without one are incomplete leftovers, left to retention. The one exception, on request
(``legacy=True``: ``list``, ``verify``, ``restore``): files of the original shell version
(``sentinel_backup_<db>_<YYYYMMDD_HHMMSS>.sql.gz[.enc]``, recognised by name as retention does)
are listed as *legacy* entries with a description synthesized from the name and the stored
size. Nothing else about them is known (no SHA-256 unless a ``.sha256`` file lies beside them,
no row counts), so ``latest`` never picks one: they are taken by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sentinel_backup import log
from sentinel_backup.errors import ConfigError, NotFound, SentinelError, UnknownName
from sentinel_backup.model.layout import BASE_ROOT, SERVERS_ROOT, handle_for, split_logical
from sentinel_backup.model.names import DRILL_SUFFIX, MANIFEST_SUFFIX, is_legacy_name, parse_legacy_name
from sentinel_backup.model.pin import PIN_SUFFIX, Pin
from sentinel_backup.model.pin import read as read_pin
from sentinel_backup.storage.base import ObjectInfo, Storage

if TYPE_CHECKING:  # the manifest model (pydantic) loads when a manifest is read, not to list an empty folder
    from sentinel_backup.config import Settings
    from sentinel_backup.model.manifest import Manifest

logger = log.get("catalog")
UNKNOWN_DATABASE = "(unknown)"
LEGACY_TOOL = "shell scripts (legacy)"
DRILL_FIELDS = ("passed", "started_at", "destination", "restore_seconds", "tables_checked", "differences", "checks",
                "error", "recovery_seconds", "reached_time", "reached_lsn", "restore_point",
                "amcheck_seconds")  # the last five: physical


@dataclass
class Entry:
    """One backup and where its copies live (destination name -> artifact key), and on which
    destinations a drill record lies beside it (destination name -> record key)."""

    manifest: Manifest
    locations: dict[str, str] = field(default_factory=dict)
    drills: dict[str, str] = field(default_factory=dict)
    legacy: bool = False  # a shell-version file without manifest: ``manifest`` is synthesized from its name
    where: dict[str, dict[str, str]] = field(default_factory=dict)  # destination -> its backend's ``locate``
    pin: Pin | None = None  # pinned (``<artifact>.pin.json`` on any destination): retention never removes it
    pins: set[str] = field(default_factory=set)  # destinations holding the pin sidecar

    def add_copy(self, storage: Storage, key: str) -> None:
        self.locations[storage.name] = key
        self.where[storage.name] = storage.locate(key)

    def _locations_json(self) -> dict[str, dict[str, str]]:
        return {name: self.where.get(name, {"key": key}) for name, key in self.locations.items()}

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def server(self) -> str:
        """The SERVER_NAME it was taken under ("": unnamed): a logical backup's folder says it, a
        physical one's manifest."""
        return server_of(self.manifest)

    def to_json(self, drill: dict[str, Any] | None = None) -> dict[str, Any]:
        """The listing of this backup; ``drill`` is its newest drill record (None: never drilled)."""
        m = self.manifest
        if self.legacy:
            return self._legacy_json()
        doc: dict[str, Any] = {
            "id": m.id, "kind": m.kind, "server": self.server, "database": m.database,
            "created_at": m.created_at.isoformat().replace("+00:00", "Z"),
            "size_bytes": m.size_bytes, "raw_size_bytes": m.raw_size_bytes, "sha256": m.sha256,
            "format": m.format, "compression": m.compression.algorithm,
            "encryption": m.encryption.model_dump() if m.encryption else None,
            "destinations": sorted(self.locations),
            "locations": self._locations_json(),
            "artifact": m.artifact, "duration_seconds": m.duration_seconds,
            "tables": len(m.tables) if m.tables is not None else None,
            "drilled": drill is not None,
            "drill": {k: drill.get(k) for k in DRILL_FIELDS} if drill is not None else None,
            "legacy": False,
            "physical": _physical_json(m),
            "pinned": self.pin_json(),
        }
        return doc

    def pin_json(self) -> dict[str, str] | None:
        return {"note": self.pin.note, "pinned_at": self.pin.pinned_at} if self.pin is not None else None

    def _legacy_json(self) -> dict[str, Any]:
        """The same keys; what a shell-version file cannot tell is null."""
        m = self.manifest
        return {
            "id": m.id, "kind": m.kind, "server": "", "database": m.database,
            "created_at": m.created_at.isoformat().replace("+00:00", "Z"),
            "size_bytes": m.size_bytes, "raw_size_bytes": None, "sha256": None,
            "format": m.format, "compression": m.compression.algorithm,
            "encryption": {"method": m.encryption.method, "key_id": None} if m.encryption else None,
            "destinations": sorted(self.locations),
            "locations": self._locations_json(),
            "artifact": m.artifact, "duration_seconds": None, "tables": None, "drilled": False, "drill": None,
            "legacy": True, "pinned": None,
        }


def server_of(m: Manifest) -> str:
    return m.server if m.kind == "physical" else split_logical(m.artifact)[0]


def _physical_json(m: Manifest) -> dict[str, Any] | None:
    """A physical backup's WAL range and the earliest point it can reach (its end: consistency)."""
    f = m.physical
    if f is None:
        return None
    reach = f.stop_time or m.finished_at
    return {"system_identifier": f.system_identifier, "timeline": f.timeline, "start_lsn": f.start_lsn,
            "stop_lsn": f.stop_lsn, "start_wal": f.start_wal, "stop_wal": f.stop_wal,
            "earliest_reachable_time": reach.isoformat().replace("+00:00", "Z"),
            "tablespaces": len(f.tablespaces), "backup_manifest": f.backup_manifest_key,
            "parent_id": f.parent_id, "chain_root_id": f.chain_root_id or m.id, "chain_position": f.chain_position}


@dataclass
class Catalog:
    entries: list[Entry]  # of the server scanned for (every server's when scanned for none)
    errors: dict[str, str] = field(default_factory=dict)  # destination -> why it could not be listed
    others: list[Entry] = field(default_factory=list)  # other servers' backups: found by id only

    def find(self, wanted: str, database: str | None = None) -> Entry:
        """A backup by id, or ``latest`` (of ``database`` when given)."""
        pool = [e for e in self.entries if database is None or e.manifest.database == database]
        if wanted == "latest":  # the newest backup with a manifest: a legacy file is only taken by name
            legacy = [e for e in pool if e.legacy]
            pool = [e for e in pool if not e.legacy]
            pool = [e for e in pool if e.manifest.kind == "database"] or pool
            databases = {e.manifest.database for e in pool}
            if len(databases) > 1 and database is None:
                raise ConfigError(f"`latest` is ambiguous: there are backups of {', '.join(sorted(databases))}",
                                  "add --database NAME or give a backup id (sentinel-backup list)")
            if not pool and legacy:
                raise NotFound("no backup with a manifest found" + (f" of {database}" if database else "")
                               + f"; only {len(legacy)} legacy file(s) of the shell version",
                               f"`latest` never picks a legacy file: give it by name, e.g. {legacy[0].id}"
                               " (see `sentinel-backup list`)")
            if not pool:
                raise NotFound("no backups found" + (f" of {database}" if database else ""),
                               "run `sentinel-backup backup` first, or check BACKUP_DIR / the bucket")
            return pool[0]
        for entry in [*self.entries, *self.others]:
            if entry.id == wanted or entry.manifest.artifact == wanted:
                return entry
        raise UnknownName(f"no backup with id {wanted!r}", "run `sentinel-backup list` to see the ids")


def legacy_database(settings: Settings) -> str | None:
    """The database of legacy files whose name carries none: POSTGRES_DB when it names exactly one
    (the same rule as ``prune``)."""
    return settings.databases[0] if len(settings.databases) == 1 and not settings.all_databases else None


def scan(destinations: list[Storage], *, strict: bool = True, legacy: bool = False,
         legacy_db: str | None = None, server: str | None = None) -> Catalog:
    """Read every manifest on every destination, newest first. With ``legacy``, files of the
    shell version are listed too (``legacy_db``: the database of those whose name has none;
    they belong to the unnamed server). ``server``: the entries are this server's ("": the
    unnamed one's), the others are set aside; None: every server's."""
    merged: dict[str, Entry] = {}
    errors: dict[str, str] = {}
    for storage in destinations:
        try:
            objects = {o.key: o for o in _stored(storage)}
        except SentinelError as exc:
            if strict and len(destinations) == 1:
                raise
            errors[storage.name] = exc.message
            logger.warning(f"Cannot list {storage.name}: {exc.message}")
            continue
        for key in sorted(k for k in objects if k.endswith(MANIFEST_SUFFIX)):
            try:
                from sentinel_backup.model.manifest import Manifest

                manifest = Manifest.from_json(storage.read_bytes(key), f"{storage.name}:{key}")
            except SentinelError as exc:
                logger.warning(f"Skipping {storage.name}:{key}: {exc.message}")
                continue
            if manifest.manifest_key != key:
                logger.warning(f"Skipping {storage.name}:{key}: it describes {manifest.artifact}, not the artifact"
                               " beside it")
                continue
            entry = merged.setdefault(manifest.id, Entry(manifest))
            entry.add_copy(storage, manifest.artifact)
            if manifest.artifact + DRILL_SUFFIX in objects:
                entry.drills[storage.name] = manifest.artifact + DRILL_SUFFIX
            if manifest.artifact + PIN_SUFFIX in objects:
                entry.pins.add(storage.name)
                if entry.pin is None:
                    entry.pin = read_pin(storage, manifest.artifact)
        if legacy:
            for key in sorted(k for k in objects if is_legacy_name(k) and k + MANIFEST_SUFFIX not in objects):
                entry = merged.setdefault(key, Entry(legacy_manifest(objects[key], legacy_db), legacy=True))
                entry.add_copy(storage, key)
    entries = sorted(merged.values(), key=lambda e: (e.manifest.created_at, e.id), reverse=True)
    if server is None:
        return Catalog(entries, errors)
    return Catalog([e for e in entries if e.server == server], errors, [e for e in entries if e.server != server])


def _stored(storage: Storage) -> Iterator[ObjectInfo]:
    """Where manifests can be, by ``model.layout``: logical backups at the root and in
    ``servers/<server>/``, physical ones in ``basebackups/<system id>/`` (the WAL archive is never
    listed here)."""
    yield from storage.list()
    for info in storage.list(SERVERS_ROOT + "/", deep=True):
        handle = handle_for(info.key)
        if handle is not None and handle.kind == "logical" and handle.server:
            yield info
    for info in storage.list(BASE_ROOT + "/", deep=True):
        handle = handle_for(info.key.removesuffix(MANIFEST_SUFFIX).removesuffix(DRILL_SUFFIX).removesuffix(PIN_SUFFIX))
        if handle is not None and handle.kind == "physical":
            yield info


def legacy_manifest(info: ObjectInfo, database: str | None = None) -> Manifest:
    """What is known of a shell-version file, in the shape of a manifest: name, time (from the
    name, else the file's mtime), stored size, gzip, AES when it ends in ``.enc``. Unknown: the
    SHA-256 (empty), the raw size (0), the row counts (None). Never written anywhere."""
    from sentinel_backup.model.manifest import CompressionInfo, EncryptionInfo, Manifest

    db, moment = parse_legacy_name(info.key)
    created = moment or info.modified
    encrypted = info.key.endswith(".enc")
    return Manifest(
        id=info.key, database=db or database or UNKNOWN_DATABASE, artifact=info.key, created_at=created,
        finished_at=created, duration_seconds=0.0, tool_version=LEGACY_TOOL, hostname="",
        compression=CompressionInfo(algorithm="gzip", level=0),
        encryption=EncryptionInfo(method="aes-256-cbc", key_id="") if encrypted else None,
        raw_size_bytes=0, raw_sha256="", size_bytes=info.size, sha256="", tables=None,
    )

