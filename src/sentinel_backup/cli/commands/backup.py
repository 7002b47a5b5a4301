"""`sentinel-backup backup`: one run over every configured database."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from ... import log
from ...jobs import backup_job
from ..app import app, progress_bar, state

logger = log.get("cli")


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT ask the run to stop; it removes its partial backup and exits."""

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.warning(f"Received signal {signum}: stopping after cleaning up")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


@app.command()
def backup(ctx: typer.Context) -> int:
    """Back up every database named by POSTGRES_DB to every enabled destination."""
    settings = state(ctx).settings()
    stop = threading.Event()
    install_stop_handlers(stop)
    with progress_bar("dumping") as progress:
        outcome = backup_job(settings, stop=stop, progress=progress)
    return outcome.code
