"""The backup job (with everything around it); the prune and drill jobs are in ``jobs.prune``
and ``jobs.drill``, the last-run record in ``jobs.lastrun``, the mapping of results to metrics
in ``jobs.metrics`` and to notifications in ``jobs.events``.

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
from dataclasses import dataclass

from sentinel_backup import log, private
from sentinel_backup.choices import BackupMode, VerifyMode
from sentinel_backup.config import Settings
from sentinel_backup.errors import EXIT_FAILURE, EXIT_OK, Interrupted, SentinelError, StorageError
from sentinel_backup.interrupt import Stopper
from sentinel_backup.jobs.drill import drill_job
from sentinel_backup.jobs.events import report_drills, run_event
from sentinel_backup.jobs.lastrun import write_last_run
from sentinel_backup.jobs.metrics import metrics_for, publish_metrics, run_exit_code
from sentinel_backup.jobs.prune import prune_job
from sentinel_backup.keys import cipher_from_settings
from sentinel_backup.lock import run_lock
from sentinel_backup.logical.drill import DrillReport
from sentinel_backup.logical.run import BackupRun, RunResult
from sentinel_backup.notify import EventKind, Notifier, RunEvent
from sentinel_backup.physical.run import PhysicalRun
from sentinel_backup.retention.plan import ApplyResult, RetentionPlan
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.local import LocalStorage
from sentinel_backup.storage.registry import build_destinations

logger = log.get("jobs")
__all__ = ["BackupJobResult", "backup_job", "drill_job", "metrics_for", "prune_job", "publish_metrics",
           "run_exit_code", "usable_destinations"]


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
        try:
            dest.prepare()
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
    return usable, {name: error.describe() for name, error in unusable.items()}


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


def warn_if_exposed(settings: Settings) -> None:
    """BACKUP_DIR holds every backup (and the run lock): group or others should not see in."""
    mode = private.exposed(settings.backup_dir)
    if mode is not None:
        logger.warning(f"BACKUP_DIR {settings.backup_dir} is readable by group or others ({mode}): "
                       f"anyone with that access can read the backups; run: chmod 700 {settings.backup_dir}")


@dataclass
class BackupJobResult:
    result: RunResult
    code: int
    drills: list[DrillReport]
    pruned: list[tuple[RetentionPlan, ApplyResult]]


def backup_job(settings: Settings, *, stop: threading.Event | Stopper | None = None,
               progress: Callable[[int], None] | None = None, adhoc: bool = False) -> BackupJobResult:
    """One backup run with retention, drills, metrics and notifications around it.

    ``adhoc`` (``backup --database``): databases chosen for this run only; the last-run record
    (what ``check`` judges the scheduled runs by) is left as it is, and the metrics of the
    configured databases not in this run are carried forward.

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
        code = run_exit_code(result)
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
        if not adhoc:
            write_last_run(settings, result, code)
        publish_metrics(settings, metrics_for(result, drills, scoped=not adhoc), destinations)
        notifier.notify(run_event(result))
        report_drills(settings, drills, notifier=notifier, metrics=False)  # their metrics are in the run's
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
