"""The drill job: restore drills of chosen backups, or of every database's newest."""

from __future__ import annotations

from pathlib import Path

from sentinel_backup.config import Settings
from sentinel_backup.interrupt import Stopper
from sentinel_backup.jobs.events import report_drills
from sentinel_backup.lock import run_lock
from sentinel_backup.logical.drill import Drill, DrillReport
from sentinel_backup.logical.restore import pick_copy
from sentinel_backup.model.catalog import scan as scan_catalog
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.registry import build_destinations


def drill_job(settings: Settings, destinations: list[Storage] | None = None,
              backup_ids: list[str] | None = None, *, publish: bool = True,
              stop: Stopper | None = None, env_file: Path | None = None) -> list[DrillReport]:
    """Drill the given backups, or the newest backup of every database and the newest physical
    backup (a point-in-time drill, see physical.drill, whose restore_command uses ``env_file``); publish metrics and
    failures unless the caller (the backup job) reports them itself. A stop request ends a
    running drill's restore and raises Interrupted instead of starting the next drill."""
    destinations = destinations if destinations is not None else build_destinations(settings)
    catalog = scan_catalog(destinations, server=settings.server_name)  # this server's newest; ids: any
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
                    entry, pick_copy(entry, destinations, None), [*catalog.entries, *catalog.others])
            else:
                report = drill.run(entry, pick_copy(entry, destinations, None))
            if stop is not None and stop.requested:
                stop.check("the drill run")  # its failure is the interruption's, not the backup's
            reports.append(report)
        if publish:
            report_drills(settings, reports, destinations=destinations)
    return reports
