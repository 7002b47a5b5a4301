"""What a destination holds, as retention sees it: every object of ours grouped into
backups (:class:`BackupRef`), legacy files and leftovers, found through ``model.layout``:
logical backups at the root, or in ``servers/<server>/`` for a named server (a scan sees
only one server's folder: retention never touches another server's logical backups),
physical base backups under ``basebackups/<system id>/``. Only names this tool (or its shell
predecessor) writes are ever touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import unquote

from sentinel_backup.errors import SentinelError
from sentinel_backup.model.layout import BASE_PREFIX, BASE_ROOT, handle_for, logical_folder
from sentinel_backup.model.manifest import (
    DRILL_SUFFIX,
    GLOBALS_PREFIX,
    MANIFEST_SUFFIX,
    PREFIX,
    SHA256_SUFFIX,
    Manifest,
    backup_id,
    is_legacy_name,
    parse_legacy_name,
    parse_name,
)
from sentinel_backup.model.pin import PIN_SUFFIX
from sentinel_backup.model.pin import read as read_pin
from sentinel_backup.model.pin import reason as pin_reason
from sentinel_backup.storage.base import ObjectInfo, Storage
from sentinel_backup.storage.local import PARTIAL_SUFFIX

UNKNOWN_DATABASE = "(unknown)"
Kind = Literal["database", "globals", "physical"]


@dataclass(frozen=True)
class BackupRef:
    """One backup (or leftover) on one destination and every object that belongs to it.

    ``keys`` is in deletion order: manifest, ``.sha256``, other sidecars (drill record, pin),
    artifact (those that exist). ``pinned``: the reason a pinned backup is kept (``pinned:
    <note>``), None when not pinned. Exactly one of good / legacy / incomplete is true, or none for a damaged backup.
    ``depends_on``: ids of backups this one cannot be restored without (an incremental's
    parent); the plan keeps them while this one is kept.
    """

    id: str
    database: str
    created_at: datetime
    keys: tuple[str, ...]
    good: bool = False
    legacy: bool = False
    incomplete: bool = False
    kind: Kind = "database"
    size: int = 0
    note: str = ""
    system_id: str | None = None  # physical: the cluster the backup is of
    depends_on: tuple[str, ...] = ()
    pinned: str | None = None
    server: str | None = None  # physical: the SERVER_NAME its manifest names (None: no readable manifest)

    @property
    def subject(self) -> str:
        if self.kind == "physical":
            return f"cluster {self.system_id or UNKNOWN_DATABASE}"
        return "globals" if self.kind == "globals" else self.database

    @property
    def group(self) -> tuple[str, str]:
        """The rules apply per group: a database, the globals, or one cluster's base backups."""
        return (self.kind, self.system_id or "") if self.kind == "physical" else (self.kind, self.database)


def scan(storage: Storage, *, legacy_database: str | None = None, server: str = "",
         physical: bool = True) -> list[BackupRef]:
    """Group a destination's objects into backups, legacy files and leftovers: the logical
    backups of ``server`` (SERVER_NAME; "": the unnamed server's, at the root), and with
    ``physical`` the base backups of every cluster.

    ``legacy_database`` names the database of legacy files whose name carries none
    (``sentinel_backup_20251103_030000.sql.gz``); they are the unnamed server's.
    """
    folder = logical_folder(server)
    objects = {info.key: info for info in storage.list(folder)
               if _name(info.key).startswith((PREFIX, GLOBALS_PREFIX))}
    bases = {key.removesuffix(MANIFEST_SUFFIX).removesuffix(SHA256_SUFFIX).removesuffix(DRILL_SUFFIX)
             .removesuffix(PIN_SUFFIX) for key in objects}
    ours = sorted(b for b in bases if parse_name(_name(b)) is not None or (not folder and is_legacy_name(b)))
    refs = [_ref(storage, base, objects, legacy_database) for base in ours]
    if physical:
        refs.extend(scan_physical(storage))
    if storage.capabilities.partial_files:
        refs.extend(_partial(info) for info in storage.list_partials()
                    if _is_our_partial(info.key, folder, physical=physical))
    return refs


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _is_our_partial(key: str, logical: str = "", *, physical: bool = True) -> bool:
    """A temporary file of ours: a logical one in ``logical`` (the server's folder), or one in a
    physical backup's folder."""
    folder, _, name = key.rpartition("/")
    if folder + "/" == logical or (not folder and not logical):
        return name.startswith(("." + PREFIX, "." + GLOBALS_PREFIX))
    handle = handle_for(f"{folder}/{name[1:]}")
    return physical and handle is not None and handle.kind == "physical"


def _partial(info: ObjectInfo) -> BackupRef:
    folder, _, name = info.key.rpartition("/")
    plain = name[1:].removesuffix(PARTIAL_SUFFIX).removesuffix(MANIFEST_SUFFIX).removesuffix(SHA256_SUFFIX)
    handle = handle_for(f"{folder}/{plain}") if folder else None
    if handle is not None and handle.kind == "physical":
        return BackupRef(id=info.key, database=UNKNOWN_DATABASE, created_at=info.modified, keys=(info.key,),
                         incomplete=True, kind="physical", size=info.size,
                         system_id=handle.system_id, note="temporary file of an interrupted run")
    parsed = parse_name(plain)
    database = unquote(parsed[0]) if parsed and parsed[0] is not None else UNKNOWN_DATABASE
    return BackupRef(id=info.key, database=database, created_at=info.modified, keys=(info.key,), incomplete=True,
                     size=info.size, note="temporary file of an interrupted run")


def _ref(storage: Storage, base: str, objects: dict[str, ObjectInfo], legacy_db: str | None) -> BackupRef:
    keys = tuple(k for k in (base + MANIFEST_SUFFIX, base + SHA256_SUFFIX, base + DRILL_SUFFIX, base + PIN_SUFFIX,
                                 base)
                 if k in objects)
    infos = [objects[k] for k in keys]
    size = sum(i.size for i in infos)
    parsed = parse_name(_name(base))
    if base + MANIFEST_SUFFIX in objects and base in objects:
        return _from_manifest(storage, base, keys, objects)
    if base in objects and is_legacy_name(base):
        database, moment = parse_legacy_name(base)
        return BackupRef(id=base, database=database or legacy_db or UNKNOWN_DATABASE,
                         created_at=moment or objects[base].modified, keys=keys, legacy=True, size=size)
    note = _leftover_note(base, objects)
    last_seen = max(i.modified for i in infos)
    database = UNKNOWN_DATABASE
    kind: Kind = "database"
    if parsed is not None:
        last_seen = max(last_seen, parsed[1])
        database = unquote(parsed[0]) if parsed[0] is not None else ""
        kind = "database" if parsed[0] is not None else "globals"
    return BackupRef(id=backup_id(base), database=database, created_at=last_seen, keys=keys, incomplete=True,
                     kind=kind, size=size, note=note)


def _leftover_note(base: str, objects: dict[str, ObjectInfo]) -> str:
    if base + MANIFEST_SUFFIX in objects:
        return "manifest without its artifact"
    if base in objects:
        return "artifact without manifest"
    if base + SHA256_SUFFIX in objects:
        return ".sha256 without artifact or manifest"
    if base + DRILL_SUFFIX in objects:
        return "drill record without artifact or manifest"
    return "pin without artifact or manifest"


def _from_manifest(storage: Storage, base: str, keys: tuple[str, ...], objects: dict[str, ObjectInfo]) -> BackupRef:
    manifest_key = base + MANIFEST_SUFFIX
    size = sum(objects[k].size for k in keys)
    parsed = parse_name(_name(base))
    fallback = parsed[1] if parsed else objects[base].modified
    database = unquote(parsed[0]) if parsed and parsed[0] is not None else UNKNOWN_DATABASE
    try:
        manifest = Manifest.from_json(storage.read_bytes(manifest_key), f"{storage.name}:{manifest_key}")
    except SentinelError as exc:
        return BackupRef(id=backup_id(base), database=database, created_at=fallback, keys=keys, size=size,
                         note=f"damaged: {exc.message}")
    created = manifest.created_at if manifest.created_at.tzinfo else manifest.created_at.replace(tzinfo=UTC)
    problem = ""
    if manifest.artifact != base:
        problem = f"damaged: manifest describes {manifest.artifact}"
    elif manifest.size_bytes != objects[base].size:
        problem = f"damaged: artifact is {objects[base].size} bytes, manifest says {manifest.size_bytes}"
    pinned = pin_reason(read_pin(storage, base)) if base + PIN_SUFFIX in objects else None
    return BackupRef(id=manifest.id, database=manifest.database, created_at=created, keys=keys,
                     good=not problem, kind=manifest.kind, size=size, note=problem, pinned=pinned)


# --- physical base backups ------------------------------------------------------------------
def scan_physical(storage: Storage) -> list[BackupRef]:
    """Base backups (and their leftovers) under ``basebackups/<system id>/``: every object whose
    name starts with the same ``sentinel_base_<stamp>`` belongs to one backup."""
    groups: dict[str, list[ObjectInfo]] = {}
    for info in storage.list(BASE_ROOT + "/", deep=True):
        handle = handle_for(info.key)
        if handle is None or handle.kind != "physical" or not handle.name.startswith(BASE_PREFIX):
            continue
        groups.setdefault(info.key.split(".", 1)[0], []).append(info)
    return [_physical_ref(storage, head, infos) for head, infos in sorted(groups.items())]


def deletion_order(key: str) -> int:
    """Manifest, .sha256, sidecars, then the data itself (a physical backup's .tar last)."""
    if key.endswith(MANIFEST_SUFFIX):
        return 0
    if key.endswith(SHA256_SUFFIX):
        return 1
    if key.endswith((PIN_SUFFIX, DRILL_SUFFIX)):  # sidecars of a ``.tar`` artifact: before the data
        return 2
    return 3 if ".tar" in key.rsplit("/", 1)[-1] and ".backup_manifest" not in key else 2


def _physical_ref(storage: Storage, head: str, infos: list[ObjectInfo]) -> BackupRef:
    infos = sorted(infos, key=lambda i: (deletion_order(i.key), i.key))
    keys = tuple(i.key for i in infos)
    objects = {i.key: i for i in infos}
    size = sum(i.size for i in infos)
    last_seen = max(i.modified for i in infos)
    handle = handle_for(keys[-1])
    system_id = handle.system_id if handle else None
    ident = head.rsplit("/", 1)[-1].removeprefix("sentinel_")
    common = {"database": UNKNOWN_DATABASE, "keys": keys, "kind": "physical", "size": size, "system_id": system_id}
    manifest_key = next((k for k in keys if k.endswith(MANIFEST_SUFFIX)), None)
    if manifest_key is None:
        return BackupRef(id=ident, created_at=last_seen, incomplete=True, note="base backup without manifest",
                         **common)  # type: ignore[arg-type]
    try:
        manifest = Manifest.from_json(storage.read_bytes(manifest_key), f"{storage.name}:{manifest_key}")
    except SentinelError as exc:
        return BackupRef(id=ident, created_at=last_seen, note=f"damaged: {exc.message}",
                         **common)  # type: ignore[arg-type]
    stored = objects.get(manifest.artifact)
    if stored is None:
        return BackupRef(id=manifest.id, created_at=last_seen, incomplete=True, note="manifest without its artifact",
                         **common)  # type: ignore[arg-type]
    facts = manifest.physical
    problem = (f"damaged: artifact is {stored.size} bytes, manifest says {manifest.size_bytes}"
               if stored.size != manifest.size_bytes else "" if facts is not None else "damaged: no physical facts")
    parent = (facts.parent_id,) if facts is not None and facts.parent_id else ()
    common.update(database=manifest.database, system_id=facts.system_identifier if facts else system_id)
    pinned = pin_reason(read_pin(storage, manifest.artifact)) if manifest.artifact + PIN_SUFFIX in objects else None
    return BackupRef(id=manifest.id, created_at=manifest.created_at, good=not problem, note=problem,
                     depends_on=parent, pinned=pinned, **common)  # type: ignore[arg-type]
