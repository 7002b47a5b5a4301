"""`sentinel-backup backup`: one run over every configured database."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from ... import log
from ...backup import BackupRun, RunResult
from ...errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL
from ...storage.local import LocalStorage
from ...storage.registry import build_destinations
from ..app import app, progress_bar, state

logger = log.get("cli")


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT ask the run to stop; it removes its partial backup and exits."""

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.warning(f"Received signal {signum}: stopping after cleaning up")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def exit_code(result: RunResult) -> int:
    if result.failed:
        return EXIT_FAILURE
    return EXIT_PARTIAL if result.partial else EXIT_OK


def summarize(result: RunResult) -> None:
    good = [o for o in result.outcomes if o.ok]
    raw = sum(o.manifest.raw_size_bytes for o in good if o.manifest)
    stored = sum(o.manifest.size_bytes for o in good if o.manifest)
    status = "failed" if result.failed else "partial" if result.partial else "ok"
    fields = log.fields(status=status, databases=len(result.outcomes), succeeded=len(good),
                        failed=len(result.failed), raw_bytes=raw, stored_bytes=stored,
                        duration_seconds=round(result.duration, 2))
    if result.failed:
        names = ", ".join(o.database for o in result.failed)
        logger.error(f"Backup process failed for {names}", extra=fields)
    else:
        logger.info("Backup process completed", extra=fields)


@app.command()
def backup(ctx: typer.Context) -> int:
    """Back up every database named by POSTGRES_DB to every enabled destination."""
    settings = state(ctx).settings()
    destinations = build_destinations(settings)
    for dest in destinations:
        if isinstance(dest, LocalStorage):
            dest.prepare()
    stop = threading.Event()
    install_stop_handlers(stop)
    with progress_bar("dumping") as progress:
        run = BackupRun(settings, destinations, progress=progress, stop=stop)
        result = run.run()
    summarize(result)
    return exit_code(result)
