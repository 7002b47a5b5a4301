"""`sentinel-backup restore`: a backup into a database, checked against the manifest.

SIGINT, SIGTERM and SIGHUP stop the restore (see :mod:`sentinel_backup.logical.restore`): the
client tool is stopped, the scratch database dropped, the target left as it was, exit 130.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sentinel_backup import log
from sentinel_backup.cli.app import command, emit, progress_bar, state
from sentinel_backup.errors import ConfigError

logger = log.get("cli")


@command()
def restore(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="A backup id from `list`, or `latest`.")] = "latest",
    target_db: Annotated[str, typer.Option("--target-db", help="Database to restore into (required).")] = "",
    create: Annotated[bool, typer.Option("--create", help="Create the target database.")] = False,
    clean: Annotated[bool, typer.Option("--clean", help="Replace an existing target database.")] = False,
    terminate_sessions: Annotated[bool, typer.Option(
        "--terminate-sessions", help="With --clean: terminate sessions on the target at the swap (else refuse).")]
    = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel jobs (custom format).")] = 1,
    database: Annotated[str | None, typer.Option("--database", help="With `latest`: of this database.")] = None,
    source: Annotated[str | None, typer.Option("--from", help="Destination to read from: local, s3, minio.")]
    = None,
    physical: Annotated[bool, typer.Option("--physical", help="Restore a physical base backup into --pgdata.")]
    = False,
    pgdata: Annotated[Path | None, typer.Option("--pgdata", help="--physical: new (empty) data directory.")] = None,
    target_time: Annotated[str | None, typer.Option("--target-time", help="--physical: recover to this time"
                                                    " (with a time zone, e.g. '2026-12-02 17:58:00+00:00').")] = None,
    target_lsn: Annotated[str | None, typer.Option("--target-lsn", help="--physical: recover to this LSN.")] = None,
    target_name: Annotated[str | None, typer.Option("--target-name", help="--physical: recover to this restore"
                                                    " point (pg_create_restore_point).")] = None,
    target_xid: Annotated[str | None, typer.Option("--target-xid", help="--physical: recover to this"
                                                   " transaction.")] = None,
    target_action: Annotated[str, typer.Option("--target-action", help="--physical: at the target: promote,"
                                               " pause or shutdown.")] = "promote",
    start: Annotated[int | None, typer.Option("--start", min=1, max=65535, help="--physical: start a temporary"
                                              " server on this port (socket only), wait for recovery, report.")]
    = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="--physical with --start: leave the"
                                               " server running.")] = False,
    keep_archiving: Annotated[bool, typer.Option("--keep-archiving", help="--physical: keep archive_mode as the"
                                                 " backup had it (a real replacement of the original).")] = False,
    tablespace_dir: Annotated[Path | None, typer.Option("--tablespace-dir", help="--physical: put tablespace"
                                                        " <oid> in DIR/<oid> (default: its original place).")]
    = None,
    tool_command: Annotated[str | None, typer.Option("--tool-command", help="--physical: how the postgres OS"
                                                     " user runs this tool in restore_command.")] = None,
) -> int:
    """Restore a backup into --target-db (never any other database), or --physical into --pgdata."""
    if physical:
        from sentinel_backup.cli.commands.restore_physical import restore_physical
        return restore_physical(ctx, backup_id, pgdata, source, target_time=target_time, target_lsn=target_lsn,
                                target_name=target_name, target_xid=target_xid, target_action=target_action,
                                start=start, keep_running=keep_running, keep_archiving=keep_archiving,
                                tablespace_dir=tablespace_dir, tool_command=tool_command)
    from sentinel_backup.interrupt import StopSignals
    from sentinel_backup.logical.restore import Restorer, pick_copy
    from sentinel_backup.model.catalog import legacy_database, scan
    from sentinel_backup.storage.registry import build_destinations
    settings = state(ctx).settings()
    if not target_db:
        raise ConfigError("--target-db is required", "name the database to restore into: --target-db NAME")
    if terminate_sessions and not clean:
        raise ConfigError("--terminate-sessions only applies with --clean", "add --clean, or drop the option")
    destinations = build_destinations(settings)
    entry = scan(destinations, legacy=True, legacy_db=legacy_database(settings)).find(backup_id, database)
    storage = pick_copy(entry, destinations, source)
    with StopSignals() as stop, progress_bar("restoring", entry.manifest.size_bytes,
                                                enabled=state(ctx).show_progress) as progress:
        result = Restorer(settings, progress=progress, stop=stop).restore(
            entry, storage, target_db, create=create, clean=clean, terminate_sessions=terminate_sessions, jobs=jobs)
    tables = len(result.actual)
    verdict = ("match the manifest" if result.counts_match else "not checked: a legacy file of the shell version "
               "records none (row-count check skipped)" if entry.legacy else "were not recorded (globals)")
    emit(f"Restored {entry.id} from {storage.name} into {target_db} in {result.seconds:.1f} s; "
         f"row counts of {tables} tables {verdict}.")
    for note in result.notes:
        emit(f"Note: {note}")
    if stop.name is not None:
        emit(f"Note: {stop.name} arrived when the final swap had begun; it completed: {target_db} holds {entry.id}.")
    logger.info("Restore completed", extra=log.fields(backup=entry.id, target=target_db, seconds=result.seconds,
                                                      tables=tables))
    return 0
