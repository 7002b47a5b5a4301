"""Retention of physical backups and of the WAL archive.

Base backups are grouped per cluster (system identifier) and go through the same
``retention.plan.plan`` as logical ones: kept or removed whole (manifest, ``.sha256``,
PostgreSQL's ``backup_manifest``, the tar), the newest good one never removed, leftovers
after the grace period. Then :func:`plan_wal` (pure) decides the archive, per cluster:

* the WAL each kept good base backup needs, from its ``start_wal`` forward to now, is kept:
  every segment (and ``.backup``/``.partial`` file) numbered at or after the oldest kept base
  backup's start segment, on every timeline;
* what is numbered before it is removed: no kept base backup can use it;
* timeline ``.history`` files are always kept (tiny; recovery follows timelines with them);
* a cluster with no good kept base backup keeps its whole archive (nothing to anchor on).

Segment numbers are compared as (log, segment) pairs read from the names, which orders them
whatever the segment size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sentinel_backup.errors import SentinelError
from sentinel_backup.model.layout import BASE_PREFIX, BASE_ROOT, WAL_ROOT, handle_for
from sentinel_backup.model.manifest import MANIFEST_SUFFIX, Manifest
from sentinel_backup.model.pin import PIN_SUFFIX
from sentinel_backup.model.pin import read as read_pin
from sentinel_backup.model.pin import reason as pin_reason
from sentinel_backup.retention.plan import BackupRef, RetentionPlan, Store
from sentinel_backup.retention.scan import deletion_order
from sentinel_backup.storage.base import ObjectInfo

CLUSTER = "(cluster)"


@dataclass(frozen=True)
class BaseInfo:
    """What WAL retention needs to know of one base backup."""

    id: str
    system_id: str
    start_wal: str


@dataclass(frozen=True)
class WalObject:
    key: str
    system_id: str
    name: str  # the WAL file name


@dataclass
class WalPlan:
    keep: list[WalObject] = field(default_factory=list)
    remove: list[WalObject] = field(default_factory=list)
    cutoff: dict[str, str] = field(default_factory=dict)  # system id -> oldest needed WAL file (or "")

    def ranges(self) -> list[str]:
        """Lines for ``prune --dry-run``: the WAL ranges kept and removed per cluster and timeline."""
        lines = []
        for verb, objects in (("keep", self.keep), ("remove", self.remove)):
            groups: dict[tuple[str, str], list[str]] = {}
            for obj in objects:
                groups.setdefault((obj.system_id, obj.name[:8]), []).append(obj.name)
            for (sysid, tli), names in sorted(groups.items()):
                names.sort()
                lines.append(f"WAL {verb} {sysid} timeline {int(tli, 16)}: {names[0]} .. {names[-1]}"
                             f" ({len(names)} file(s))")
        for sysid, cutoff in sorted(self.cutoff.items()):
            lines.append(f"WAL of {sysid} needed from {cutoff}" if cutoff else
                         f"WAL of {sysid}: no kept base backup, the whole archive is kept")
        return lines


def _position(name: str) -> tuple[int, int]:
    return int(name[8:16], 16), int(name[16:24], 16)


def plan_wal(wal: list[WalObject], kept: list[BaseInfo]) -> WalPlan:
    """Keep or remove each archived WAL object (see the module docstring). Pure."""
    oldest: dict[str, tuple[int, int]] = {}
    result = WalPlan()
    for base in kept:
        pos = _position(base.start_wal)
        if base.system_id not in oldest or pos < oldest[base.system_id]:
            oldest[base.system_id] = pos
            result.cutoff[base.system_id] = base.start_wal
    for obj in wal:
        result.cutoff.setdefault(obj.system_id, result.cutoff.get(obj.system_id, ""))
        cutoff = oldest.get(obj.system_id)
        if cutoff is None or obj.name.endswith(".history") or _position(obj.name) >= cutoff:
            result.keep.append(obj)
        else:
            result.remove.append(obj)
    return result


# --- what a destination holds ------------------------------------------------------------------
def scan_bases(storage: Store) -> tuple[list[BackupRef], dict[str, BaseInfo]]:
    """Base backups (and their leftovers) under ``basebackups/`` as retention refs, and for
    the good ones what WAL retention needs."""
    objects = {o.key: o for o in _deep(storage, BASE_ROOT + "/")}
    groups: dict[str, list[str]] = {}
    for key in objects:
        folder, _, name = key.rpartition("/")
        if name.startswith(BASE_PREFIX):
            groups.setdefault(f"{folder}/{name.split('.', 1)[0]}", []).append(key)
    refs: list[BackupRef] = []
    infos: dict[str, BaseInfo] = {}
    for head, keys in sorted(groups.items()):
        ref, info = _base_ref(storage, head, keys, objects)
        refs.append(ref)
        if info is not None:
            infos[ref.id] = info
    partials: Callable[[], Iterable[ObjectInfo]] | None = getattr(storage, "list_partials", None)
    for temp in partials() if partials is not None else ():
        folder, _, name = temp.key.rpartition("/")
        if folder.startswith(BASE_ROOT + "/") and name.startswith("." + BASE_PREFIX):
            refs.append(BackupRef(id=temp.key, database=CLUSTER, created_at=temp.modified, keys=(temp.key,),
                                  incomplete=True, kind="physical", size=temp.size,
                                  note="temporary file of an interrupted run",
                                  system_id=folder.split("/")[1] if folder.count("/") == 1 else None))
    return refs, infos


@dataclass(frozen=True)
class ServerScope:
    """What one server's prune may touch of the physical backups: its own base backups (by the
    server its manifests name), the leftovers of its clusters, and the WAL of those clusters;
    ``anchors``: other servers' good base backups of the same clusters, whose WAL stays."""

    bases: list[BackupRef]
    clusters: set[str]
    anchors: list[BaseInfo]

    def wal(self, objects: list[WalObject]) -> list[WalObject]:
        return [o for o in objects if o.system_id in self.clusters]


def server_scope(bases: list[BackupRef], infos: dict[str, BaseInfo], server: str,
                 wal: list[WalObject]) -> ServerScope:
    """Base backups are this server's when their manifest names it; a leftover without one
    belongs to the clusters this server backs up (to the unnamed server when no named server
    backs its cluster up: what every prune did before SERVER_NAME existed)."""
    mine = {r.system_id for r in bases if r.server == server and r.system_id}
    others = {r.system_id for r in bases if r.server is not None and r.server != server and r.system_id}
    if not server:
        mine |= {r.system_id for r in bases if r.system_id and r.system_id not in others}
        mine |= {o.system_id for o in wal if o.system_id not in others}
    own = [r for r in bases if r.server == server or (r.server is None and r.system_id in mine)]
    owned = {id(r) for r in own}
    anchors = [infos[r.id] for r in bases if id(r) not in owned and r.id in infos and r.system_id in mine]
    return ServerScope(own, mine, anchors)



def _base_ref(storage: Store, head: str, keys: list[str], objects: dict[str, ObjectInfo]
              ) -> tuple[BackupRef, BaseInfo | None]:
    keys = sorted(keys, key=deletion_order)
    size = sum(objects[k].size for k in keys)
    last_seen = max(objects[k].modified for k in keys)
    manifest_key = next((k for k in keys if k.endswith(MANIFEST_SUFFIX)), None)
    name = head.rsplit("/", 1)[-1]
    ident = name.removeprefix("sentinel_")
    folder = handle_for(head)
    sysid = folder.system_id if folder is not None else None
    if manifest_key is None:
        return BackupRef(id=ident, database=CLUSTER, created_at=last_seen, keys=tuple(keys), incomplete=True,
                         kind="physical", size=size, note="base backup without manifest", system_id=sysid), None
    try:
        manifest = Manifest.from_json(storage.read_bytes(manifest_key), f"{storage.name}:{manifest_key}")
    except SentinelError as exc:
        return BackupRef(id=ident, database=CLUSTER, created_at=last_seen, keys=tuple(keys), kind="physical",
                         size=size, note=f"damaged: {exc.message}", system_id=sysid), None
    facts = manifest.physical
    stored = objects.get(manifest.artifact)
    problem = ("manifest without its artifact" if stored is None else
               f"damaged: artifact is {stored.size} bytes, manifest says {manifest.size_bytes}"
               if stored.size != manifest.size_bytes else "" if facts is not None else "damaged: no physical facts")
    if stored is None:
        return BackupRef(id=manifest.id, database=CLUSTER, created_at=last_seen, keys=tuple(keys), incomplete=True,
                         kind="physical", size=size, note=problem, system_id=sysid, server=manifest.server), None
    group = f"{CLUSTER} {facts.system_identifier}" if facts is not None else CLUSTER
    created = manifest.created_at
    pinned = pin_reason(read_pin(storage, manifest.artifact)) if manifest.artifact + PIN_SUFFIX in objects else None
    ref = BackupRef(id=manifest.id, database=group, created_at=created, keys=tuple(keys), good=not problem,
                    kind="physical", size=size, note=problem, pinned=pinned,
                    system_id=facts.system_identifier if facts is not None else sysid, server=manifest.server)
    info = BaseInfo(manifest.id, facts.system_identifier, facts.start_wal) if facts is not None and not problem \
        else None
    return ref, info


def scan_wal(storage: Store) -> list[WalObject]:
    found = []
    for info in _deep(storage, WAL_ROOT + "/"):
        handle = handle_for(info.key)
        if handle is not None and handle.kind == "wal" and handle.system_id is not None:
            found.append(WalObject(info.key, handle.system_id, handle.name))
    return found


def _deep(storage: Store, prefix: str) -> list[ObjectInfo]:
    lister = storage.list
    try:
        return list(lister(prefix, deep=True))  # type: ignore[call-arg]
    except TypeError:  # a Store without folders (tests' fakes)
        return [o for o in lister(prefix) if o.key.startswith(prefix)]


def wal_for_plan(the_plan: RetentionPlan, infos: dict[str, BaseInfo]) -> list[BaseInfo]:
    """The base backups the plan keeps, of those WAL retention can anchor on."""
    return [infos[d.backup.id] for d in the_plan.kept if d.backup.kind == "physical" and d.backup.id in infos]



def apply_wal(storage: Store, wal_plan: WalPlan, *, dry_run: bool) -> list[str]:
    """Delete the WAL the plan removes (unless ``dry_run``); the lines for the report."""
    lines = wal_plan.ranges()
    if dry_run:
        return lines
    failed = 0
    for obj in wal_plan.remove:
        try:
            storage.delete(obj.key)
        except (SentinelError, OSError):
            failed += 1  # an object lock, say: retried by a later run
    if failed:
        lines.append(f"WAL: {failed} file(s) could not be removed (object lock?); a later prune retries")
    return lines
