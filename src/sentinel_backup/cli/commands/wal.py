"""The WAL archive commands: wal-push, wal-fetch (PostgreSQL calls them), wal-ship, wal-receive.

``wal-push`` and ``wal-fetch`` normally start through the lean parser in ``wal.fastpath``
(``cli.main`` hands them over before Typer loads); these definitions give them their help
text and serve the unusual invocations, through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sentinel_backup.cli.app import command, emit, state

SystemId = Annotated[str | None, typer.Option(
    "--system-id", help="The cluster's system identifier (default: from the WAL file, or global/pg_control of the"
                        " data directory the command runs in).")]


def _globals(ctx: typer.Context) -> list[str]:
    root = state(ctx)
    return [*(["--env-file", str(root.env_file)] if root.env_file else []), *(["--quiet"] if root.quiet else [])]


@command("wal-push")
def wal_push(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The WAL file (%p of archive_command).")],
    system_id: SystemId = None,
) -> int:
    """Archive one WAL file on every destination (archive_command = '... wal-push %p').

    Exit 0 only when every enabled destination holds a durable copy (with WAL_PUSH_ASYNC: when the
    file is durable in WAL_SPOOL_DIR). The same content pushed again succeeds without writing;
    different content under an archived name fails.
    """
    from sentinel_backup.wal import fastpath

    return fastpath.main(["wal-push", str(path), *(["--system-id", system_id] if system_id else []), *_globals(ctx)])


@command("wal-fetch")
def wal_fetch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The WAL file name (%f of restore_command).")],
    dest: Annotated[Path, typer.Argument(help="Where to write it (%p of restore_command).")],
    system_id: SystemId = None,
    source: Annotated[str | None, typer.Option("--from", help="Read from this destination only.")] = None,
) -> int:
    """Restore one WAL file from the archive (restore_command = '... wal-fetch %f %p').

    Exit 0: DEST written and checked; 1: not in the archive (the end of recovery); 200: any other
    failure (wrong key, damaged copy, unreachable store), which stops recovery.
    """
    from sentinel_backup.wal import fastpath

    return fastpath.main(["wal-fetch", name, str(dest), *(["--system-id", system_id] if system_id else []),
                          *(["--from", source] if source else []), *_globals(ctx)])


@command("wal-ship")
def wal_ship(
    ctx: typer.Context,
    wait: Annotated[bool, typer.Option("--wait/--once", help="Keep running and ship new files as they arrive"
                                                              " (default: ship what is spooled, then exit).")] = False,
) -> int:
    """Ship the WAL spooled by asynchronous wal-push (WAL_PUSH_ASYNC) to every destination.

    wal-push starts a shipper by itself; run this to drain the spool by hand or as a service.
    """
    from sentinel_backup.wal.spool import Shipper

    settings = state(ctx).settings()
    shipped = Shipper(settings).run(wait=wait)
    emit(f"shipped {shipped} WAL file(s)")
    return 0


@command("wal-receive")
def wal_receive(ctx: typer.Context) -> int:
    """Stream WAL from the server with pg_receivewal into the archive (a replication slot keeps it).

    Runs in the foreground until SIGTERM/SIGINT; each completed segment is pushed like wal-push.
    """
    from sentinel_backup.wal.receive import Receiver

    settings = state(ctx).settings()
    return Receiver(settings).run()
