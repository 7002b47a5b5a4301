"""`sentinel-backup verify`: re-read stored copies and check them against the manifest."""

from __future__ import annotations

from typing import Annotated

import typer

from ... import log
from ...catalog import scan
from ...errors import EXIT_FAILURE, NotFound
from ...storage.registry import build_destinations
from ...verify import verify_copy
from ..app import app, emit, progress_bar, state

logger = log.get("cli")


@app.command()
def verify(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="A backup id from `list`, or `latest`.")] = "latest",
    database: Annotated[str | None, typer.Option("--database", help="With `latest`: of this database.")] = None,
    destination: Annotated[str | None, typer.Option("--destination", help="Only the copy on this destination.")]
    = None,
) -> int:
    """Check SHA-256, size and full decompression of a backup's copies."""
    settings = state(ctx).settings()
    destinations = build_destinations(settings)
    entry = scan(destinations).find(backup_id, database)
    targets = [d for d in destinations if d.name in entry.locations and destination in (None, d.name)]
    if not targets:
        raise NotFound(f"{entry.id} has no copy on {destination}", f"it is on: {', '.join(sorted(entry.locations))}")
    failed = 0
    for storage in targets:
        with progress_bar(f"verifying {storage.name}", entry.manifest.size_bytes) as progress:
            report = verify_copy(storage, entry.manifest, settings, progress=progress)
        for check in report.checks:
            emit(f"{storage.name}: {check.name:<12} {'ok' if check.ok else 'FAILED':<7} {check.detail}")
        if report.ok:
            logger.info(f"Verified {entry.id} on {storage.name}", extra=log.fields(backup=entry.id))
        else:
            failed += 1
            logger.error(f"Verification of {entry.id} on {storage.name} failed",
                         extra=log.fields(backup=entry.id, failed=",".join(c.name for c in report.failures)))
    return EXIT_FAILURE if failed else 0
