"""`sentinel-backup verify`: re-read stored copies and check them against the manifest."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from sentinel_backup import log
from sentinel_backup.cli.app import command, emit, progress_bar, state
from sentinel_backup.errors import EXIT_FAILURE, ConfigError, NotFound

if TYPE_CHECKING:
    from sentinel_backup.config import Settings
    from sentinel_backup.model.catalog import Entry
    from sentinel_backup.storage.base import Storage

logger = log.get("cli")


@command()
def verify(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="A backup id from `list`, or `latest`.")] = "latest",
    database: Annotated[str | None, typer.Option("--database", help="With `latest`: of this database.")] = None,
    destination: Annotated[str | None, typer.Option("--destination", help="Only the copy on this destination.")]
    = None,
    restore: Annotated[bool, typer.Option("--restore", help="Also run a restore drill into a scratch database.")]
    = False,
    physical: Annotated[bool, typer.Option("--physical", help="With `latest`: the newest physical backup.")] = False,
    tool_command: Annotated[str | None, typer.Option("--tool-command", help="Physical drills: how the postgres OS"
                                                     " user runs this tool for restore_command.")] = None,
) -> int:
    """Check SHA-256, size and full decompression of a backup's copies (and with --restore, a drill)."""
    from sentinel_backup.logical.restore import pick_copy
    from sentinel_backup.model.catalog import legacy_database, scan
    from sentinel_backup.pipeline.verify import verify_copy, verify_legacy
    from sentinel_backup.storage.registry import build_destinations, destination_by_name
    settings = state(ctx).settings()
    destinations = build_destinations(settings)
    if destination is not None:  # an unknown or unconfigured name is a usage error (exit 2)
        wanted = destination_by_name(settings, destination)
        destinations, destination = [d for d in destinations if d.name != wanted.name] + [wanted], wanted.name
    catalog = scan(destinations, legacy=True, legacy_db=legacy_database(settings), server=settings.server_name)
    entry = catalog.find(backup_id, database) if not physical or backup_id != "latest" else next(
        (e for e in catalog.entries if e.manifest.kind == "physical"), None) or catalog.find("latest", "(cluster)")
    if restore and entry.manifest.kind == "physical":  # a point-in-time restore into a scratch server
        from sentinel_backup.cli.commands.drill_physical import drill_physical
        return drill_physical(settings, entry, [*catalog.entries, *catalog.others], destinations, destination,
                              env_file=state(ctx).env_file, tool_command=tool_command)
    if restore and entry.legacy:
        raise ConfigError(f"{entry.id} is a legacy file of the shell version: it has no row counts to drill against",
                          f"verify it without --restore, or restore it: sentinel-backup restore {entry.id} "
                          "--target-db NAME --create")
    if restore:
        return _drill(settings, entry, pick_copy(entry, destinations, destination))
    targets = [d for d in destinations if d.name in entry.locations and destination in (None, d.name)]
    if not targets:
        raise NotFound(f"{entry.id} has no copy on {destination}", f"it is on: {', '.join(sorted(entry.locations))}")
    failed = 0
    if entry.legacy:
        emit(f"{entry.id}: legacy file of the shell version, no manifest: checking size, gzip integrity "
             "(full decompression), the end-of-dump marker and its .sha256 file when present")
    verify_one = verify_legacy if entry.legacy else verify_copy
    for storage in targets:
        with progress_bar(f"verifying {storage.name}", entry.manifest.size_bytes,
                          enabled=state(ctx).show_progress) as progress:
            report = verify_one(storage, entry.manifest, settings, progress=progress)
        for check in report.checks:
            emit(f"{storage.name}: {check.name:<12} {'ok' if check.ok else 'FAILED':<7} {check.detail}")
        if report.ok:
            logger.info(f"Verified {entry.id} on {storage.name}", extra=log.fields(backup=entry.id))
        else:
            failed += 1
            logger.error(f"Verification of {entry.id} on {storage.name} failed",
                         extra=log.fields(backup=entry.id, failed=",".join(c.name for c in report.failures)))
    return EXIT_FAILURE if failed else 0


def _drill(settings: Settings, entry: Entry, storage: Storage) -> int:
    from sentinel_backup.jobs.events import report_drills
    from sentinel_backup.lock import run_lock
    from sentinel_backup.logical.drill import Drill
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: the scratch database is dropped
    with run_lock(settings.backup_dir):
        report = Drill(settings).run(entry, storage)
        report_drills(settings, [report])
    emit(f"Drill of {entry.id} from {storage.name}: {'PASSED' if report.passed else 'FAILED'}")
    emit(f"  restore: {report.restore_seconds} s into scratch database {report.scratch_database} (dropped)")
    emit(f"  tables checked: {report.tables_checked}")
    for table, diff in report.differences.items():
        emit(f"  DIFFERS {table}: manifest {diff['manifest']}, restored {diff['restored']}")
    for c in report.checks:
        emit(f"  {'ok    ' if c.ok else 'FAILED'} check {c.name!r}: {c.detail}")
    if report.error:
        emit(f"  error: {report.error}")
    return 0 if report.passed else EXIT_FAILURE
