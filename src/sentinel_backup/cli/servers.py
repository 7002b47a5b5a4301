"""``--env-dir DIR``: several servers from one configuration, one after another.

Every ``*.env`` file in DIR describes one server (as pgBackRest stanzas, Barman's
``barman.d/*.conf``); its SERVER_NAME is the one it sets, else the file's name without
``.env`` (``db1.env`` -> ``db1``). ``backup``, ``prune``, ``check``, ``list``, ``drill`` and
``verify latest`` run once per file, in name order; a server that fails (a broken file
included) does not stop the others; each server's output comes under its own heading (with
``--json``: one object, server -> result), and the exit code is the worst of them
(:func:`worst`). A stop request (SIGINT/SIGTERM, exit 130) ends the whole run. ``schedule``
loops over the servers itself (one scheduler, every server's jobs: cli/commands/schedule.py).
Every other command acts on one server and refuses ``--env-dir``: ``--env-file DIR/NAME.env``
names it.
"""

from __future__ import annotations

import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from dotenv import dotenv_values

from sentinel_backup.errors import EXIT_FAILURE, EXIT_INTERRUPTED, ConfigError, SentinelError

if TYPE_CHECKING:
    from sentinel_backup.cli.app import State

ENV_DIR_VARIABLE = "SENTINEL_ENV_DIR"
PER_SERVER = ("backup", "prune", "check", "list", "drill", "verify")
OWN_LOOP = ("schedule",)  # takes --env-dir and runs every server's jobs in one process itself
# exit codes from the best to the worst: ok, warning (check), partial, usage/configuration, failed
_RANK = {0: 0, 4: 1, 3: 2, 2: 3, EXIT_FAILURE: 4}


@dataclass(frozen=True)
class Server:
    name: str
    file: Path


def worst(codes: list[int]) -> int:
    """The exit code of the whole run: the worst of the servers' (an unknown code counts as a failure)."""
    return max(codes, key=lambda c: _RANK.get(c, _RANK[EXIT_FAILURE]), default=0)


def env_dir(option: Path | None, env_file: Path | None) -> Path | None:
    """The directory of env files: ``--env-dir``, else SENTINEL_ENV_DIR unless ``--env-file`` names one file."""
    if option is not None and env_file is not None:
        raise ConfigError("--env-dir and --env-file cannot be combined",
                          "give --env-dir DIR for every server in DIR, or --env-file FILE for one")
    if option is not None:
        return option
    value = os.environ.get(ENV_DIR_VARIABLE, "").strip()
    return Path(value) if value and env_file is None else None


def servers(folder: Path) -> list[Server]:
    """The servers of ``folder``: one per ``*.env`` file, by name. A missing folder, no file, or
    two files naming the same server (their backups would mix) are configuration errors."""
    if not folder.is_dir():
        raise ConfigError(f"--env-dir {folder} is not a directory", "give the folder holding one NAME.env per server")
    files = sorted(p for p in folder.glob("*.env") if p.is_file())
    if not files:
        raise ConfigError(f"--env-dir {folder} holds no *.env file", "put one NAME.env per server in it")
    found: list[Server] = []
    for file in files:
        try:
            own = (dotenv_values(file, encoding="utf-8").get("SERVER_NAME") or "").strip()
        except (OSError, UnicodeDecodeError):
            own = ""  # unreadable: that server fails on its own when its settings are loaded
        found.append(Server(own or file.stem, file))
    names: dict[str, Path] = {}
    for server in found:
        if server.name in names:
            raise ConfigError(f"{names[server.name].name} and {server.file.name} in {folder} are both server"
                              f" {server.name!r}: their backups would mix",
                              "give each file its own SERVER_NAME (or name the files apart)")
        names[server.name] = server.file
    return found


def run_each(command: str, func: Callable[..., Any], kwargs: dict[str, Any], root: State,
             folder: Path) -> int:
    """``func(**kwargs)`` once per server of ``folder`` (see the module docstring)."""
    if command not in PER_SERVER:
        raise ConfigError(f"{command} acts on one server and cannot run with --env-dir",
                          f"name the server's file instead: --env-file {folder}/NAME.env"
                          + (f" (or unset {ENV_DIR_VARIABLE})" if os.environ.get(ENV_DIR_VARIABLE) else ""))
    if command == "verify" and kwargs.get("backup_id", "latest") != "latest":
        raise ConfigError("with --env-dir, verify takes `latest` (each server's newest backup), not an id",
                          f"verify one backup with --env-file {folder}/NAME.env ID")
    if command == "check" and kwargs.get("nagios"):
        raise ConfigError("check --nagios gives one plugin line for one server, not for --env-dir",
                          f"define one service per server: check --nagios --env-file {folder}/NAME.env")
    machine = bool(kwargs.get("as_json"))
    results: dict[str, dict[str, Any]] = {}
    codes: dict[str, int] = {}
    for server in servers(folder):
        root.use(server.file, server.name)
        if machine:
            codes[server.name], result = _captured(func, kwargs)
            results[server.name] = {"file": str(server.file), "exit_code": codes[server.name], **result}
            continue
        if not root.quiet:
            print(f"=== server {server.name} ({server.file.name}) ===", flush=True)
        codes[server.name] = _one(func, kwargs, root)
        if not root.quiet:
            print(flush=True)
    code = worst(list(codes.values()))
    if machine:
        print(json.dumps(results, indent=2))
    elif code or not root.quiet:
        print(f"=== {len(codes)} server(s): " + ", ".join(f"{name} exit {c}" for name, c in codes.items()))
    return code


def _one(func: Callable[..., Any], kwargs: dict[str, Any], root: State) -> int:
    """One server's run: its exit code; its error told as the CLI tells it (a stop request ends everything)."""
    from sentinel_backup.cli import report
    from sentinel_backup.cli.app import run_command
    try:
        result = run_command(func, kwargs, root)
        return int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SentinelError as exc:
        if exc.exit_code == EXIT_INTERRUPTED:
            raise
        return report(exc)
    except Exception as exc:  # a bug in one server's run must not cost the others their backups
        if os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG":
            traceback.print_exc()
        print(f"ERROR: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _captured(func: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A ``--json`` run: (exit code, {"result": its document} or {"error": ..., "hint": ...})."""
    held = io.StringIO()
    try:
        with redirect_stdout(held):
            result = func(**kwargs)
        code = int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = int(exc.exit_code)
    except SentinelError as exc:
        if exc.exit_code == EXIT_INTERRUPTED:
            raise
        return exc.exit_code, {"result": None, "error": exc.message, "hint": exc.hint}
    except Exception as exc:
        return EXIT_FAILURE, {"result": None, "error": f"internal error: {type(exc).__name__}: {exc}", "hint": None}
    text = held.getvalue()
    try:
        return code, {"result": json.loads(text) if text.strip() else None}
    except ValueError:
        return code, {"result": text}
