"""`sentinel-backup notify-test`: send a test message to every webhook."""

from __future__ import annotations

import typer

from sentinel_backup.cli.app import command, emit, state
from sentinel_backup.errors import EXIT_FAILURE


@command("notify-test")
def notify_test(ctx: typer.Context) -> int:
    """Send a test notification; exit non-zero unless every URL accepted it."""
    from sentinel_backup.notify import Notifier
    settings = state(ctx).settings()
    results = Notifier.from_settings(settings).send_test()
    if not results:
        emit("No webhook URL is configured (WEBHOOK_URL).")
        return EXIT_FAILURE
    for r in results:
        emit(f"{'OK  ' if r.ok else 'FAIL'} {r.format:<8} {r.url} status={r.status} attempts={r.attempts}"
             + (f" error={r.error}" if r.error else ""))
    return 0 if all(r.ok for r in results) else EXIT_FAILURE
