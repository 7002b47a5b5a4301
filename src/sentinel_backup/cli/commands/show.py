"""`sentinel-backup show ID|latest`: everything the manifest says about one backup.

Human form: what, when and from where; sizes and checksums; encryption; every copy and its
location; drill results per destination; for a physical backup its WAL position (LSNs,
timeline, WAL range) and the reachable time range; the tables with their row counts.
``--json``: the manifest itself, with the copies, drill records, the pin (``pinned``: note and
time, or null) and (physical) the reachable range beside it. The document is built by
:func:`document`, the text by :func:`render`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sentinel_backup.cli.app import command, emit, print_table, state

if TYPE_CHECKING:
    from sentinel_backup.model.catalog import Entry
    from sentinel_backup.model.manifest import PhysicalFacts
    from sentinel_backup.storage.base import Storage

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # as in `list` (UTC)


@command()
def show(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="A backup id from `list`, or `latest`.")] = "latest",
    database: Annotated[str | None, typer.Option("--database", help="With `latest`: of this database.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest and what is known beside it as JSON.")]
    = False,
) -> int:
    """Show everything known about one backup: sizes, checksums, tables, encryption, copies, drills."""
    from sentinel_backup.logical.drill import read_record
    from sentinel_backup.model.catalog import legacy_database, scan
    from sentinel_backup.storage.registry import build_destinations
    settings = state(ctx).settings(machine_output=as_json)
    destinations = build_destinations(settings)
    entry = scan(destinations, legacy=True, legacy_db=legacy_database(settings), server=settings.server_name).find(
        backup_id, database)
    by_name = {d.name: d for d in destinations}
    drills = {name: record for name in sorted(entry.drills) if name in by_name
              and (record := read_record(by_name[name], entry.locations[name])) is not None}
    wal = newest_wal(destinations, entry.manifest.physical.system_identifier) if entry.manifest.physical else None
    doc = document(entry, drills, {name: _where(by_name[name], key) for name, key in entry.locations.items()
                                   if name in by_name}, newest_wal=wal)
    if as_json:
        emit(json.dumps(doc, indent=2, default=str))
    else:
        render(doc)
    return 0


def _where(storage: Storage, key: str) -> str:
    """A copy's location as a user reaches it: a path for the local folder, else the store's URL."""
    from sentinel_backup.storage.local import LocalStorage
    if isinstance(storage, LocalStorage):
        return str(storage.folder / key)
    bucket, full_key = getattr(storage, "bucket", None), getattr(storage, "full_key", None)
    if bucket is not None and callable(full_key):
        return f"s3://{bucket}/{full_key(key)}"
    return f"{storage.describe()}: {key}"


def document(entry: Entry, drills: dict[str, dict[str, Any]], where: dict[str, str], *,
             newest_wal: tuple[int, str] | None = None) -> dict[str, Any]:
    """The manifest as JSON, with ``locations`` (destination -> location), ``drills``
    (destination -> drill record) and ``legacy``; for a physical backup ``reachable``
    (``newest_wal``: the newest archived WAL segment of its cluster, (timeline, name))."""
    m = entry.manifest
    doc: dict[str, Any] = m.model_dump(mode="json")
    doc["locations"] = {name: where.get(name, key) for name, key in sorted(entry.locations.items())}
    doc["drills"] = drills
    doc["legacy"] = entry.legacy
    doc["pinned"] = entry.pin_json()
    doc["server"] = entry.server  # SERVER_NAME it was taken under ("": none)
    if m.physical is not None:
        doc["reachable"] = reachable(m.physical, newest_wal)
    return doc


def reachable(facts: PhysicalFacts, newest: tuple[int, str] | None = None) -> dict[str, Any]:
    """The time range a physical backup can recover to: from the end of the backup (the
    earliest consistent point) on, as far as the WAL archive of its cluster reaches (its
    newest segment when known; a gap in the archive ends the range earlier)."""
    to = (f"the end of WAL segment {newest[1]} (the newest archived, timeline {newest[0]})" if newest
          else "the newest WAL in the archive of system " + facts.system_identifier)
    return {"from": _iso(facts.stop_time) if facts.stop_time else None,
            "from_lsn": facts.stop_lsn, "timeline": facts.timeline, "to": to,
            "newest_wal": newest[1] if newest else None}


def newest_wal(destinations: list[Storage], system_id: str) -> tuple[int, str] | None:
    """(timeline, name) of the newest WAL segment archived for ``system_id`` on any destination."""
    from sentinel_backup.errors import SentinelError
    from sentinel_backup.model.layout import WAL_ROOT, handle_for, wal_timeline
    found: list[tuple[int, str]] = []
    for storage in destinations:
        try:
            for info in storage.list(f"{WAL_ROOT}/{system_id}/", deep=True):
                handle = handle_for(info.key)
                if handle is not None and handle.kind == "wal" and len(handle.name) == 24:
                    found.append((wal_timeline(handle.name), handle.name))
        except SentinelError:
            continue  # a destination that cannot be listed: the others may tell
    return max(found, default=None)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _when(value: Any) -> str:
    if not value:
        return "-"
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return f"{moment:{TIME_FORMAT}} UTC"


def _pinned(pin: dict[str, str] | None) -> str:
    """``yes, since <time>: <note>`` (retention never removes it), or ``no``."""
    if pin is None:
        return "no"
    since = f", since {_when(pin['pinned_at'])}" if pin.get("pinned_at") else ""
    return f"yes{since}" + (f": {pin['note']}" if pin.get("note") else "") + " (retention keeps it)"


def _size(n: int | None) -> str:
    from sentinel_backup.notify import human_size
    return "-" if n is None else f"{human_size(n)} ({n} bytes)"


def render(doc: dict[str, Any]) -> None:
    """The human form of :func:`document`: sections of two-column tables."""
    legacy = bool(doc["legacy"])
    source = doc.get("source") or {}
    where_from = ", ".join(f"{k} {v}" for k, v in source.items() if v) or "-"
    general = [("id", doc["id"]), ("kind", doc["kind"] + (" (legacy file of the shell version, no manifest)"
                                                          if legacy else "")),
               ("server name", doc.get("server") or "- (no SERVER_NAME)"),
               ("database", doc["database"]), ("created", _when(doc["created_at"])),
               ("finished", _when(doc["finished_at"])), ("duration", f"{doc['duration_seconds']} s"),
               ("format", doc["format"]), ("server", doc.get("server_version") or "-"),
               ("dump tool", doc.get("pg_dump_version") or "-"), ("source", where_from),
               ("host", doc.get("hostname") or "-"), ("written by", doc["tool_version"]),
               ("pinned", _pinned(doc.get("pinned")))]
    _section("Backup", general)
    compression = doc["compression"]
    encryption = doc.get("encryption")
    _section("Content", [
        ("stored size", _size(doc["size_bytes"])),
        ("raw size", "-" if legacy else _size(doc["raw_size_bytes"])),
        ("compression", compression["algorithm"] + (f" level {compression['level']}" if compression["level"] else "")),
        ("sha256 (stored)", doc["sha256"] or "- (unknown: no manifest)"),
        ("sha256 (raw dump)", doc["raw_sha256"] or "-"),
        ("encryption", encryption["method"] if encryption else "none"),
        *([("key id", encryption.get("key_id") or "-")] if encryption else []),
        ("snapshot", doc.get("snapshot") or "-"),
    ])
    emit("Copies")
    print_table(("DESTINATION", "LOCATION", "DRILL"),
                ([name, where, _drill_word(doc["drills"].get(name))] for name, where in doc["locations"].items()),
                indent=2)
    emit()
    for name, record in doc["drills"].items():
        _drill(name, record)
    if doc.get("physical"):
        _physical(doc["physical"], doc["reachable"])
    _tables(doc.get("tables"), doc.get("table_hashes"), legacy=legacy, kind=doc["kind"])


def _section(title: str, rows: list[tuple[str, str]]) -> None:
    emit(title)
    print_table(("FIELD", "VALUE"), rows, indent=2)
    emit()


def _drill_word(record: dict[str, Any] | None) -> str:
    if record is None:
        return "never"
    return f"{'passed' if record.get('passed') else 'FAILED'} {_when(record.get('started_at'))}"


def _drill(destination: str, record: dict[str, Any]) -> None:
    rows = [("result", "passed" if record.get("passed") else "FAILED"), ("started", _when(record.get("started_at"))),
            ("scratch database", str(record.get("scratch_database") or "-")),
            ("restore", f"{record.get('restore_seconds')} s" if record.get("restore_seconds") is not None else "-"),
            ("tables checked", str(record.get("tables_checked", "-")))]
    rows += [(f"differs: {table}", f"manifest {diff.get('manifest')}, restored {diff.get('restored')}")
             for table, diff in (record.get("differences") or {}).items() if isinstance(diff, dict)]
    rows += [(f"check {'ok' if c.get('ok') else 'FAILED'}", f"{c.get('sql')!r}: {c.get('detail')}")
             for c in record.get("checks") or [] if isinstance(c, dict)]
    if record.get("error"):
        rows.append(("error", str(record["error"])))
    _section(f"Drill on {destination}", rows)


def _physical(facts: dict[str, Any], reach: dict[str, Any]) -> None:
    rows = [("system identifier", facts["system_identifier"]), ("timeline", str(facts["timeline"])),
            ("start LSN", facts["start_lsn"]), ("stop LSN", facts["stop_lsn"]),
            ("WAL needed", f"{facts['start_wal']} .. {facts['stop_wal']}"
             + (" (inside the backup)" if facts.get("wal_included") else " (from the WAL archive)")),
            ("WAL segment size", _size(facts.get("wal_segment_size"))),
            ("started", _when(facts.get("start_time"))), ("consistent at", _when(facts.get("stop_time"))),
            ("reachable", f"from {_when(reach['from'])} (LSN {reach['from_lsn']}, timeline {reach['timeline']})"
             f" to {reach['to']}")]
    if facts.get("parent_id") or facts.get("chain_position"):
        rows.append(("incremental", f"position {facts.get('chain_position')} in the chain of "
                                    f"{facts.get('chain_root_id')}, parent {facts.get('parent_id')}"))
    if facts.get("backup_label"):
        rows.append(("label", facts["backup_label"]))
    if facts.get("pg_basebackup_version"):
        rows.append(("pg_basebackup", facts["pg_basebackup_version"]))
    for space in facts.get("tablespaces") or []:
        rows.append((f"tablespace {space.get('oid')}", f"{space.get('location')}"))
    _section("Physical", rows)


def _tables(tables: dict[str, int] | None, hashes: dict[str, str] | None, *, legacy: bool, kind: str) -> None:
    if tables is None:
        emit("Tables: " + ("not recorded (a legacy file of the shell version)" if legacy else
                           "none (roles and tablespaces)" if kind == "globals" else "not recorded"))
        return
    emit(f"Tables ({len(tables)}, row counts read in the dump's own snapshot)")
    header = ("TABLE", "ROWS", "CONTENT HASH") if hashes else ("TABLE", "ROWS")
    print_table(header, ([name, str(rows), *([hashes.get(name, "-")] if hashes else [])]
                         for name, rows in tables.items()), right=("ROWS",), indent=2)


__all__ = ["document", "reachable", "render", "show"]
