"""`sentinel-backup backup`: one run over every configured database, or the ones named."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from sentinel_backup.cli.app import command, progress_bar, state
from sentinel_backup.errors import ConfigError

if TYPE_CHECKING:
    from sentinel_backup.config import Settings


@command()
def backup(
    ctx: typer.Context,
    database: Annotated[list[str] | None, typer.Option(
        "--database", metavar="<name>",
        help="Back up this database instead of POSTGRES_DB, for this run only (repeatable).")] = None,
    physical: Annotated[bool, typer.Option("--physical", help="A base backup of the whole cluster (pg_basebackup),"
                                           " for point-in-time recovery; as BACKUP_MODE=physical.")] = False,
    incremental: Annotated[bool, typer.Option("--incremental", help="With --physical: an incremental base backup"
                                              " on the newest one (PostgreSQL 17+, summarize_wal=on); as"
                                              " PHYSICAL_INCREMENTAL=true.")] = False,
) -> int:
    """Back up every database named by POSTGRES_DB or --database (or, --physical, the whole cluster)
    to every enabled destination.

    SIGTERM/SIGINT stop the run within seconds: nothing unfinished is committed, exit 130."""
    from sentinel_backup.interrupt import Stopper, signal_stop
    from sentinel_backup.jobs.backup import backup_job
    with signal_stop(Stopper(), "the backup") as stopper:
        settings = state(ctx).settings()
        if physical or incremental:
            if database:
                raise ConfigError("--database names databases of a logical backup; a physical backup is of the"
                                  " whole cluster", "leave out --database, or --physical")
            from sentinel_backup.choices import BackupMode
            settings = settings.model_copy(update={"backup_mode": BackupMode.PHYSICAL})
        if incremental:
            settings = settings.model_copy(update={"physical_incremental": True})
        if database:
            settings = adhoc_settings(settings, database)
        with progress_bar("dumping", enabled=state(ctx).show_progress, estimate=_estimator(settings)) as progress:
            outcome = backup_job(settings, stop=stopper, progress=progress, adhoc=bool(database))
    return outcome.code


def adhoc_settings(settings: Settings, names: list[str]) -> Settings:
    """POSTGRES_DB replaced by ``names`` for this run; globals only with BACKUP_GLOBALS=true.
    A name that is empty, holds a comma, or is not a database on the server is a usage error."""
    from sentinel_backup.pg.source import Source
    chosen = list(dict.fromkeys(n.strip() for n in names))
    bad = [n for n in chosen if not n or "," in n]
    if bad:
        raise ConfigError(f"--database {bad[0]!r} names no single database",
                          "give one name per --database (repeat the option for more)")
    if [n.lower() for n in chosen] != ["all"]:
        existing = Source(settings).list_databases()
        missing = [n for n in chosen if n not in existing]
        if missing:
            raise ConfigError(f"database {', '.join(missing)} does not exist on the server (or accepts no connection)",
                              f"the server has: {', '.join(existing)}")
    return settings.model_copy(update={"postgres_db": ",".join(chosen),
                                       "globals_enabled": bool(settings.globals_enabled)})


def _estimator(settings: Settings) -> Callable[[str], int | None]:
    """The expected dump size of a database for the progress bar: pg_database_size, an estimate
    (the dump holds no index and no dead rows, so it is usually smaller); None when unknown."""
    from sentinel_backup.logical.scratch import quote_literal
    from sentinel_backup.pg.source import Source
    sources: list[Source] = []  # made at the first estimate: nothing here may fail before the run starts

    def estimate(database: str) -> int | None:
        try:
            sources[:] = sources or [Source(settings)]
            found = sources[0].query_json(f"SELECT to_json(pg_database_size({quote_literal(database)}))")
        except Exception:  # only a display: a failure here must never touch the backup
            return None
        return found if isinstance(found, int) else None

    return estimate
