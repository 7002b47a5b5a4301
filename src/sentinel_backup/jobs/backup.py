"""The jobs the CLI and the scheduler run: backup (with everything around it), prune, drill.

A backup job holds the run lock, pings the dead-man's switch, runs the backup, applies
retention only after a fully successful run, runs drills when VERIFY_AFTER_BACKUP=restore,
writes the last-run record and metrics, and notifies. Notifications and metrics never
change the outcome; their failures are warnings.

A stop request (``stop``) ends the job as soon as possible: an interrupted backup commits
nothing unfinished; retention and drills do not start (or stop between destinations /
backups); the last-run record, metrics and notifications still say what happened; then
Interrupted (exit 130) is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sentinel_backup import log, private
from sentinel_backup.choices import BackupMode, VerifyMode
from sentinel_backup.config import Settings
from sentinel_backup.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    Interrupted,
    SentinelError,
    StorageError,
)
from sentinel_backup.interrupt import Stopper
from sentinel_backup.jobs.lastrun import write_last_run
from sentinel_backup.keys import cipher_from_settings
from sentinel_backup.lock import run_lock
from sentinel_backup.logical.drill import Drill, DrillReport
from sentinel_backup.logical.restore import pick_copy
from sentinel_backup.logical.run import BackupRun, RunResult
from sentinel_backup.metrics import DatabaseResult, DrillResult, RunMetrics, write_metrics
from sentinel_backup.metrics import inventory as metrics_inventory
from sentinel_backup.model.catalog import legacy_database
from sentinel_backup.model.catalog import scan as scan_catalog
from sentinel_backup.notify import EventKind, Notifier, RunEvent
from sentinel_backup.physical.chain import chain_parents, chain_plan
from sentinel_backup.physical.retention import apply_wal, plan_wal, scan_bases, scan_wal, wal_for_plan
from sentinel_backup.physical.run import PhysicalRun
from sentinel_backup.retention.plan import DEFAULT_GRACE, ApplyResult, RetentionPlan, RetentionPolicy, apply, scan
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.local import LocalStorage
from sentinel_backup.storage.registry import build_destinations

logger = log.get("jobs")



def usable_destinations(settings: Settings) -> tuple[list[Storage], dict[str, str]]:
    """The enabled destinations that passed preparation, and the remote ones that did not
    (name -> error). BACKUP_DIR must be usable (it holds the run lock). A remote destination
    that cannot be used (no bucket, bad keys, unreachable) is left out and reported, so the
    others still get the backup (a partial success, exit 3); when no destination is usable
    the run fails before any dump."""
    if not settings.local_enabled:
        LocalStorage(settings.backup_dir).prepare()
    usable: list[Storage] = []
    unusable: dict[str, StorageError] = {}
    for dest in build_destinations(settings):
        prepare = getattr(dest, "prepare", None)
        try:
            if callable(prepare):
                prepare()
        except StorageError as exc:
            if isinstance(dest, LocalStorage):
                raise
            unusable[dest.name] = exc
            continue
        usable.append(dest)
    if not usable:
        raise next(iter(unusable.values()))
    for name, error in unusable.items():
        logger.error(f"Destination {name} cannot be used, backing up to the others: {error.message}",
                     extra=log.fields(destination=name, hint=error.hint or ""))
    return usable, {name: error.message + (f" (hint: {error.hint})" if error.hint else "")
                    for name, error in unusable.items()}


def exit_code(result: RunResult) -> int:
    if result.interrupted is not None:
        return EXIT_INTERRUPTED
    if result.failed:
        return EXIT_FAILURE
    return EXIT_PARTIAL if result.partial else EXIT_OK


def summarize(result: RunResult, drills: list[DrillReport] | None = None) -> None:
    """The run's summary line, logged after everything else the job does (retention, drills,
    notifications): a good run's last line is `Backup process completed`."""
    good = [o for o in result.outcomes if o.ok]
    raw = sum(o.manifest.raw_size_bytes for o in good if o.manifest)
    stored = sum(o.manifest.size_bytes for o in good if o.manifest)
    failed_drills = [d.database for d in drills or [] if not d.passed]
    status = ("interrupted" if result.interrupted else "failed" if result.failed or failed_drills
              else "partial" if result.partial else "ok")
    fields = log.fields(status=status, databases=len(result.outcomes), succeeded=len(good),
                        failed=len(result.failed), raw_bytes=raw, stored_bytes=stored,
                        duration_seconds=round(result.duration, 2))
    if result.interrupted:
        logger.warning(f"Backup process interrupted: {result.interrupted.message}", extra=fields)
    elif result.failed:
        logger.error(f"Backup process failed for {', '.join(o.database for o in result.failed)}", extra=fields)
    elif failed_drills:
        logger.error(f"Backup process failed: the restore drill failed for {', '.join(failed_drills)}",
                     extra=fields)
    elif result.partial:
        logger.warning("Backup process completed with failed destinations", extra=fields)
    else:
        logger.info("Backup process completed", extra=fields)


def run_event(result: RunResult) -> RunEvent:
    kind = (EventKind.BACKUP_FAILED if result.failed else EventKind.BACKUP_PARTIAL if result.partial
            else EventKind.BACKUP_SUCCEEDED)
    errors = [f"{o.database}: {o.error}" for o in result.failed if o.error]
    errors += [f"{o.database} on {d}: {e}" for o in result.outcomes for d, e in o.failed.items()]
    stored = sorted({d for o in result.outcomes for d in o.stored})
    return RunEvent(kind, databases=[o.database for o in result.outcomes],
                    sizes={o.database: o.manifest.size_bytes for o in result.outcomes if o.manifest},
                    duration_seconds=round(result.duration, 1), destinations=stored,
                    error="\n".join(errors) or None,
                    counts={"succeeded": len(result.outcomes) - len(result.failed), "failed": len(result.failed)})


def warn_if_exposed(settings: Settings) -> None:
    """BACKUP_DIR holds every backup (and the run lock): group or others should not see in."""
    mode = private.exposed(settings.backup_dir)
    if mode is not None:
        logger.warning(f"BACKUP_DIR {settings.backup_dir} is readable by group or others ({mode}): "
                       f"anyone with that access can read the backups; run: chmod 700 {settings.backup_dir}")


def metrics_for(result: RunResult | None, drills: list[DrillReport]) -> RunMetrics:
    now = datetime.now(UTC)
    databases = []
    for o in result.outcomes if result else []:
        m = o.manifest
        databases.append(DatabaseResult(
            o.database, o.ok, m.created_at if m else now, m.finished_at if m else now,
            m.raw_size_bytes if m else None, m.size_bytes if m else None,
            {**dict.fromkeys(o.stored, True), **dict.fromkeys(o.failed, False)}))
    drill_results = [DrillResult(d.database, d.passed, now, d.restore_seconds) for d in drills]
    scope = frozenset(o.database for o in result.outcomes) if result else None  # others are no longer backed up
    return RunMetrics(now if result else None, bool(result and exit_code(result) == 0),
                      databases, drill_results, scope)


def publish_metrics(settings: Settings, metrics: RunMetrics, destinations: list[Storage] | None = None) -> None:
    """Write METRICS_FILE; with ``destinations``, also what each of them holds now."""
    if settings.metrics_file is None:
        return
    if destinations is not None:
        try:
            catalog = scan_catalog(destinations, strict=False)
            metrics = replace(metrics, inventory=metrics_inventory(
                ((e.manifest.created_at, e.manifest.size_bytes, e.locations) for e in catalog.entries),
                [d.name for d in destinations if d.name not in catalog.errors], catalog.errors))
        except Exception as exc:  # metrics never change a run's outcome: the inventory is carried forward
            logger.warning(f"Could not take the destinations' inventory for METRICS_FILE: {exc}")
    try:
        write_metrics(settings.metrics_file, metrics)
    except SentinelError as exc:
        logger.warning(f"Could not write METRICS_FILE: {exc.message}")


@dataclass
class BackupJobResult:
    result: RunResult
    code: int
    drills: list[DrillReport]
    pruned: list[tuple[RetentionPlan, ApplyResult]]


def backup_job(settings: Settings, *, stop: threading.Event | Stopper | None = None,
               progress: Callable[[int], None] | None = None) -> BackupJobResult:
    """One backup run with retention, drills, metrics and notifications around it.

    Raises Interrupted (after the last-run record, metrics and notifications) when ``stop``
    is set during the job."""
    stopper = stop if isinstance(stop, Stopper) else Stopper(stop)
    cipher = cipher_from_settings(settings)  # a bad key is a configuration error: before anything is touched
    destinations, unusable = usable_destinations(settings)
    warn_if_exposed(settings)
    notifier = Notifier.from_settings(settings)
    stopper.check("the backup")
    with run_lock(settings.backup_dir), stopper.watching():
        notifier.ping("start")
        try:
            runner = PhysicalRun if settings.backup_mode is BackupMode.PHYSICAL else BackupRun
            result = runner(settings, destinations, progress=progress, stop=stopper, unusable=unusable,
                            cipher=cipher).run()
        except SentinelError as exc:
            notifier.notify(RunEvent(EventKind.BACKUP_FAILED, error=exc.message))
            notifier.ping("fail", exc.message)
            raise
        code = exit_code(result)
        pruned: list[tuple[RetentionPlan, ApplyResult]] = []
        drills: list[DrillReport] = []
        late: Interrupted | None = None  # a stop request after every backup of the run was committed
        try:
            if code == EXIT_OK and settings.retention_after_backup:
                pruned = prune_job(settings, destinations, notifier=notifier, stop=stopper)
            if settings.verify_after_backup is VerifyMode.RESTORE and result.interrupted is None:
                drilled = [o.manifest.id for o in result.outcomes if o.ok and o.manifest and o.kind == "database"]
                drills = drill_job(settings, destinations, drilled, publish=False, stop=stopper)
                if any(not d.passed for d in drills) and code == EXIT_OK:
                    code = EXIT_FAILURE
            if result.interrupted is None:
                stopper.check("the backup job")
        except Interrupted as exc:  # the backups are committed: the record says how they went
            late = Interrupted(f"{exc.message} after its backups were committed (they are complete and stay)",
                               "retention and drills did not finish; they run again after the next backup")
            logger.warning(late.message)
        write_last_run(settings, result, code)
        publish_metrics(settings, metrics_for(result, drills), destinations)
        notifier.notify(run_event(result))
        for d in drills:
            if not d.passed:
                notifier.notify(RunEvent(EventKind.VERIFY_FAILED, databases=[d.database], error=d.error or
                                         f"{len(d.differences)} table(s) differ from the manifest"))
        if code == EXIT_OK:
            notifier.ping("success")
        else:
            notifier.ping("fail", result.interrupted.message if result.interrupted else run_event(result).error)
        summarize(result, drills)  # the last line of the job: `Backup process completed` only when all is done
    if result.interrupted is not None:
        kept = [o.manifest.artifact for o in result.outcomes if o.manifest and o.stored]
        raise Interrupted(result.interrupted.message + (f"; completed before the stop: {', '.join(kept)}"
                                                        if kept else ""), result.interrupted.hint)
    if late is not None:
        raise late
    return BackupJobResult(result, code, drills, pruned)


def prune_job(settings: Settings, destinations: list[Storage] | None = None, *, dry_run: bool = False,
              notifier: Notifier | None = None, now: datetime | None = None, stop: Stopper | None = None
              ) -> list[tuple[RetentionPlan, ApplyResult]]:
    """Apply retention on every destination (plan, then apply unless dry_run); a stop request
    raises Interrupted before the next destination."""
    destinations = destinations if destinations is not None else build_destinations(settings)
    now = now or datetime.now(UTC)
    legacy_db = legacy_database(settings)
    results = []
    for dest in destinations:
        if stop is not None:
            stop.check("retention")
        policy = RetentionPolicy.from_settings(settings, dest.name)
        bases, infos = scan_bases(dest)  # physical base backups: the same rules, per cluster
        # incremental chains are kept or removed as units (physical.chain)
        the_plan = chain_plan([*scan(dest, now, legacy_database=legacy_db), *bases], chain_parents(dest, bases),
                              policy, now)
        applied = apply(dest, the_plan, dry_run=dry_run)
        applied.notes.extend(apply_wal(dest, plan_wal(scan_wal(dest), wal_for_plan(the_plan, infos)),
                                       dry_run=dry_run))
        for note in applied.notes:
            logger.info(f"{dest.name}: {note}", extra=log.fields(destination=dest.name))
        for r in applied.results:
            verb = "Would remove" if dry_run else "Removed" if r.removed else "Could not remove"
            logger.info(f"{verb} {r.backup.id} from {dest.name} ({r.reason})",
                        extra=log.fields(destination=dest.name, notes="; ".join(r.notes), error=r.error or ""))
        results.append((the_plan, applied))
        abort_stale = getattr(dest, "abort_stale_uploads", None)
        if callable(abort_stale) and not dry_run:  # multipart uploads a crashed run could not abort
            aborted = abort_stale(DEFAULT_GRACE)
            if aborted:
                logger.info(f"Aborted {aborted} stale multipart upload(s) on {dest.name}")
    removed = sum(a.counts().get("removed", 0) for _, a in results)
    if removed and notifier is not None and not dry_run:
        notifier.notify(RunEvent(EventKind.PRUNE_REMOVED, destinations=[d.name for d in destinations],
                                 counts={"removed": removed}))
    return results


def drill_job(settings: Settings, destinations: list[Storage] | None = None,
              backup_ids: list[str] | None = None, *, publish: bool = True,
              stop: Stopper | None = None, env_file: Path | None = None) -> list[DrillReport]:
    """Drill the given backups, or the newest backup of every database (and the newest physical
    backup: a point-in-time drill, see physical.drill, whose restore_command uses ``env_file``); publish metrics and
    failures unless the caller (the backup job) reports them itself. A stop request ends a
    running drill's restore and raises Interrupted instead of starting the next drill."""
    destinations = destinations if destinations is not None else build_destinations(settings)
    catalog = scan_catalog(destinations)
    if backup_ids is None:
        seen: dict[str, str] = {}
        for entry in catalog.entries:
            if entry.manifest.kind in ("database", "physical"):
                seen.setdefault(entry.manifest.database, entry.id)
        backup_ids = list(seen.values())
    drill = Drill(settings)
    if stop is not None:
        drill.restorer.source.on_spawn = stop.adopt
    reports: list[DrillReport] = []
    with run_lock(settings.backup_dir):
        for backup_id in backup_ids:
            if stop is not None:
                stop.check("the drill run")
            entry = catalog.find(backup_id)
            report: DrillReport
            if entry.manifest.kind == "physical":
                from sentinel_backup.physical.drill import PhysicalDrill
                report = PhysicalDrill(settings, destinations, env_file=env_file).run(
                    entry, pick_copy(entry, destinations, None), catalog.entries)
            else:
                report = drill.run(entry, pick_copy(entry, destinations, None))
            if stop is not None and stop.requested:
                stop.check("the drill run")  # its failure is the interruption's, not the backup's
            reports.append(report)
        if not publish:
            return reports
        publish_metrics(settings, metrics_for(None, reports), destinations)
    notifier = Notifier.from_settings(settings)
    for report in reports:
        if not report.passed:
            notifier.notify(RunEvent(EventKind.VERIFY_FAILED, databases=[report.database],
                                     error=report.error or f"{len(report.differences)} table(s) differ"))
    return reports

