"""`sentinel-backup backup`: one run over every configured database."""

from __future__ import annotations

from typing import Annotated

import typer

from sentinel_backup.cli.app import command, progress_bar, state


@command()
def backup(
    ctx: typer.Context,
    physical: Annotated[bool, typer.Option("--physical", help="A base backup of the whole cluster (pg_basebackup),"
                                           " for point-in-time recovery; as BACKUP_MODE=physical.")] = False,
    incremental: Annotated[bool, typer.Option("--incremental", help="With --physical: an incremental base backup"
                                              " on the newest one (PostgreSQL 17+, summarize_wal=on); as"
                                              " PHYSICAL_INCREMENTAL=true.")] = False,
) -> int:
    """Back up every database named by POSTGRES_DB (or, --physical, the whole cluster) to every destination.

    SIGTERM/SIGINT stop the run within seconds: nothing unfinished is committed, exit 130."""
    from sentinel_backup.interrupt import Stopper, signal_stop
    from sentinel_backup.jobs.backup import backup_job
    with signal_stop(Stopper(), "the backup") as stopper:
        settings = state(ctx).settings()
        if physical or incremental:
            from sentinel_backup.choices import BackupMode
            settings = settings.model_copy(update={"backup_mode": BackupMode.PHYSICAL})
        if incremental:
            settings = settings.model_copy(update={"physical_incremental": True})
        with progress_bar("dumping", enabled=state(ctx).show_progress) as progress:
            outcome = backup_job(settings, stop=stopper, progress=progress)
    return outcome.code
