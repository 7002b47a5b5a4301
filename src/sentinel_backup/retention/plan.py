"""Retention: policy -> plan (a pure function, keep/remove with reasons) -> apply.

Modules: ``policy`` (the rules that are on), ``scan`` (what a destination holds, as
:class:`BackupRef`), ``plan`` (this one: the decisions), ``apply`` (the deletions).

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
* A pinned backup (``<artifact>.pin.json`` beside it: ``pin ID``) is always kept, with the
  reason ``pinned: <note>``; it still counts for every rule like any other backup. The pin
  is one of the backup's keys, deleted with it after the manifest once unpinned.
* Physical base backups form one group per cluster (system identifier), under the same
  rules. A backup others depend on (``BackupRef.depends_on``: an incremental's parent) is
  kept as long as any backup depending on it is kept, with the reason ``needed by <id>``;
  ``apply`` removes dependents before what they depend on.
* ``apply`` deletes the manifest first, then ``.sha256``, then the artifact, so a crash
  halfway leaves an incomplete leftover, never a listed backup without data. A backend
  whose ``capabilities.object_lock`` is set is asked first (``is_locked``): a backup with a locked object is skipped
  whole (still listed, still restorable) with a note. Otherwise an ``ObjectLocked`` on
  deletion stops that backup's deletion with a note, not an error; what remains is an
  incomplete leftover, cleaned up by a later run once the lock expires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sentinel_backup.retention.apply import ApplyResult, BackupResult, apply
from sentinel_backup.retention.policy import RetentionPolicy
from sentinel_backup.retention.scan import UNKNOWN_DATABASE, BackupRef, scan
from sentinel_backup.storage.base import Storage

__all__ = ["DEFAULT_GRACE", "UNKNOWN_DATABASE", "ApplyResult", "BackupRef", "BackupResult", "Decision",
           "RetentionPlan", "RetentionPolicy", "Store", "apply", "plan", "scan"]

DEFAULT_GRACE = timedelta(hours=24)
Store = Storage  # what retention reads and deletes through: the whole Storage protocol


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
            groups.setdefault(ref.group, []).append(i)
    for members in groups.values():
        ordered = sorted(members, key=lambda i: (backups[i].created_at, backups[i].id), reverse=True)
        _plan_group([(i, backups[i]) for i in ordered], policy, now, reasons, removal)
    _keep_pinned(backups, reasons, removal)
    _keep_dependencies(backups, reasons, removal)
    decisions = tuple(Decision(ref, i not in removal, tuple(reasons[i]) or (removal.get(i, ""),))
                      for i, ref in enumerate(backups))
    return RetentionPlan(policy, now, decisions)


def _keep_pinned(backups: Sequence[BackupRef], reasons: dict[int, list[str]], removal: dict[int, str]) -> None:
    """A pinned backup is kept whatever the rules say (a pinned leftover is still a leftover)."""
    for i, ref in enumerate(backups):
        if ref.pinned is not None and not ref.incomplete:
            removal.pop(i, None)
            reasons[i].insert(0, ref.pinned)


def _keep_dependencies(backups: Sequence[BackupRef], reasons: dict[int, list[str]], removal: dict[int, str]) -> None:
    """What a kept backup depends on is kept too, transitively (a chain keeps its root)."""
    by_id: dict[str, list[int]] = {}
    for i, ref in enumerate(backups):
        by_id.setdefault(ref.id, []).append(i)
    pending = [i for i in range(len(backups)) if i not in removal and backups[i].depends_on]
    while pending:
        i = pending.pop()
        for needed in backups[i].depends_on:
            for j in by_id.get(needed, []):
                if j in removal:
                    del removal[j]
                    pending.append(j)
                if f"needed by {backups[i].id}" not in reasons[j]:
                    reasons[j].append(f"needed by {backups[i].id}")


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
