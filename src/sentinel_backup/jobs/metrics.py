"""A job's results as metrics: the mapping from run and drill results to ``METRICS_FILE``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, SentinelError
from sentinel_backup.logical.drill import DrillReport
from sentinel_backup.logical.run import RunResult
from sentinel_backup.metrics import DatabaseResult, DrillResult, RunMetrics, write_metrics
from sentinel_backup.metrics import inventory as metrics_inventory
from sentinel_backup.model.catalog import scan as scan_catalog
from sentinel_backup.physical.retention import CLUSTER
from sentinel_backup.storage.base import Storage

logger = log.get("jobs")


def metrics_for(result: RunResult | None, drills: list[DrillReport], *, scoped: bool = True) -> RunMetrics:
    """``scoped``: the run covered every configured database (the series of others are dropped);
    an ad-hoc run (``backup --database``) carries the others forward."""
    now = datetime.now(UTC)
    databases = []
    for o in result.outcomes if result else []:
        m = o.manifest
        databases.append(DatabaseResult(
            o.database, o.ok, m.created_at if m else now, m.finished_at if m else now,
            m.raw_size_bytes if m else None, m.size_bytes if m else None,
            {**dict.fromkeys(o.stored, True), **dict.fromkeys(o.failed, False)}, kind=o.kind))
    drill_results = [DrillResult(d.database, d.passed, now, d.restore_seconds,
                                 kind="physical" if d.database == CLUSTER else "database") for d in drills]
    scope: frozenset[str | tuple[str, str]] | None = frozenset(
        (o.database, o.kind) for o in result.outcomes) if result and scoped else None  # others: no longer backed up
    return RunMetrics(now if result else None, bool(result and run_exit_code(result) == EXIT_OK),
                      databases, drill_results, scope)


def publish_metrics(settings: Settings, metrics: RunMetrics, destinations: list[Storage] | None = None) -> None:
    """Write METRICS_FILE; with ``destinations``, also what each of them holds now."""
    if settings.metrics_file is None:
        return
    metrics = replace(metrics, server=settings.server_name)
    if destinations is not None:
        try:
            catalog = scan_catalog(destinations, strict=False, server=settings.server_name)
            metrics = replace(metrics, inventory=metrics_inventory(
                ((e.manifest.created_at, e.manifest.size_bytes, e.locations) for e in catalog.entries),
                [d.name for d in destinations if d.name not in catalog.errors], catalog.errors))
        except Exception as exc:  # metrics never change a run's outcome: the inventory is carried forward
            logger.warning(f"Could not take the destinations' inventory for METRICS_FILE: {exc}")
    try:
        write_metrics(settings.metrics_file, metrics)
    except SentinelError as exc:
        logger.warning(f"Could not write METRICS_FILE: {exc.message}")


def run_exit_code(result: RunResult) -> int:
    """0 ok, 1 failed, 3 partial (some destinations failed), 130 interrupted."""
    if result.interrupted is not None:
        return EXIT_INTERRUPTED
    if result.failed:
        return EXIT_FAILURE
    return EXIT_PARTIAL if result.partial else EXIT_OK
