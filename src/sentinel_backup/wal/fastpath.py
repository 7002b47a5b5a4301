"""The lean start of ``wal-push`` and ``wal-fetch``: no Typer, no rich, no other commands.

PostgreSQL starts ``archive_command`` once per WAL segment and ``restore_command`` once per
file it replays, so start-up time is archiving throughput. ``cli.main`` hands these two
commands here when the arguments are plain (``--help`` goes through Typer). The options are
the same as the Typer commands in ``cli/commands/wal.py``, which document them.

For wal-fetch a usage error must not look like "not in the archive" (exit 1) nor like a
configuration error (exit 2, which PostgreSQL also reads as "absent"): it exits with
``EXIT_FATAL`` so recovery stops, as every failure of wal-fetch other than absence does.

Settings come from the lean reader (``config_lean``: the schema's rules without pydantic), and
failures are mapped by ``cli.exit_code_for``, the same mapping ``cli.main`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup.errors import ConfigError, SentinelError

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
    from sentinel_backup.cli import exit_code_for

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
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code_for(exc)
        if fetching and isinstance(exc, Exception) and not _absent(exc):
            return _EXIT_FATAL  # recovery must stop: only "not in the archive" may look like absence
        return code


def _absent(exc: BaseException) -> bool:
    from sentinel_backup.wal.fetch import NotInArchive

    return isinstance(exc, NotInArchive)


def _settings(args: Args) -> Settings:
    """The settings through the lean reader (no pydantic: config_lean), logging set up from them."""
    from sentinel_backup import log
    from sentinel_backup.config_lean import load_lean

    env_file = args.options.get("--env-file")
    settings = load_lean(Path(env_file) if env_file else None)
    # stdout and stderr of archive/restore commands go to the server log: log to stderr, one line each
    log.setup(settings.log_level, settings.log_format, settings.log_file, to_stderr=True, quiet=args.quiet)
    return settings


def _push(args: Args) -> int:
    path = Path(args.positional[0])
    system_id = args.options.get("--system-id")
    settings = _settings(args)
    if settings.wal_push_async and settings.wal_spool_dir is not None:
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
