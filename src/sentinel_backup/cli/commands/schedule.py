"""`sentinel-backup schedule`: run backup, prune and drills on cron expressions, in the foreground.

With ``--env-dir DIR`` one scheduler runs the jobs of every server in DIR (one ``NAME.env`` each),
one job at a time, each under its own server's settings and BACKUP_DIR run lock, with job names
``NAME backup`` / ``NAME prune`` / ``NAME drill``. Every file is read when the scheduler starts: a
broken one stops the start with its name, rather than a server silently never backed up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sentinel_backup import log
from sentinel_backup.cli.app import command, state
from sentinel_backup.errors import ConfigError, SentinelError

if TYPE_CHECKING:
    from sentinel_backup.config import Settings
    from sentinel_backup.schedule import Job

logger = log.get("schedule")


@command()
def schedule(ctx: typer.Context) -> int:
    """Run jobs on BACKUP_SCHEDULE / PRUNE_SCHEDULE / DRILL_SCHEDULE until SIGTERM (and wal-receive
    beside them with WAL_RECEIVE_ENABLED=true); with --env-dir, the jobs of every server in it."""
    from sentinel_backup.schedule import Scheduler
    root = state(ctx)
    servers = _servers(ctx)
    first = servers[0][1]
    zones = {s.schedule_timezone for _, s, _ in servers}
    if len(zones) > 1:
        raise ConfigError(f"the servers' SCHEDULE_TIMEZONE differ ({', '.join(sorted(map(str, zones)))}):"
                          " one scheduler runs on one clock",
                          "set the same SCHEDULE_TIMEZONE in every file, or run one scheduler per server")
    if root.servers_folder is not None:  # the scheduler's own lines belong to no one server
        log.setup(first.log_level, first.log_format, first.log_file, quiet=root.quiet)
    jobs: list[Job] = []
    for name, settings, env_file in servers:
        relog = _relogger(root.quiet, settings) if name is not None else None  # --env-dir: each its own log set-up
        jobs.extend(_jobs(name, settings, env_file, relog))
    scheduler = Scheduler(jobs, lock_folder=first.backup_dir, timezone=first.schedule_timezone)
    receivers = []
    for _, settings, _ in servers:
        if settings.wal_receive_enabled:  # streams WAL into the archive beside the jobs, stopped with them
            from sentinel_backup.wal.receive import run_beside

            receivers.append(run_beside(settings, scheduler.stop_event))
    code = scheduler.run_forever()  # it logs each job's next run
    scheduler.stop_event.set()
    for receiver in receivers:
        receiver.join()
    return code


def _servers(ctx: typer.Context) -> list[tuple[str | None, Settings, Path | None]]:
    """(server name with --env-dir, its settings, its env file): one entry without --env-dir."""
    root = state(ctx)
    if root.servers_folder is None:
        return [(None, root.settings(), root.env_file)]
    from sentinel_backup.cli.servers import servers

    found: list[tuple[str | None, Settings, Path | None]] = []
    for server in servers(root.servers_folder):
        root.use(server.file, server.name)
        try:
            found.append((server.name, root.settings(), server.file))
        except SentinelError as exc:
            raise type(exc)(f"server {server.name} ({server.file}): {exc.message}", exc.hint) from None
    return found


def _relogger(quiet: bool, settings: Settings) -> Callable[[], None]:
    """Log set-up for one server's job (its LOG_LEVEL, LOG_FILE and server=NAME on every line)."""
    def relog() -> None:
        log.setup(settings.log_level, settings.log_format, settings.log_file, quiet=quiet,
                  server=settings.server_name)
    return relog


def _jobs(name: str | None, settings: Settings, env_file: Path | None,
          relog: Callable[[], None] | None) -> list[Job]:
    from sentinel_backup.jobs.backup import backup_job, drill_job, prune_job
    from sentinel_backup.notify import Notifier
    from sentinel_backup.schedule import Job

    def setup() -> None:
        if relog is not None:
            relog()

    def backup(stop: threading.Event) -> int:
        setup()
        return backup_job(settings, stop=stop).code

    def prune(stop: threading.Event) -> object:
        setup()
        return prune_job(settings, notifier=Notifier.from_settings(settings))

    def drill(stop: threading.Event) -> object:
        setup()
        return drill_job(settings, env_file=env_file)

    prefix = f"{name} " if name else ""
    lock = settings.backup_dir
    jobs = [Job(f"{prefix}backup", settings.backup_schedule, backup, "BACKUP_SCHEDULE", lock)]
    if settings.prune_schedule:
        jobs.append(Job(f"{prefix}prune", settings.prune_schedule, prune, "PRUNE_SCHEDULE", lock))
    if settings.drill_schedule:
        jobs.append(Job(f"{prefix}drill", settings.drill_schedule, drill, "DRILL_SCHEDULE", lock))
    return jobs
