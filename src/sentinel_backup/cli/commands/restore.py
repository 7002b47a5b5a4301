"""`sentinel-backup restore`: a backup into a database, checked against the manifest.

SIGINT, SIGTERM and SIGHUP stop the restore (see :mod:`sentinel_backup.logical.restore`): the
client tool is stopped, the scratch database dropped, the target left as it was, exit 130.

``--list`` shows what an archive holds (pg_restore -l); ``--schema``/``--table`` restore a
selection of it (see :mod:`sentinel_backup.logical.selective`); ``--globals`` applies a
globals backup, roles and tablespaces, to the server (see :mod:`sentinel_backup.logical.globals`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sentinel_backup import log
from sentinel_backup.cli.app import command, emit, progress_bar, state
from sentinel_backup.errors import EXIT_FAILURE, ConfigError

if TYPE_CHECKING:
    from sentinel_backup.config import Settings
    from sentinel_backup.logical.globals import GlobalsReport
    from sentinel_backup.logical.selective import RestoreSelection

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
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1,
                                      help="Parallel pg_restore jobs (custom and directory formats).")] = 1,
    database: Annotated[str | None, typer.Option("--database", help="With `latest`: of this database.")] = None,
    source: Annotated[str | None, typer.Option("--from", help="Destination to read from: local, s3, minio.")]
    = None,
    schema: Annotated[list[str] | None, typer.Option(
        "--schema", "-n", metavar="<name>",
        help="Restore only this schema (repeatable; custom or directory format).")] = None,
    table: Annotated[list[str] | None, typer.Option(
        "--table", "-t", metavar="<name>",
        help="Restore only tables of this name (repeatable; custom or directory format).")] = None,
    list_only: Annotated[bool, typer.Option("--list", help="Show what the backup holds (pg_restore -l).")] = False,
    globals_: Annotated[bool, typer.Option(
        "--globals", help="Apply a globals backup (roles, tablespaces) to the server.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --globals: print the SQL, change nothing.")]
    = False,
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
    """Restore a backup into --target-db (never any other database), or --physical into --pgdata;
    --list shows its contents, --schema/--table restore part of it, --globals applies roles and tablespaces."""
    if physical:
        if target_db or schema or table or list_only or globals_ or clean or create:
            raise ConfigError("--physical restores a whole cluster into --pgdata; --target-db, --create, --clean,"
                              " --schema, --table, --list and --globals are for logical backups",
                              "leave those options out, or --physical")
        from sentinel_backup.cli.commands.restore_physical import restore_physical
        return restore_physical(ctx, backup_id, pgdata, source, target_time=target_time, target_lsn=target_lsn,
                                target_name=target_name, target_xid=target_xid, target_action=target_action,
                                start=start, keep_running=keep_running, keep_archiving=keep_archiving,
                                tablespace_dir=tablespace_dir, tool_command=tool_command)
    from sentinel_backup.interrupt import StopSignals
    from sentinel_backup.logical.restore import Restorer, pick_copy
    from sentinel_backup.logical.selective import RestoreSelection, list_contents
    from sentinel_backup.model.catalog import legacy_database, scan
    from sentinel_backup.storage.registry import build_destinations
    selection = RestoreSelection(tuple(schema or ()), tuple(table or ()))
    _check_modes(list_only=list_only, globals_=globals_, dry_run=dry_run, selection=selection, target_db=target_db)
    settings = state(ctx).settings()
    if globals_:
        return _globals(settings, backup_id, source, dry_run=dry_run)
    if not target_db and not list_only:
        raise ConfigError("--target-db is required", "name the database to restore into: --target-db NAME")
    if terminate_sessions and not clean:
        raise ConfigError("--terminate-sessions only applies with --clean", "add --clean, or drop the option")
    destinations = build_destinations(settings)
    entry = scan(destinations, legacy=True, legacy_db=legacy_database(settings), server=settings.server_name).find(
        backup_id, database)
    storage = pick_copy(entry, destinations, source)
    if list_only:
        emit(list_contents(settings, entry.manifest, storage, legacy=entry.legacy).rstrip("\n"))
        return 0
    with StopSignals() as stop, progress_bar(f"restoring {entry.manifest.database}", entry.manifest.size_bytes,
                                                enabled=state(ctx).show_progress) as progress:
        result = Restorer(settings, progress=progress, stop=stop).restore(
            entry, storage, target_db, create=create, clean=clean, terminate_sessions=terminate_sessions, jobs=jobs,
            selection=selection)
    tables = len(result.expected if result.expected is not None else result.actual)
    verdict = ("match the manifest" if result.counts_match else "not checked: a legacy file of the shell version "
               "records none (row-count check skipped)" if entry.legacy else "were not recorded (globals)")
    what = f" ({selection.describe()})" if not selection.empty else ""
    counted = "selected tables" if not selection.empty else "tables"
    emit(f"Restored {entry.id}{what} from {storage.name} into {target_db} in {result.seconds:.1f} s; "
         f"row counts of {tables} {counted} {verdict}.")
    if selection.tables:
        emit("Note: as pg_restore -t does, the selected tables come with their definition and data, without "
             "their indexes, constraints or triggers (select their schema with --schema for everything in it).")
    for note in result.notes:
        emit(f"Note: {note}")
    if stop.name is not None:
        emit(f"Note: {stop.name} arrived when the final swap had begun; it completed: {target_db} holds {entry.id}.")
    logger.info("Restore completed", extra=log.fields(backup=entry.id, target=target_db, seconds=result.seconds,
                                                      tables=tables))
    return 0


def _check_modes(*, list_only: bool, globals_: bool, dry_run: bool, selection: RestoreSelection,
                 target_db: str) -> None:
    """Options that cannot go together are a usage error (exit 2) before anything is read."""
    if dry_run and not globals_:
        raise ConfigError("--dry-run applies to --globals only", "add --globals, or drop --dry-run")
    if globals_ and (target_db or list_only or not selection.empty):
        raise ConfigError("--globals applies roles and tablespaces to the server: it takes no --target-db, --list, "
                          "--schema or --table", "run the globals restore and the database restore separately")
    if list_only and (target_db or not selection.empty):
        raise ConfigError("--list only shows what the backup holds: it restores nothing",
                          "drop --target-db/--schema/--table, or drop --list")


def _globals(settings: Settings, backup_id: str, source: str | None, *, dry_run: bool) -> int:
    from sentinel_backup.logical.globals import GlobalsRestorer, dry_run_text, find_globals, read_sql
    from sentinel_backup.logical.restore import pick_copy
    from sentinel_backup.model.catalog import scan
    from sentinel_backup.storage.registry import build_destinations
    destinations = build_destinations(settings)
    entry = find_globals(scan(destinations, server=settings.server_name), backup_id)
    storage = pick_copy(entry, destinations, source)
    sql = read_sql(settings, entry.manifest, storage)
    restorer = GlobalsRestorer(settings)
    statements = restorer.plan(sql)
    if dry_run:
        emit(f"-- {entry.id} from {storage.name}: the SQL `restore --globals` would run on this server"
             " (nothing was changed)")
        emit(dry_run_text(statements).rstrip("\n"))
        return 0
    report = restorer.apply(entry.id, statements)
    _report(report, storage.name)
    return 0 if report.ok else EXIT_FAILURE


def _report(report: GlobalsReport, source: str) -> None:
    def names(items: list[str]) -> str:
        return ", ".join(items) if items else "-"

    emit(f"Applied globals {report.backup_id} from {source}: {report.applied} statement(s) ran, "
         f"{len(report.failed)} failed.")
    emit(f"  roles created ({len(report.roles_created)}): {names(report.roles_created)}")
    emit(f"  roles skipped, they exist and were left as they are ({len(report.roles_skipped)}): "
         f"{names(report.roles_skipped)}")
    if report.tablespaces_created or report.tablespaces_skipped:
        emit(f"  tablespaces created ({len(report.tablespaces_created)}): {names(report.tablespaces_created)}")
        emit(f"  tablespaces skipped, they exist ({len(report.tablespaces_skipped)}): "
             f"{names(report.tablespaces_skipped)}")
    for statement, error in report.failed:
        emit(f"  FAILED {statement}: {error}")
