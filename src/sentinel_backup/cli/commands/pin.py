"""`sentinel-backup pin ID [--note TEXT]` and `unpin ID`: keep a backup whatever retention says.

The pin is a sidecar ``<artifact>.pin.json`` written beside the backup on every destination
holding a copy (see ``model.pin``); ``unpin`` deletes it from all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sentinel_backup import log
from sentinel_backup.cli.app import command, emit, state
from sentinel_backup.errors import ConfigError, SentinelError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sentinel_backup.model.catalog import Entry
    from sentinel_backup.storage.base import Storage

logger = log.get("cli")
BackupId = Annotated[str, typer.Argument(help="A backup id from `list` (or its artifact name).")]


@command()
def pin(
    ctx: typer.Context,
    backup_id: BackupId,
    note: Annotated[str, typer.Option("--note", help="Why it is kept (shown by list, show and prune).")] = "",
) -> int:
    """Pin a backup: retention (prune) never removes it until `unpin`."""
    from sentinel_backup.model import pin as pins
    record = pins.Pin.new(note)
    entry, done = _each_copy(ctx, backup_id, lambda storage, e: pins.write(storage, e.manifest.artifact, record))
    emit(f"Pinned {entry.id} on {', '.join(done)}" + (f": {note}" if note else ""))
    return 0


@command()
def unpin(ctx: typer.Context, backup_id: BackupId) -> int:
    """Remove a backup's pin from every destination: retention applies to it again."""
    from sentinel_backup.model import pin as pins
    entry, done = _each_copy(ctx, backup_id, lambda storage, e: pins.remove(storage, e.manifest.artifact))
    emit(f"Unpinned {entry.id} on {', '.join(done)}" if entry.pin is not None else f"{entry.id} was not pinned")
    return 0


def _each_copy(ctx: typer.Context, backup_id: str, act: Callable[[Storage, Entry], None]) -> tuple[Entry, list[str]]:
    """Run ``act`` on every destination holding a copy of the backup; all are tried, a failure is
    reported after the others were done."""
    from sentinel_backup.model.catalog import legacy_database, scan
    from sentinel_backup.storage.registry import build_destinations
    settings = state(ctx).settings()
    destinations = build_destinations(settings)
    catalog = scan(destinations, legacy=True, legacy_db=legacy_database(settings),  # one destination: its error
                   server=settings.server_name)
    if backup_id == "latest":
        raise ConfigError("pin and unpin take a backup id, not `latest`", "run `sentinel-backup list` to see the ids")
    entry = catalog.find(backup_id)
    if entry.legacy:
        raise ConfigError(f"{entry.id} is a legacy file of the shell version and cannot be pinned",
                          "retention keeps legacy files unless RETENTION_DAYS is set; copy it aside to keep it")
    for name, why in catalog.errors.items():
        logger.warning(f"{name} could not be listed ({why}): the pin there is unchanged")
    done: list[str] = []
    failed: list[str] = []
    for storage in destinations:
        if storage.name not in entry.locations:
            continue
        try:
            act(storage, entry)
            done.append(storage.name)
        except SentinelError as exc:
            failed.append(f"{storage.name}: {exc.message}")
    if failed:
        raise StorageError(f"could not change the pin of {entry.id} on " + "; ".join(failed)
                           + (f" (done on {', '.join(done)})" if done else ""),
                           "fix the destination and run the command again: it is safe to repeat")
    return entry, done
