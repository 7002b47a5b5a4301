"""A job's results as notifications: the event of a backup run, and the one place a failed
verification (a drill that did not pass) becomes a notification and metrics, for the CLI and
the jobs alike."""

from __future__ import annotations

from collections.abc import Sequence

from sentinel_backup.config import Settings
from sentinel_backup.jobs.metrics import metrics_for, publish_metrics
from sentinel_backup.logical.drill import DrillReport
from sentinel_backup.logical.run import Outcome, RunResult
from sentinel_backup.notify import EventKind, Notifier, RunEvent
from sentinel_backup.notify_event import GLOBALS_TEXT
from sentinel_backup.storage.base import Storage


def run_event(result: RunResult) -> RunEvent:
    kind = (EventKind.BACKUP_FAILED if result.failed else EventKind.BACKUP_PARTIAL if result.partial
            else EventKind.BACKUP_SUCCEEDED)
    errors = [f"{label(o)}: {o.error}" for o in result.failed if o.error]
    errors += [f"{label(o)} on {d}: {e}" for o in result.outcomes for d, e in o.failed.items()]
    stored = sorted({d for o in result.outcomes for d in o.stored})
    dbs = [o for o in result.outcomes if o.kind != "globals"]
    roles = next((o for o in result.outcomes if o.kind == "globals"), None)
    return RunEvent(kind, databases=[o.database for o in dbs],
                    sizes={o.database: o.manifest.size_bytes for o in dbs if o.manifest},
                    duration_seconds=round(result.duration, 1), destinations=stored,
                    error="\n".join(errors) or None,
                    counts={"succeeded": len(result.outcomes) - len(result.failed), "failed": len(result.failed)},
                    globals=roles is not None,
                    globals_size=roles.manifest.size_bytes if roles is not None and roles.manifest else None)


def label(outcome: Outcome) -> str:
    """A run's part as people are told of it: the database, or the roles and tablespaces."""
    return GLOBALS_TEXT if outcome.kind == "globals" else outcome.database


def drill_failed_event(report: DrillReport) -> RunEvent:
    return RunEvent(EventKind.VERIFY_FAILED, databases=[report.database],
                    error=report.error or f"{len(report.differences)} table(s) differ from the manifest")


def report_drills(settings: Settings, reports: Sequence[DrillReport], *, notifier: Notifier | None = None,
                  destinations: list[Storage] | None = None, metrics: bool = True) -> None:
    """Metrics of the drills (unless the caller writes them with its run's), then a
    notification for each one that failed."""
    if metrics:
        publish_metrics(settings, metrics_for(None, list(reports)), destinations)
    failed = [r for r in reports if not r.passed]
    if not failed:
        return
    notifier = notifier or Notifier.from_settings(settings)
    for report in failed:
        notifier.notify(drill_failed_event(report))
