"""`sentinel-backup list`: backups on every destination, newest first."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sentinel_backup.cli.app import command, emit, print_table, state

if TYPE_CHECKING:
    from sentinel_backup.model.catalog import Entry


@command("list")
def list_backups(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    destination: Annotated[str | None, typer.Option("--destination", help="Only this destination.")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Only this database.")] = None,
    server: Annotated[str | None, typer.Option(
        "--server", help="The backups of this SERVER_NAME (default: this server's own), `all` for every server's,"
        " `-` for those written without SERVER_NAME.")] = None,
) -> int:
    """List backups (those with a manifest, and legacy files of the shell version), newest first."""
    from sentinel_backup.logical.drill import newest_record
    from sentinel_backup.model.catalog import legacy_database, scan
    from sentinel_backup.storage.registry import build_destinations, destination_by_name
    settings = state(ctx).settings(machine_output=as_json)
    # a named destination needs its settings, not its *_ENABLED flag; an unknown name is exit 2
    destinations = build_destinations(settings) if destination is None else [destination_by_name(settings, destination)]
    wanted = server_option(server, settings.server_name)
    catalog = scan(destinations, legacy=True, legacy_db=legacy_database(settings), server=wanted)
    entries = [e for e in catalog.entries if database in (None, e.manifest.database)]
    drills = {e.id: None if e.legacy else newest_record(e, destinations) for e in entries}
    if as_json:
        emit(json.dumps([e.to_json(drills[e.id]) for e in entries], indent=2))
        return 0
    if not entries:
        others = sorted({e.server or "-" for e in catalog.others})
        emit("No backups found." + (f" Other servers have backups here: {', '.join(others)} (list --server NAME,"
                                    " or --server all)." if others else ""))
        return 0
    _table(entries, drills, servers=wanted is None)
    if any(e.legacy for e in entries):
        emit("LEGACY: a file of the shell version, without manifest (time from its name). "
             "`verify NAME` checks it, `restore NAME` restores it; `latest` never picks one.")
    if any(e.pin is not None for e in entries):
        emit("PINNED: retention never removes it (`sentinel-backup unpin ID` to release it).")
    return 0


def server_option(option: str | None, own: str) -> str | None:
    """The server an option names (`all`: None, every server; `-`: "", the unnamed one)."""
    from sentinel_backup.errors import ConfigError
    from sentinel_backup.model.layout import check_server
    if option is None:
        return own
    if option.strip().lower() == "all":
        return None
    if option.strip() == "-":
        return ""
    try:
        return check_server(option.strip())
    except ValueError:
        raise ConfigError(f"--server {option!r} is not a server name", "give a SERVER_NAME as shown by"
                          " `sentinel-backup list --server all`, `all`, or `-` for backups without one") from None


def _table(entries: list[Entry], drills: dict[str, dict[str, Any] | None], *, servers: bool = False) -> None:
    from sentinel_backup.notify import human_size

    def row(e: Entry) -> list[str]:
        m, drill = e.manifest, drills[e.id]
        return [m.id, f"{m.created_at:%Y-%m-%d %H:%M:%S}", human_size(m.size_bytes),
                "-" if e.legacy else human_size(m.raw_size_bytes), m.encryption.method if m.encryption else "-",
                "-" if drill is None else "passed" if drill.get("passed") else "FAILED",
                ",".join(sorted(e.locations)), "LEGACY" if e.legacy else _kind(e)]

    def marked(e: Entry) -> list[str]:
        cells = row(e)
        cells[-1] = " ".join(x for x in ("PINNED" if e.pin is not None else "", cells[-1]) if x)
        return cells

    header = ("ID", "CREATED (UTC)", "SIZE", "RAW", "ENC", "DRILL", "DESTINATIONS", "")
    if servers:  # every server's backups: which one each is of ("-": written without SERVER_NAME)
        print_table(("SERVER", *header), ([e.server or "-", *marked(e)] for e in entries), right=("SIZE", "RAW"))
        return
    print_table(header, map(marked, entries), right=("SIZE", "RAW"))


def _kind(e: Entry) -> str:
    """Physical backups: their WAL range (start..stop LSN) and timeline."""
    f = e.manifest.physical
    if f is None:
        return ""
    chain = f", incremental {f.chain_position} of {f.chain_root_id}" if f.parent_id else ""
    return f"physical {f.start_lsn}..{f.stop_lsn} tli {f.timeline}{chain}"
