"""`sentinel-backup list`: backups on every destination, newest first."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sentinel_backup.cli.app import app, emit, state


@app.command("list")
def list_backups(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    destination: Annotated[str | None, typer.Option("--destination", help="Only this destination.")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Only this database.")] = None,
) -> int:
    """List backups (those with a manifest, and legacy files of the shell version), newest first."""
    from sentinel_backup.logical.drill import newest_record
    from sentinel_backup.model.catalog import legacy_database, scan
    from sentinel_backup.notify import human_size
    from sentinel_backup.storage.registry import build_destinations
    settings = state(ctx).settings(machine_output=as_json)
    destinations = [d for d in build_destinations(settings) if destination in (None, d.name)]
    catalog = scan(destinations, legacy=True, legacy_db=legacy_database(settings))
    entries = [e for e in catalog.entries if database in (None, e.manifest.database)]
    drills = {e.id: None if e.legacy else newest_record(e, destinations) for e in entries}
    if as_json:
        emit(json.dumps([e.to_json(drills[e.id]) for e in entries], indent=2))
        return 0
    if not entries:
        emit("No backups found.")
        return 0
    emit(f"{'ID':<48} {'CREATED (UTC)':<20} {'SIZE':>10} {'RAW':>10} {'ENC':<12} {'DRILL':<7} DESTINATIONS")
    for e in entries:
        m = e.manifest
        enc = m.encryption.method if m.encryption else "-"
        drill = drills[e.id]
        drilled = "-" if drill is None else "passed" if drill.get("passed") else "FAILED"
        size, raw = human_size(m.size_bytes), "-" if e.legacy else human_size(m.raw_size_bytes)
        emit(f"{m.id:<48} {m.created_at:%Y-%m-%d %H:%M:%S}  {size:>10} {raw:>10}"
             f" {enc:<12} {drilled:<7} {','.join(sorted(e.locations))}" + ("  LEGACY" if e.legacy else ""))
    if any(e.legacy for e in entries):
        emit("LEGACY: a file of the shell version, without manifest (time from its name). "
             "`verify NAME` checks it, `restore NAME` restores it; `latest` never picks one.")
    return 0
