"""`sentinel-backup restore --physical`: a base backup into a new data directory (see physical.restore)."""

from __future__ import annotations

from pathlib import Path

import typer

from sentinel_backup import log
from sentinel_backup.cli.app import emit, state
from sentinel_backup.errors import ConfigError

logger = log.get("cli")


def restore_physical(ctx: typer.Context, backup_id: str, pgdata: Path | None, source: str | None, *,
                     target_time: str | None, target_lsn: str | None, target_name: str | None,
                     target_xid: str | None, target_action: str, start: int | None, keep_running: bool,
                     keep_archiving: bool, tablespace_dir: Path | None, tool_command: str | None) -> int:
    from sentinel_backup.logical.restore import pick_copy
    from sentinel_backup.model.catalog import scan
    from sentinel_backup.physical.restore import PhysicalRestore, Target, choose_base, parse_target_time
    from sentinel_backup.storage.registry import build_destinations
    if pgdata is None:
        raise ConfigError("--pgdata is required with --physical", "name a new, empty data directory: --pgdata DIR")
    settings = state(ctx).settings()
    target = Target(time=parse_target_time(target_time) if target_time else None, lsn=target_lsn,
                    name=target_name, xid=target_xid, action=target_action)
    destinations = build_destinations(settings)
    from sentinel_backup.physical.incremental import chain_for
    catalog = scan(destinations, server=settings.server_name)  # `latest`: this server's; an id: any server's
    entries = catalog.entries if backup_id == "latest" else [*catalog.entries, *catalog.others]
    entry = choose_base(entries, backup_id, target)
    chain = chain_for(entry, entries, destinations, source)  # an incremental: its whole chain, root first
    storage = pick_copy(entry, destinations, source)
    restorer = PhysicalRestore(settings, env_file=state(ctx).env_file, tool_command=tool_command,
                               keep_archiving=keep_archiving, tablespace_dir=tablespace_dir)
    result = restorer.run(entry, storage, pgdata, target, start_port=start, keep_running=keep_running, chain=chain)
    facts = entry.manifest.physical
    assert facts is not None
    emit(f"Restored base backup {entry.id} ({facts.start_lsn}..{facts.stop_lsn}, timeline {facts.timeline}) from "
         f"{storage.name} into {result.pgdata} in {result.seconds:.1f} s."
         + (f" Incremental: combined a chain of {len(chain)} ({', '.join(e.id for e, _ in chain)})."
            if len(chain) > 1 else ""))
    emit("Recovery settings in postgresql.auto.conf: " + "; ".join(f"{k} = {v}" for k, v in result.settings.items()))
    if "archive_mode" in result.settings:
        emit("archive_mode is off in the copy, so it cannot push WAL into the original's archive; "
             "use --keep-archiving for a real replacement of the original server.")
    if result.state is None:
        emit(f"Start it with: {result.start_command}")
    else:
        emit(f"Recovery ended ({result.state}) after {result.recovery_seconds or 0:.1f} s: reached LSN "
             f"{result.reached_lsn or '?'}, last transaction at {result.reached_time or 'none replayed'}.")
        emit(result.start_command if keep_running else f"The temporary server was stopped; start it with: "
             f"{result.start_command}")
    logger.info("Physical restore completed", extra=log.fields(backup=entry.id, pgdata=str(result.pgdata),
                                                               seconds=round(result.seconds, 3)))
    return 0
