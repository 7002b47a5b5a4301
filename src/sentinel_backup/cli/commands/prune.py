"""`sentinel-backup prune`: show or apply the retention plan on every destination."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from sentinel_backup.cli.app import command, emit, print_table, state
from sentinel_backup.errors import EXIT_FAILURE, ConfigError

if TYPE_CHECKING:
    from sentinel_backup.retention.plan import Decision


@command()
def prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan, delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plans as JSON.")] = False,
    server: Annotated[str | None, typer.Option(
        "--server", help="Apply this policy to another SERVER_NAME's backups (`-`: those written without one),"
        " e.g. a retired server's; default: this server's.")] = None,
) -> int:
    """Apply the retention policy (RETENTION_*) on every destination."""
    from sentinel_backup.jobs.backup import prune_job
    from sentinel_backup.lock import run_lock
    from sentinel_backup.notify import Notifier
    from sentinel_backup.storage.registry import build_destinations
    settings = state(ctx).settings(machine_output=as_json)
    if server is not None:
        from sentinel_backup.cli.commands.list_ import server_option
        chosen = server_option(server, settings.server_name)
        if chosen is None:
            raise ConfigError("prune --server takes one server, not `all`", "run it once per server")
        settings = settings.model_copy(update={"server_name": chosen})
    destinations = build_destinations(settings)
    with run_lock(settings.backup_dir):
        results = prune_job(settings, destinations, dry_run=dry_run, notifier=Notifier.from_settings(settings))
    if as_json:
        emit(json.dumps([{"destination": a.destination, "dry_run": dry_run, **p.to_dict(), "result": a.counts(),
                           "notes": a.notes}
                         for p, a in results], indent=2, default=str))
    else:
        for the_plan, applied in results:
            emit(f"{applied.destination}: policy {the_plan.policy.describe()}")
            print_table(("ACTION", "ID", "REASON"), ([("keep" if d.keep else "REMOVE"), d.backup.id, d.reason]
                                                     for d in the_plan.decisions), indent=2)
            for note in applied.notes:
                emit(f"  {note}")
            emit(f"  => {_summary(the_plan.decisions, applied.counts())}")
    return 0 if all(a.ok for _, a in results) else EXIT_FAILURE


def _summary(decisions: Sequence[Decision], counts: dict[str, int]) -> str:
    """``keep 5, would remove 2`` / ``keep 5, removed 2, locked 0, errors 0``: words, not a dict."""
    kept = sum(1 for d in decisions if d.keep)
    return ", ".join([f"keep {kept}", *(f"{name.replace('_', ' ')} {n}" for name, n in counts.items())])
