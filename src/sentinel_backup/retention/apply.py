"""Applying a retention plan: the objects of every removed backup deleted, manifest first.

A dry run goes through the same code on a :class:`~sentinel_backup.storage.wrappers.DryRunStorage`,
which records the deletions instead of doing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sentinel_backup.errors import ObjectLocked, SentinelError
from sentinel_backup.retention.scan import BackupRef
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.wrappers import DryRunStorage

if TYPE_CHECKING:
    from sentinel_backup.retention.plan import Decision, RetentionPlan


@dataclass
class BackupResult:
    """What happened to one removed backup's objects."""

    backup: BackupRef
    reason: str
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    dry_run: bool = False  # ``deleted`` then lists what would have been deleted

    @property
    def removed(self) -> bool:
        return (not self.dry_run and self.error is None and not self.skipped
                and len(self.deleted) == len(self.backup.keys))


@dataclass
class ApplyResult:
    destination: str
    dry_run: bool
    results: list[BackupResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the destination as a whole (e.g. the WAL ranges)

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


def apply(storage: Storage, retention_plan: RetentionPlan, *, dry_run: bool = False) -> ApplyResult:
    """Delete the objects of every removed backup, manifest first, dependents before what they
    depend on. Never raises for one backup's failure: errors and locks are collected per
    backup. ``dry_run``: the same steps on a DryRunStorage, which deletes nothing."""
    target: Storage = DryRunStorage(storage) if dry_run else storage
    result = ApplyResult(storage.name, dry_run)
    for decision in removal_order(retention_plan.removed):
        outcome = BackupResult(decision.backup, decision.reason, dry_run=dry_run)
        result.results.append(outcome)
        _delete_keys(target, outcome)
        if dry_run:
            outcome.notes.append("dry run: nothing deleted")
    return result


def removal_order(removed: Sequence[Decision]) -> list[Decision]:
    """Dependents first (newest first among them), then what they depend on, as pgBackRest expires."""
    needed = {dep for d in removed for dep in d.backup.depends_on}
    return sorted(removed, key=lambda d: d.backup.id in needed)


def _delete_keys(storage: Storage, outcome: BackupResult) -> None:
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


def _held(storage: Storage, keys: Sequence[str]) -> list[str]:
    """Keys under an object lock, where the backend has object locks (``capabilities.object_lock``)."""
    if not storage.capabilities.object_lock:
        return []
    try:
        return [k for k in keys if storage.is_locked(k)]
    except (SentinelError, OSError):
        return []  # cannot tell: deletion will meet the lock (ObjectLocked) if there is one
