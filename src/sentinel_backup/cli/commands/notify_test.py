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
    # one line per WEBHOOK_URL item, numbered: two URLs on one host look alike once their token is hidden
    for number, r in enumerate(results, 1):
        emit(f"{'OK  ' if r.ok else 'FAIL'} #{number} {r.format:<8} {r.url} status={r.status or '-'} "
             f"attempts={r.attempts}" + (f" error={r.error}" if r.error else ""))
    failed = [f"#{n}" for n, r in enumerate(results, 1) if not r.ok]
    emit(f"{len(results) - len(failed)} of {len(results)} webhook URL(s) accepted the test notification"
         + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_FAILURE if failed else 0
