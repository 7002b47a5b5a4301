"""`sentinel-backup drill`: restore drills of this server's newest backups, what DRILL_SCHEDULE runs."""

from __future__ import annotations

import typer

from sentinel_backup.cli.app import command, emit, state
from sentinel_backup.errors import EXIT_FAILURE


@command()
def drill(ctx: typer.Context) -> int:
    """Drill the newest backup of every database (and the newest physical backup): restore it into a
    scratch database (server) and compare it with its manifest. Exit 1 when any drill failed.

    With --env-dir, every server's in turn (`verify ID --restore` drills one chosen backup)."""
    from sentinel_backup.interrupt import Stopper, signal_stop
    from sentinel_backup.jobs.drill import drill_job
    settings = state(ctx).settings()
    with signal_stop(Stopper(), "the drill run") as stopper:
        reports = drill_job(settings, stop=stopper, env_file=state(ctx).env_file)
    if not reports:
        emit("No backup to drill.")
    for report in reports:
        emit(f"Drill of {report.backup_id} from {report.destination}: {'PASSED' if report.passed else 'FAILED'}"
             f" ({report.tables_checked} table(s) checked"
             + (f", restore {report.restore_seconds} s" if report.restore_seconds is not None else "") + ")"
             + (f": {report.error}" if report.error else "")
             + (f": {len(report.differences)} table(s) differ" if report.differences else ""))
    return EXIT_FAILURE if any(not r.passed for r in reports) else 0
