"""The command line: one module per command, each a thin flow (parse -> core -> render).

``main`` is the one place that turns exceptions into messages and exit codes: a user
error shows its message and hint, never a traceback (unless LOG_LEVEL=DEBUG).

``wal-push`` and ``wal-fetch`` run once per WAL segment from PostgreSQL, so ``main`` hands
them to a lean parser (``wal.fastpath``) before Typer and the other commands are imported;
``--help`` and anything unusual still go through Typer.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

from sentinel_backup.errors import EXIT_FAILURE, EXIT_USAGE, SentinelError


def _debug() -> bool:
    return os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG" or logging.getLogger(
        "sentinel_backup").isEnabledFor(logging.DEBUG)


def report(exc: SentinelError) -> int:
    """A user error as its message and hint (traceback only with DEBUG); its exit code."""
    if _debug():
        traceback.print_exc()
    print(f"ERROR: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"HINT: {exc.hint}", file=sys.stderr)
    return exc.exit_code


def exit_code_for(exc: BaseException) -> int:
    """The one mapping of a failure to its output (stderr) and exit code: a user error as its
    message and hint, an interruption as 130, anything else as an internal error (exit 1).
    ``main`` and the lean WAL path (``wal.fastpath``) both end here."""
    if isinstance(exc, SentinelError):
        return report(exc)
    if isinstance(exc, KeyboardInterrupt):
        print("Interrupted.", file=sys.stderr)
        return 130
    if _debug():
        traceback.print_exception(exc)
    print(f"ERROR: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    print("HINT: run again with LOG_LEVEL=DEBUG for the traceback, and report it", file=sys.stderr)
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    from sentinel_backup.wal import fastpath

    args = sys.argv[1:] if argv is None else argv
    if fastpath.handles(args):
        return fastpath.main(args)
    import typer

    from sentinel_backup.cli import commands  # noqa: F401 - registers the commands
    from sentinel_backup.cli.app import app

    try:
        result = app(args=args, prog_name="sentinel-backup", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"ERROR: {exc.message}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USAGE)) or EXIT_USAGE
    except (Exception, KeyboardInterrupt) as exc:  # SentinelError included
        return exit_code_for(exc)


def __getattr__(name: str) -> Any:
    """``app`` and ``typer`` stay importable from here, loaded on first use."""
    if name == "app":
        from sentinel_backup.cli import commands  # noqa: F401
        from sentinel_backup.cli.app import app

        return app
    if name == "typer":
        import typer

        return typer
    raise AttributeError(name)


__all__ = ["app", "exit_code_for", "main", "report", "typer"]
