"""The prune job: retention planned and applied on every destination."""

from __future__ import annotations

from datetime import UTC, datetime

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.interrupt import Stopper
from sentinel_backup.model.catalog import legacy_database
from sentinel_backup.notify import EventKind, Notifier, RunEvent
from sentinel_backup.physical.chain import chain_parents, chain_plan
from sentinel_backup.physical.retention import apply_wal, plan_wal, scan_bases, scan_wal, server_scope, wal_for_plan
from sentinel_backup.retention.plan import DEFAULT_GRACE, ApplyResult, RetentionPlan, RetentionPolicy, apply, scan
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.registry import build_destinations
from sentinel_backup.storage.wrappers import RetryingStorage

logger = log.get("jobs")


def prune_job(settings: Settings, destinations: list[Storage] | None = None, *, dry_run: bool = False,
              notifier: Notifier | None = None, now: datetime | None = None, stop: Stopper | None = None
              ) -> list[tuple[RetentionPlan, ApplyResult]]:
    """Apply retention on every destination (plan, then apply unless dry_run) to this server's
    backups (SERVER_NAME: its logical folder, the base backups its manifests name and their
    clusters' WAL); a stop request raises Interrupted before the next destination."""
    destinations = destinations if destinations is not None else build_destinations(settings)
    now = now or datetime.now(UTC)
    legacy_db = legacy_database(settings)
    results = []
    for dest in destinations:
        if stop is not None:
            stop.check("retention")
        policy = RetentionPolicy.from_settings(settings, dest.name)
        store = RetryingStorage(dest)  # a deletion that failed transiently is tried again
        # physical base backups: the same rules per cluster, incremental chains kept or removed as
        # units (physical.chain); then the WAL the kept base backups need is kept, older WAL removed
        bases, infos = scan_bases(store)
        wal = scan_wal(store)
        scope = server_scope(bases, infos, settings.server_name, wal)
        logical = scan(store, legacy_database=legacy_db, server=settings.server_name, physical=False)
        the_plan = chain_plan([*logical, *scope.bases], chain_parents(store, scope.bases), policy, now)
        applied = apply(store, the_plan, dry_run=dry_run)
        applied.notes.extend(apply_wal(store, plan_wal(scope.wal(wal), [*wal_for_plan(the_plan, infos),
                                                                         *scope.anchors]), dry_run=dry_run))
        for note in applied.notes:
            logger.info(f"{dest.name}: {note}", extra=log.fields(destination=dest.name))
        for r in applied.results:
            verb = "Would remove" if dry_run else "Removed" if r.removed else "Could not remove"
            logger.info(f"{verb} {r.backup.id} from {dest.name} ({r.reason})",
                        extra=log.fields(destination=dest.name, notes="; ".join(r.notes), error=r.error or ""))
        results.append((the_plan, applied))
        if dest.capabilities.multipart and not dry_run:  # multipart uploads a crashed run could not abort
            aborted = dest.abort_stale_uploads(DEFAULT_GRACE)
            if aborted:
                logger.info(f"Aborted {aborted} stale multipart upload(s) on {dest.name}")
    removed = sum(a.counts().get("removed", 0) for _, a in results)
    if removed and notifier is not None and not dry_run:
        notifier.notify(RunEvent(EventKind.PRUNE_REMOVED, destinations=[d.name for d in destinations],
                                 counts={"removed": removed}))
    return results
