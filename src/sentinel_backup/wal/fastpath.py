"""The lean start of ``wal-push`` and ``wal-fetch``: no Typer, no rich, no other commands.

PostgreSQL starts ``archive_command`` once per WAL segment and ``restore_command`` once per
file it replays, so start-up time is archiving throughput. ``cli.main`` hands these two
commands here when the arguments are plain (``--help`` goes through Typer). The options are
the same as the Typer commands in ``cli/commands/wal.py``, which document them.

For wal-fetch a usage error must not look like "not in the archive" (exit 1) nor like a
configuration error (exit 2, which PostgreSQL also reads as "absent"): it exits with
``EXIT_FATAL`` so recovery stops, as every failure of wal-fetch other than absence does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup.errors import EXIT_FAILURE, ConfigError, SentinelError

if TYPE_CHECKING:
    from sentinel_backup.config import Settings

COMMANDS = ("wal-push", "wal-fetch")
_GLOBAL_FLAGS = ("-q", "--quiet", "--no-progress")
_VALUE_OPTIONS = ("--env-file", "--system-id", "--from")
_EXIT_FATAL = 200  # = wal.fetch.EXIT_FATAL, without importing the fetch code for wal-push


@dataclass
class Args:
    command: str = ""
    positional: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    quiet: bool = False


def handles(argv: list[str]) -> bool:
    """True for ``[globals] wal-push|wal-fetch ...`` without --help."""
    if any(a in ("-h", "--help", "--version", "-V") for a in argv):
        return False
    try:
        return parse(argv).command in COMMANDS
    except ConfigError:
        return any(a in COMMANDS for a in argv)  # a usage error of ours is reported here, not by Typer


def parse(argv: list[str]) -> Args:
    args = Args()
    items = iter(argv)
    for item in items:
        name, eq, value = item.partition("=")
        if item in _GLOBAL_FLAGS:
            args.quiet = args.quiet or item != "--no-progress"
        elif name in _VALUE_OPTIONS:
            if not eq:
                value = next(items, "")
            if not value:
                raise ConfigError(f"{name} needs a value", f"e.g. {name} VALUE")
            args.options[name] = value
        elif item.startswith("-") and item != "-":
            raise ConfigError(f"unknown option {item!r}", "run `sentinel-backup wal-push --help`")
        elif not args.command:
            args.command = item
        else:
            args.positional.append(item)
    return args


def main(argv: list[str]) -> int:
    from sentinel_backup.cli import report

    fetching = "wal-fetch" in argv
    try:
        args = parse(argv)
        if args.command == "wal-push":
            if len(args.positional) != 1 or "--from" in args.options:
                raise ConfigError("usage: wal-push PATH [--system-id ID]",
                                  "archive_command = 'sentinel-backup --env-file /etc/sentinel/.env wal-push %p'")
            return _push(args)
        if len(args.positional) != 2:
            raise ConfigError("usage: wal-fetch NAME DEST [--system-id ID] [--from DESTINATION]",
                              "restore_command = 'sentinel-backup --env-file /etc/sentinel/.env wal-fetch %f %p'")
        return _fetch(args)
    except SentinelError as exc:
        code = report(exc)
        if fetching:
            from sentinel_backup.wal.fetch import NotInArchive

            return code if isinstance(exc, NotInArchive) else _EXIT_FATAL
        return code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:
        import traceback

        from sentinel_backup.cli import _debug

        if _debug():
            traceback.print_exc()
        print(f"ERROR: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("HINT: run again with LOG_LEVEL=DEBUG for the traceback, and report it", file=sys.stderr)
        return _EXIT_FATAL if fetching else EXIT_FAILURE


def _settings(args: Args) -> Settings:
    from sentinel_backup import log
    from sentinel_backup.config import load_settings

    env_file = args.options.get("--env-file")
    settings = load_settings(Path(env_file) if env_file else None)
    # stdout and stderr of archive/restore commands go to the server log: log to stderr, one line each
    log.setup(settings.log_level, settings.log_format, settings.log_file, to_stderr=True, quiet=args.quiet)
    return settings


_TRUE = ("1", "true", "t", "yes", "y", "on")  # what the schema reads as true


def _spool_without_schema(args: Args) -> Path | None:
    """WAL_SPOOL_DIR when WAL_PUSH_ASYNC is on, read from the environment and the .env file
    without the settings schema (pydantic is most of a call's CPU time), with logging set up;
    None when asynchronous mode is off or anything looks wrong (the full load then validates
    everything and reports it). The shipper loads the full settings: a mistake elsewhere
    (S3, keys) shows in its log and in `check`, while the segment waits durably in the spool."""
    import os

    from dotenv import dotenv_values

    from sentinel_backup import log
    from sentinel_backup.choices import LogFormat, LogLevel

    given = args.options.get("--env-file")
    env_path = Path(given) if given else Path(os.environ.get("SENTINEL_ENV_FILE", ".env"))
    values = {k: v for k, v in dotenv_values(env_path).items() if v and v.strip()} if env_path.is_file() else {}
    if given and not env_path.is_file():
        return None
    values.update({k: v for k, v in os.environ.items() if v.strip()})  # the environment wins, empty is unset
    spool = (values.get("WAL_SPOOL_DIR") or "").strip()
    if (values.get("WAL_PUSH_ASYNC") or "").strip().lower() not in _TRUE or not spool:
        return None
    try:
        level = (values.get("LOG_LEVEL") or "INFO").strip().upper()
        log_file = (values.get("LOG_FILE") or "").strip()
        log.setup(LogLevel("WARN" if level == "WARNING" else level),
                  LogFormat((values.get("LOG_FORMAT") or "text").strip().lower()),
                  Path(log_file) if log_file else None, to_stderr=True, quiet=args.quiet)
    except (ValueError, SentinelError):
        return None
    return Path(spool)


def _push(args: Args) -> int:
    path = Path(args.positional[0])
    system_id = args.options.get("--system-id")
    spool = _spool_without_schema(args)
    if spool is not None:
        from sentinel_backup.wal.spool import spool_push

        spool_push(spool, path, system_id=system_id, env_file=args.options.get("--env-file"))
        return 0
    settings = _settings(args)
    if settings.wal_push_async and settings.wal_spool_dir is not None:  # a spelling the light read missed
        from sentinel_backup.wal.spool import spool_push

        spool_push(settings.wal_spool_dir, path, system_id=system_id, env_file=args.options.get("--env-file"))
        return 0
    from sentinel_backup.wal.push import push_file

    push_file(settings, path, system_id=system_id)
    return 0


def _fetch(args: Args) -> int:
    from sentinel_backup.wal.fetch import FetchFailed, fetch_command

    try:
        settings = _settings(args)
    except SentinelError as exc:
        raise FetchFailed(exc.message, exc.hint) from None
    name, dest = args.positional
    fetch_command(settings, name, Path(dest), system_id=args.options.get("--system-id"),
                  source=args.options.get("--from"))
    return 0
