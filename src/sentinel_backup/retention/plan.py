"""Retention: policy -> plan (a pure function, keep/remove with reasons) -> apply.

Semantics (the contract the tests check):

* Rules apply per database (globals dumps form their own group) and per destination; a
  destination may override ``RETENTION_DAYS`` (``S3_RETENTION_DAYS``, ``MINIO_RETENTION_DAYS``).
* A backup is kept if ANY rule keeps it. A rule set to 0 (or unset) is off, as in restic
  and borg, so ``RETENTION_DAYS=0`` never means "delete everything".
* ``days``: keep backups created within the last N days (``now - N days <= created_at``).
* ``keep_last``: keep the N newest good backups.
* ``keep_daily/weekly/monthly/yearly``: keep the newest backup of each of the last N
  periods *that have backups* (restic/borg semantics, not calendar periods: a gap of
  silent days does not use up the budget). Periods are days, ISO weeks (``2026-W48``),
  months and years in the policy time zone (zoneinfo), so DST and midnight are local.
* The newest good backup of each database is never removed, whatever the policy. When a
  database has no good backup, its newest legacy backup is protected instead.
* An empty policy (no rule on) removes no backup, good or legacy.
* Legacy backups (files of the original shell version: ``sentinel_backup_*.sql.gz[.enc]``
  without a manifest, recognised by name) are subject to ``days`` only; with no ``days``
  rule they are kept. A date in the name is read as UTC; without one, the file's mtime.
* Incomplete leftovers (an artifact or ``.sha256`` without manifest, a manifest without
  its artifact, a local ``.partial`` temp file) are removed once older than the grace
  period (default 24 h) even when the policy is empty: they are never restorable backups,
  only wasted space. Their age counts from their last sign of life (newest mtime).
* Damaged backups (an unreadable manifest, or an artifact whose size differs from its
  manifest) are never removed automatically and never count as good: kept for inspection.
* ``apply`` deletes the manifest first, then ``.sha256``, then the artifact, so a crash
  halfway leaves an incomplete leftover, never a listed backup without data. A backend
  that offers ``is_locked(key)`` is asked first: a backup with a locked object is skipped
  whole (still listed, still restorable) with a note. Otherwise an ``ObjectLocked`` on
  deletion stops that backup's deletion with a note, not an error; what remains is an
  incomplete leftover, cleaned up by a later run once the lock expires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sentinel_backup.errors import ConfigError, ObjectLocked, SentinelError
from sentinel_backup.model.manifest import (
    DRILL_SUFFIX,
    GLOBALS_PREFIX,
    MANIFEST_SUFFIX,
    PREFIX,
    SHA256_SUFFIX,
    Manifest,
    backup_id,
    is_legacy_name,
    parse_name,
)
from sentinel_backup.model.manifest import parse_legacy_name as _legacy_name
from sentinel_backup.storage.base import ObjectInfo
from sentinel_backup.storage.local import PARTIAL_SUFFIX

if TYPE_CHECKING:
    from sentinel_backup.config import Settings

DEFAULT_GRACE = timedelta(hours=24)
UNKNOWN_DATABASE = "(unknown)"


class Store(Protocol):
    """The part of the Storage protocol retention needs (every destination has it)."""

    name: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def read_bytes(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


# --- policy -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetentionPolicy:
    """Which backups to keep. ``None`` or 0 switches a rule off."""

    days: int | None = None
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for name in ("days", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"retention: {name} must be >= 0 (got {value})", "use 0 to switch a rule off")
        self.zone()  # fail early on an unknown time zone

    @classmethod
    def from_settings(cls, settings: Settings, destination: str) -> RetentionPolicy:
        """The policy for one destination (`local`, `s3`, `minio`) with its overrides."""
        days = settings.retention_days
        override = {"s3": settings.s3_retention_days, "minio": settings.minio_retention_days}.get(destination)
        if override is not None:
            days = override
        return cls(days=days, keep_last=settings.retention_keep_last, keep_daily=settings.retention_keep_daily,
                   keep_weekly=settings.retention_keep_weekly, keep_monthly=settings.retention_keep_monthly,
                   keep_yearly=settings.retention_keep_yearly, timezone=settings.retention_timezone)

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"RETENTION_TIMEZONE: unknown time zone {self.timezone!r}",
                              "use an IANA name such as UTC or Europe/Paris") from None

    @property
    def empty(self) -> bool:
        """True when no rule is on: nothing but incomplete leftovers is ever removed."""
        return not any((self.days, self.keep_last, self.keep_daily, self.keep_weekly,
                        self.keep_monthly, self.keep_yearly))

    def describe(self) -> str:
        parts = [f"{name} {value}" for name, value in (
            ("days", self.days), ("last", self.keep_last), ("daily", self.keep_daily),
            ("weekly", self.keep_weekly), ("monthly", self.keep_monthly), ("yearly", self.keep_yearly)) if value]
        return ", ".join(parts) + f" ({self.timezone})" if parts else "no rule"


# --- what a destination holds ---------------------------------------------------------------
@dataclass(frozen=True)
class BackupRef:
    """One backup (or leftover) on one destination and every object that belongs to it.

    ``keys`` is in deletion order: manifest, ``.sha256``, artifact (those that exist).
    Exactly one of good / legacy / incomplete is true, or none for a damaged backup.
    """

    id: str
    database: str
    created_at: datetime
    keys: tuple[str, ...]
    good: bool = False
    legacy: bool = False
    incomplete: bool = False
    kind: Literal["database", "globals", "physical"] = "database"
    size: int = 0
    note: str = ""

    @property
    def subject(self) -> str:
        return "globals" if self.kind == "globals" else self.database


def scan(storage: Store, now: datetime | None = None, *, legacy_database: str | None = None) -> list[BackupRef]:
    """Group a destination's objects into backups, legacy files and leftovers.

    ``legacy_database`` names the database of legacy files whose name carries none
    (``sentinel_backup_20251103_030000.sql.gz``); ``now`` is unused and kept for symmetry.
    """
    objects = {info.key: info for info in storage.list() if info.key.startswith((PREFIX, GLOBALS_PREFIX))}
    bases = {key.removesuffix(MANIFEST_SUFFIX).removesuffix(SHA256_SUFFIX).removesuffix(DRILL_SUFFIX)
             for key in objects}
    # Only names this tool (or its shell predecessor) writes: never touch a stranger's file.
    ours = sorted(b for b in bases if parse_name(b) is not None or is_legacy_name(b))
    refs = [_ref(storage, base, objects, legacy_database) for base in ours]
    partials: Callable[[], Iterable[ObjectInfo]] | None = getattr(storage, "list_partials", None)
    if partials is not None:
        refs.extend(_partial(info) for info in partials() if info.key.startswith(("." + PREFIX, "." + GLOBALS_PREFIX)))
    return refs


def _partial(info: ObjectInfo) -> BackupRef:
    parsed = parse_name(info.key[1:].removesuffix(PARTIAL_SUFFIX).removesuffix(MANIFEST_SUFFIX)
                        .removesuffix(SHA256_SUFFIX))
    database = unquote(parsed[0]) if parsed and parsed[0] is not None else UNKNOWN_DATABASE
    return BackupRef(id=info.key, database=database, created_at=info.modified, keys=(info.key,), incomplete=True,
                     size=info.size, note="temporary file of an interrupted run")


def _ref(storage: Store, base: str, objects: dict[str, ObjectInfo], legacy_db: str | None) -> BackupRef:
    keys = tuple(k for k in (base + MANIFEST_SUFFIX, base + SHA256_SUFFIX, base + DRILL_SUFFIX, base)
                 if k in objects)
    infos = [objects[k] for k in keys]
    size = sum(i.size for i in infos)
    parsed = parse_name(base)
    if base + MANIFEST_SUFFIX in objects and base in objects:
        return _from_manifest(storage, base, keys, objects)
    if base in objects and is_legacy_name(base):
        database, moment = _legacy_name(base)
        return BackupRef(id=base, database=database or legacy_db or UNKNOWN_DATABASE,
                         created_at=moment or objects[base].modified, keys=keys, legacy=True, size=size)
    if base + MANIFEST_SUFFIX in objects:
        note = "manifest without its artifact"
    elif base in objects:
        note = "artifact without manifest"
    elif base + SHA256_SUFFIX in objects:
        note = ".sha256 without artifact or manifest"
    else:
        note = "drill record without artifact or manifest"
    last_seen = max(i.modified for i in infos)
    database = UNKNOWN_DATABASE
    kind: Literal["database", "globals"] = "database"
    if parsed is not None:
        last_seen = max(last_seen, parsed[1])
        database = unquote(parsed[0]) if parsed[0] is not None else ""
        kind = "database" if parsed[0] is not None else "globals"
    return BackupRef(id=backup_id(base), database=database, created_at=last_seen, keys=keys, incomplete=True,
                     kind=kind, size=size, note=note)


def _from_manifest(storage: Store, base: str, keys: tuple[str, ...], objects: dict[str, ObjectInfo]) -> BackupRef:
    manifest_key = base + MANIFEST_SUFFIX
    size = sum(objects[k].size for k in keys)
    parsed = parse_name(base)
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
    return BackupRef(id=manifest.id, database=manifest.database, created_at=created, keys=keys,
                     good=not problem, kind=manifest.kind, size=size, note=problem)


# --- plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    backup: BackupRef
    keep: bool
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class RetentionPlan:
    policy: RetentionPolicy
    now: datetime
    decisions: tuple[Decision, ...]

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    def to_dict(self) -> dict[str, Any]:
        """For ``prune --json``."""
        return {"policy": self.policy.describe(), "now": self.now.isoformat(), "decisions": [
            {"id": d.backup.id, "database": d.backup.subject, "created_at": d.backup.created_at.isoformat(),
             "kind": _kind(d.backup), "action": "keep" if d.keep else "remove", "reason": d.reason,
             "keys": list(d.backup.keys), "size": d.backup.size, "note": d.backup.note} for d in self.decisions]}


def _kind(ref: BackupRef) -> str:
    return "good" if ref.good else "legacy" if ref.legacy else "incomplete" if ref.incomplete else "damaged"


_PERIODS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_daily", "daily", lambda t: t.strftime("%Y-%m-%d")),
    ("keep_weekly", "weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("keep_monthly", "monthly", lambda t: t.strftime("%Y-%m")),
    ("keep_yearly", "yearly", lambda t: t.strftime("%Y")),
)


def plan(backups: Sequence[BackupRef], policy: RetentionPolicy, now: datetime, *,
         leftover_grace: timedelta = DEFAULT_GRACE) -> RetentionPlan:
    """Decide, for every ref, keep or remove with human reasons. Pure: no I/O, no clock."""
    reasons: dict[int, list[str]] = {i: [] for i in range(len(backups))}
    removal: dict[int, str] = {}
    groups: dict[tuple[str, str], list[int]] = {}
    for i, ref in enumerate(backups):
        if ref.incomplete:
            _leftover(ref, now, leftover_grace, reasons[i], removal, i)
        elif not ref.good and not ref.legacy:
            reasons[i].append(f"{ref.note or 'damaged'}: kept for inspection")
        else:
            groups.setdefault((ref.kind, ref.database), []).append(i)
    for members in groups.values():
        ordered = sorted(members, key=lambda i: (backups[i].created_at, backups[i].id), reverse=True)
        _plan_group([(i, backups[i]) for i in ordered], policy, now, reasons, removal)
    decisions = tuple(Decision(ref, i not in removal, tuple(reasons[i]) or (removal.get(i, ""),))
                      for i, ref in enumerate(backups))
    return RetentionPlan(policy, now, decisions)


def _leftover(ref: BackupRef, now: datetime, grace: timedelta, why: list[str], removal: dict[int, str],
              i: int) -> None:
    hours = f"{grace.total_seconds() / 3600:g}h"
    if now - ref.created_at > grace:
        removal[i] = f"incomplete leftover older than {hours} ({ref.note})" if ref.note else \
            f"incomplete leftover older than {hours}"
    else:
        why.append(f"incomplete, younger than {hours} (a run may still be writing it)")


def _plan_group(ordered: list[tuple[int, BackupRef]], policy: RetentionPolicy, now: datetime,
                reasons: dict[int, list[str]], removal: dict[int, str]) -> None:
    """One database's good and legacy backups, newest first."""
    good = [(i, r) for i, r in ordered if r.good]
    protected = good[0] if good else ordered[0]
    reasons[protected[0]].append(f"newest backup of {protected[1].subject}"
                                 + ("" if protected[1].good else " (legacy)"))
    if policy.empty:
        for i, _ in ordered:
            if not reasons[i]:
                reasons[i].append("no retention rule")
        return
    cutoff = now - timedelta(days=policy.days) if policy.days else None
    for i, ref in ordered:
        if cutoff is not None and ref.created_at >= cutoff:
            reasons[i].append(f"within {policy.days} days")
        elif cutoff is None and ref.legacy and not reasons[i]:
            reasons[i].append("legacy, kept: no days rule")
    if policy.keep_last:
        for i, _ in good[: policy.keep_last]:
            reasons[i].append(f"last {policy.keep_last}")
    zone = policy.zone()
    for attr, label, bucket in _PERIODS:
        limit = getattr(policy, attr)
        if not limit:
            continue
        seen: set[str] = set()
        for i, ref in good:
            period = bucket(ref.created_at.astimezone(zone))
            if period not in seen and len(seen) < limit:
                reasons[i].append(f"{label} {period}")
            seen.add(period)
    for i, ref in ordered:
        if not reasons[i]:
            removal[i] = _why_removed(ref, policy)


def _why_removed(ref: BackupRef, policy: RetentionPolicy) -> str:
    if ref.legacy:
        return f"legacy older than {policy.days} days"
    if policy.days:
        return f"older than {policy.days} days"
    return f"not kept by any rule ({policy.describe()})"


# --- apply --------------------------------------------------------------------------------
@dataclass
class BackupResult:
    """What happened to one removed backup's objects."""

    backup: BackupRef
    reason: str
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def removed(self) -> bool:
        return self.error is None and not self.skipped and len(self.deleted) == len(self.backup.keys)


@dataclass
class ApplyResult:
    destination: str
    dry_run: bool
    results: list[BackupResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the WAL ranges kept and removed (physical)

    @property
    def removed(self) -> list[BackupResult]:
        return [r for r in self.results if r.removed]

    @property
    def errors(self) -> list[BackupResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def locked(self) -> list[BackupResult]:
        return [r for r in self.results if r.skipped]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        """For a ``prune_removed`` notification and ``prune --json``."""
        if self.dry_run:
            return {"would_remove": len(self.results)}
        return {"removed": len(self.removed), "locked": len(self.locked), "errors": len(self.errors)}


def apply(storage: Store, retention_plan: RetentionPlan, *, dry_run: bool = False) -> ApplyResult:
    """Delete the objects of every removed backup, manifest first. Never raises for one
    backup's failure: errors and locks are collected per backup."""
    result = ApplyResult(storage.name, dry_run)
    for decision in retention_plan.removed:
        outcome = BackupResult(decision.backup, decision.reason)
        result.results.append(outcome)
        if dry_run:
            outcome.notes.append("dry run: nothing deleted")
            continue
        _delete_keys(storage, outcome)
    return result


def _delete_keys(storage: Store, outcome: BackupResult) -> None:
    keys = outcome.backup.keys
    held = _held(storage, keys)
    if held:  # keep the whole backup listed and restorable while its lock lasts
        outcome.skipped = list(keys)
        outcome.notes.append(f"{', '.join(held)} under an object lock; kept until the lock ends")
        return
    for n, key in enumerate(keys):
        try:
            storage.delete(key)
        except ObjectLocked as exc:
            outcome.skipped = list(keys[n:])
            outcome.notes.append(f"{key} is under an object lock ({exc.message}); kept, retried by a later run")
            return
        except (SentinelError, OSError) as exc:
            outcome.error = f"cannot delete {key}: {exc}"
            return
        outcome.deleted.append(key)


def _held(storage: Store, keys: Sequence[str]) -> list[str]:
    """Keys under an object lock, when the backend can tell (optional ``is_locked(key)``)."""
    probe: Callable[[str], bool] | None = getattr(storage, "is_locked", None)
    if probe is None:
        return []
    try:
        return [k for k in keys if probe(k)]
    except (SentinelError, OSError):
        return []  # cannot tell: deletion will meet the lock (ObjectLocked) if there is one
