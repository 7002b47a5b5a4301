"""The Typer application and what every command shares: settings, logging, progress."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sentinel_backup import log

if TYPE_CHECKING:
    from sentinel_backup.config import Settings

_logger = log.get("config")

app = typer.Typer(
    name="sentinel-backup",
    help="PostgreSQL backups that are streamed, verified, encrypted and proven to restore.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: starts without importing rich (the progress bar still uses it)
)


@dataclass
class State:
    env_file: Path | None = None
    _settings: Settings | None = None

    def settings(self, *, machine_output: bool = False) -> Settings:
        """The settings, loaded once; logging set up from them. With ``machine_output``
        (``--json``), log lines go to stderr so stdout holds only the document."""
        if self._settings is None:
            from sentinel_backup.config import (
                load_settings,  # the schema (pydantic) loads only for commands that need it
            )

            self._settings = load_settings(self.env_file)
            log.setup(self._settings.log_level, self._settings.log_format, self._settings.log_file,
                      to_stderr=machine_output)
            for warning in self._settings.warnings:
                _logger.warning(warning)
        return self._settings


@app.callback()
def _root(
    ctx: typer.Context,
    env_file: Annotated[Path | None, typer.Option("--env-file", help="Read settings from this .env file.")] = None,
) -> None:
    ctx.obj = State(env_file)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


@contextmanager
def progress_bar(label: str, total: int | None = None) -> Iterator[Callable[[int], None] | None]:
    """A rich progress display on a terminal; nothing (plain log lines) otherwise."""
    if not sys.stdout.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def emit(text: str = "") -> None:
    """Command output (not logs) goes to stdout."""
    typer.echo(text)
