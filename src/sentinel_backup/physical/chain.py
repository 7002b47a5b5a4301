"""Incremental chains of physical backups (PostgreSQL 17+): pure functions (and one reader).

A chain is one full base backup (its root, position 0) and the incrementals taken after it,
each against the one before (``PhysicalFacts.parent_id``, ``chain_root_id``,
``chain_position``). A member is only restorable with every member before it, so:

* :func:`chain_of` walks from a backup to its root through the catalog and refuses a chain
  with a missing member before anything is fetched;
* :func:`needs_full` is the chain policy (``PHYSICAL_FULL_EVERY``, ``PHYSICAL_MAX_INCREMENTALS``):
  when a new backup starts a new chain instead of extending the newest one;
* :func:`chain_plan` is retention on chains: the GFS rules of ``retention.plan`` see one
  unit per chain (dated by its newest member, good only when every member is), and the
  decision applies to every member: a full backup is removed only with all its incrementals,
  newest first, and an incremental is never kept without its parents. WAL retention then
  anchors on the oldest kept member, which is a kept chain's root (its start WAL is oldest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sentinel_backup.errors import NotFound, SentinelError
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.manifest import MANIFEST_SUFFIX, Manifest
from sentinel_backup.retention.plan import BackupRef, Decision, RetentionPlan, RetentionPolicy, Store, plan


def position(entry: Entry) -> int:
    facts = entry.manifest.physical
    return facts.chain_position if facts is not None else 0


def root_id(entry: Entry) -> str:
    facts = entry.manifest.physical
    return (facts.chain_root_id if facts is not None else None) or entry.id


def chain_of(entry: Entry, entries: Sequence[Entry]) -> list[Entry]:
    """``entry`` and its parents, root (the full backup) first. NotFound names the first
    member that is not in the catalog: such a chain cannot be restored."""
    by_id = {e.id: e for e in entries}
    chain = [entry]
    seen = {entry.id}
    while True:
        facts = chain[0].manifest.physical
        parent = facts.parent_id if facts is not None else None
        if parent is None:
            return chain
        if parent in seen:
            raise NotFound(f"the chain of {entry.id} loops at {parent}", "the manifests were edited; restore a full"
                           " backup instead")
        found = by_id.get(parent)
        if found is None:
            raise NotFound(f"{entry.id} is an incremental backup, but its chain member {parent} is missing"
                           f" (chain root {root_id(entry)})", "nothing was written; restore an older full backup, or"
                           " bring the missing member back from another destination")
        seen.add(parent)
        chain.insert(0, found)


@dataclass(frozen=True)
class ChainPolicy:
    full_every: timedelta | None = None
    max_incrementals: int | None = None


def needs_full(parent: Entry | None, root: Entry | None, policy: ChainPolicy, now: datetime) -> str | None:
    """Why the next backup must be a full one (None: an incremental on ``parent`` is fine)."""
    if parent is None or parent.manifest.physical is None:
        return "no earlier physical backup of this cluster"
    if parent.manifest.physical.backup_manifest_key is None:
        return f"{parent.id} has no stored backup_manifest"
    if policy.max_incrementals is not None and position(parent) >= policy.max_incrementals:
        return (f"the chain holds {position(parent)} incremental(s)"
                f" (PHYSICAL_MAX_INCREMENTALS={policy.max_incrementals})")
    if policy.full_every is not None:
        start = (root or parent).manifest.created_at
        if now - start >= policy.full_every:
            return f"the chain's full backup is from {start:%Y-%m-%d %H:%M} (PHYSICAL_FULL_EVERY)"
    return None


# --- retention ----------------------------------------------------------------------------------
def chain_plan(backups: Sequence[BackupRef], parents: dict[str, str | None], policy: RetentionPolicy,
               now: datetime) -> RetentionPlan:
    """``retention.plan.plan`` with every good physical chain as one unit (see the module
    docstring). ``parents``: backup id -> parent id for the good physical backups. Pure."""
    units = _chains(backups, parents)
    members = {ref.id: unit for unit, refs in units.items() for ref in refs}
    singles = [b for b in backups if not (b.kind == "physical" and b.good and b.id in members)]
    stand_ins: dict[str, BackupRef] = {}
    for unit, members_of in units.items():
        newest = max(members_of, key=lambda r: (r.created_at, r.id))
        pinned = next((r.pinned for r in members_of if r.pinned is not None), None)  # one pinned member pins all
        stand_ins[unit] = replace(newest, id=unit, keys=(), size=sum(r.size for r in members_of), pinned=pinned)
    standing = {id(ref): unit for unit, ref in stand_ins.items()}
    the_plan = plan([*singles, *stand_ins.values()], policy, now)
    decisions: list[Decision] = []
    for decision in the_plan.decisions:
        found = standing.get(id(decision.backup))
        if found is None:
            decisions.append(decision)
            continue
        unit = found
        refs = units[unit]
        ordered = sorted(refs, key=lambda r: _depth(r.id, parents), reverse=True)  # newest member first
        for ref in ordered:
            why = decision.reasons if len(refs) == 1 else (
                *decision.reasons, f"chain of {unit}: {len(refs)} member(s) kept or removed together")
            decisions.append(Decision(ref, decision.keep, why))
    return RetentionPlan(the_plan.policy, the_plan.now, tuple(decisions))


def _depth(ident: str, parents: dict[str, str | None]) -> int:
    depth, seen = 0, {ident}
    while (parent := parents.get(ident)) is not None and parent not in seen:
        seen.add(parent)
        depth, ident = depth + 1, parent
    return depth


def _chains(backups: Sequence[BackupRef], parents: dict[str, str | None]) -> dict[str, list[BackupRef]]:
    """Root id -> the good physical refs of its chain. An incremental whose parent is not a good
    backup here stays apart as its own unit (rooted at itself): nothing it needs is removed by it,
    and it is never the reason to keep or remove another."""
    good = {b.id: b for b in backups if b.kind == "physical" and b.good}
    units: dict[str, list[BackupRef]] = {}
    for ref in good.values():
        ident, seen = ref.id, {ref.id}
        while (parent := parents.get(ident)) is not None and parent in good and parent not in seen:
            seen.add(parent)
            ident = parent
        units.setdefault(ident, []).append(ref)
    return units


# --- what a destination holds ----------------------------------------------------------------------
def chain_parents(storage: Store, refs: Sequence[BackupRef]) -> dict[str, str | None]:
    """Backup id -> parent id of the good physical backups among ``refs`` (their manifests are
    read again: the first key of a physical ref is its manifest)."""
    parents: dict[str, str | None] = {}
    for ref in refs:
        if ref.kind != "physical" or not ref.good or not ref.keys or not ref.keys[0].endswith(MANIFEST_SUFFIX):
            continue
        try:
            manifest = Manifest.from_json(storage.read_bytes(ref.keys[0]), f"{storage.name}:{ref.keys[0]}")
        except SentinelError:
            continue
        parents[ref.id] = manifest.physical.parent_id if manifest.physical is not None else None
    return parents
