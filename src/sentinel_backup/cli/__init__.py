"""The command line: one module per command, each a thin flow (parse -> core -> render).

``main`` is the one place that turns exceptions into messages and exit codes: a user
error shows its message and hint, never a traceback (unless LOG_LEVEL=DEBUG).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import typer

from sentinel_backup.cli import commands  # noqa: F401 - registers the commands
from sentinel_backup.cli.app import app
from sentinel_backup.errors import EXIT_FAILURE, EXIT_USAGE, SentinelError


def _debug() -> bool:
    return os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG" or logging.getLogger(
        "sentinel_backup").isEnabledFor(logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    try:
        result = app(args=argv, prog_name="sentinel-backup", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except SentinelError as exc:
        if _debug():
            traceback.print_exc()
        print(f"ERROR: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"HINT: {exc.hint}", file=sys.stderr)
        return exc.exit_code
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
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:
        if _debug():
            traceback.print_exc()
        print(f"ERROR: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("HINT: run again with LOG_LEVEL=DEBUG for the traceback, and report it", file=sys.stderr)
        return EXIT_FAILURE


__all__ = ["app", "main", "typer"]
