"""`sentinel-backup schedule`: run backup, prune and drills on cron expressions, in the foreground."""

from __future__ import annotations

import threading

import typer

from sentinel_backup import log
from sentinel_backup.cli.app import command, state

logger = log.get("schedule")


@command()
def schedule(ctx: typer.Context) -> int:
    """Run jobs on BACKUP_SCHEDULE / PRUNE_SCHEDULE / DRILL_SCHEDULE until SIGTERM (and wal-receive
    beside them with WAL_RECEIVE_ENABLED=true)."""
    from sentinel_backup.jobs.backup import backup_job, drill_job, prune_job
    from sentinel_backup.notify import Notifier
    from sentinel_backup.schedule import Job, Scheduler
    settings = state(ctx).settings()

    def backup(stop: threading.Event) -> int:
        return backup_job(settings, stop=stop).code

    def prune(stop: threading.Event) -> object:
        return prune_job(settings, notifier=Notifier.from_settings(settings))

    def drill(stop: threading.Event) -> object:
        return drill_job(settings, env_file=state(ctx).env_file)

    jobs = [Job("backup", settings.backup_schedule, backup, "BACKUP_SCHEDULE")]
    if settings.prune_schedule:
        jobs.append(Job("prune", settings.prune_schedule, prune, "PRUNE_SCHEDULE"))
    if settings.drill_schedule:
        jobs.append(Job("drill", settings.drill_schedule, drill, "DRILL_SCHEDULE"))
    scheduler = Scheduler(jobs, lock_folder=settings.backup_dir, timezone=settings.schedule_timezone)
    receiver = None
    if settings.wal_receive_enabled:  # streams WAL into the archive beside the jobs, stopped with them
        from sentinel_backup.wal.receive import run_beside

        receiver = run_beside(settings, scheduler.stop_event)
    code = scheduler.run_forever()  # it logs each job's next run
    if receiver is not None:
        scheduler.stop_event.set()
        receiver.join()
    return code
