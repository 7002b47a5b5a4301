"""The Typer application and what every command shares: settings, logging, progress.

Global options (``--env-file``, ``--env-dir``, ``--quiet``, ``--no-progress``) are accepted
before the command and after it (``sentinel-backup list --env-file x``): :func:`command` adds
them to every command it registers; given in both places, the one after the command wins.
With ``--env-dir`` (or SENTINEL_ENV_DIR) a command runs once per server (``cli.servers``).
"""

from __future__ import annotations

import functools
import inspect
import io
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer

from sentinel_backup import __version__, log
from sentinel_backup.cli.lean import lazy_typer_coercion, no_pydantic_plugins

if TYPE_CHECKING:
    from sentinel_backup.config import Settings

_logger = log.get("config")
no_pydantic_plugins()
lazy_typer_coercion()

app = typer.Typer(
    name="sentinel-backup",
    help="PostgreSQL backups that are streamed, verified, encrypted and proven to restore.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: starts without importing rich (the progress bar still uses it)
    context_settings={"help_option_names": ["-h", "--help"]},
)

EnvFile = Annotated[Path | None, typer.Option("--env-file", help="Read settings from this .env file.")]
EnvDir = Annotated[Path | None, typer.Option(
    "--env-dir", help="Run for every server of this folder, one NAME.env each (backup, prune, check, list, drill,"
    " verify latest); also SENTINEL_ENV_DIR.")]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print only warnings and errors, and the command's output only when it fails (for cron).")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar, even on a terminal.")]


@dataclass
class State:
    env_file: Path | None = None
    quiet: bool = False
    no_progress: bool = False
    env_dir: Path | None = None
    server_name: str | None = None  # --env-dir: the SERVER_NAME of the server being run (see cli.servers)
    servers_folder: Path | None = None  # --env-dir for a command that runs every server itself (schedule)
    _settings: Settings | None = None
    _stdout: TextIO | None = None  # the real stdout while --quiet holds the command's output back

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.no_progress)

    def use(self, env_file: Path, server_name: str) -> None:
        """--env-dir: the next settings are this server's."""
        self.env_file, self.server_name, self._settings = env_file, server_name, None

    def emit_always(self, text: str) -> None:
        """Output that --quiet never holds back (the monitoring-plugin line of check --nagios)."""
        typer.echo(text, file=self._stdout or sys.stdout)

    def settings(self, *, machine_output: bool = False, lean: bool = False) -> Settings:
        """The settings, loaded once; logging set up from them. With ``machine_output``
        (``--json``), log lines go to stderr so stdout holds only the document. ``lean``: read
        without pydantic (config_lean: the same values and messages), for commands whose
        start-up counts (check)."""
        if self._settings is None:
            named = {"SERVER_NAME": self.server_name} if self.server_name is not None else {}  # --env-dir
            if lean:
                from sentinel_backup.config_lean import load_lean

                self._settings = load_lean(self.env_file, **named)
            else:  # the schema (pydantic) loads only for commands that need it
                from sentinel_backup.config import load_settings

                self._settings = load_settings(self.env_file, **named)
            # --quiet: warnings and errors go to stderr, past the held-back command output (see command())
            log.setup(self._settings.log_level, self._settings.log_format, self._settings.log_file,
                      to_stderr=machine_output or self.quiet, quiet=self.quiet,
                      server=self._settings.server_name)
            for warning in self._settings.warnings:
                _logger.warning(warning)
        return self._settings


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"sentinel-backup {__version__} (Python {sys.version.split()[0]})")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    env_file: EnvFile = None,
    env_dir: EnvDir = None,
    quiet: Quiet = False,
    no_progress: NoProgress = False,
    version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_show_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    ctx.obj = State(env_file, quiet, no_progress, env_dir)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


F = TypeVar("F", bound=Callable[..., Any])
_GLOBALS = ("env_file", "env_dir", "quiet", "no_progress")


def command(name: str | None = None) -> Callable[[F], F]:
    """``app.command``, with the global options added after the command's own parameters."""

    def register(func: F) -> F:
        own = inspect.signature(func, eval_str=True)
        wants_ctx = "ctx" in own.parameters
        extra = [inspect.Parameter("env_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=EnvFile),
                 inspect.Parameter("env_dir", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=EnvDir),
                 inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Quiet),
                 inspect.Parameter("no_progress", inspect.Parameter.KEYWORD_ONLY, default=False,
                                   annotation=NoProgress)]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values()]
        if not wants_ctx:
            params.insert(0, inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            ctx: typer.Context = kwargs["ctx"] if wants_ctx else kwargs.pop("ctx")
            root = state(ctx)
            env_file, env_dir, quiet, no_progress = (kwargs.pop(k) for k in _GLOBALS)
            root.env_file = env_file if env_file is not None else root.env_file
            root.env_dir = env_dir if env_dir is not None else root.env_dir
            root.quiet = root.quiet or quiet
            root.no_progress = root.no_progress or no_progress
            from sentinel_backup.cli import servers
            folder = servers.env_dir(root.env_dir, root.env_file)
            if folder is not None and (name or func.__name__) in servers.OWN_LOOP:
                root.servers_folder = folder
            elif folder is not None:
                return servers.run_each(name or func.__name__, func, kwargs, root, folder)
            return run_command(func, kwargs, root)

        wrapper.__signature__ = own.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*params, *extra]}
        app.command(name)(wrapper)
        return func

    return register


def run_command(func: Callable[..., Any], kwargs: dict[str, Any], root: State) -> Any:
    """The command itself; with --quiet its output held back unless it fails."""
    if not root.quiet:
        return func(**kwargs)
    root._stdout = sys.stdout
    return _held_back(func, kwargs)


def _held_back(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """--quiet: the command's own output (result lines) is printed only when it did not succeed,
    so that cron mails nothing for a good run; warnings and errors (stderr) always show."""
    held = io.StringIO()
    succeeded = False
    try:
        with redirect_stdout(held):
            code = func(**kwargs)
        succeeded = code in (0, None)
        return code
    finally:
        if not succeeded:  # a failure exit code, or an exception on its way out
            sys.stdout.write(held.getvalue())
            sys.stdout.flush()


class ProgressDisplay:
    """The running progress bar, called with each chunk's byte count. ``begin(name, kind)`` (the
    backup run calls it as each database's dump starts) names the database and sets the
    expected size from ``estimate``; past an estimate the bar shows no percentage or ETA
    rather than a wrong one."""

    def __init__(self, progress: Any, label: str, total: int | None,
                 estimate: Callable[[str], int | None] | None) -> None:
        self.progress, self.label, self.estimate = progress, label, estimate
        self.task = progress.add_task(label, total=total)
        self.completed = 0
        self.total = total

    def __call__(self, n: int) -> None:
        self.completed += n
        if self.total is not None and self.completed > self.total:
            self.total = None  # the estimate was too small: no more percentage, no ETA
            self.progress.update(self.task, total=None)
        self.progress.advance(self.task, n)

    def begin(self, name: str, kind: str = "database") -> None:
        if kind != "database":
            name = f"{name} ({kind})"
        self.total = self.estimate(name) if self.estimate is not None and kind == "database" else None
        self.completed = 0
        self.progress.reset(self.task, total=self.total, completed=0, description=f"{self.label} {name}")


def _columns() -> list[Any]:
    """Description, bar, percent, size done of the total (the units of `list`), speed, ETA."""
    from rich.progress import BarColumn, ProgressColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    from sentinel_backup.notify import human_size

    class Size(ProgressColumn):
        def render(self, task: Any) -> Text:
            done = human_size(int(task.completed))
            return Text(f"{done} of ~{human_size(int(task.total))}" if task.total else done)

    class Speed(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{human_size(int(speed))}/s" if speed else "")

    return [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), Size(), Speed(),
            TextColumn("ETA"), TimeRemainingColumn()]


@contextmanager
def progress_bar(label: str, total: int | None = None, *, enabled: bool = True,
                 estimate: Callable[[str], int | None] | None = None) -> Iterator[ProgressDisplay | None]:
    """A rich progress display on a terminal (unless ``enabled`` is false: --quiet,
    --no-progress); nothing (plain log lines) otherwise. Log lines written while it shows
    are printed above it (the console log handler writes to the current sys.stdout, which
    the display redirects), never into it."""
    if not enabled or not sys.stdout.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    console = Console(soft_wrap=True, highlight=False)  # a long log line stays one line (the terminal wraps it)
    with Progress(*_columns(), console=console, transient=True, redirect_stdout=True, redirect_stderr=True
                  ) as progress:
        yield ProgressDisplay(progress, label, total, estimate)


def print_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Sequence[str] = (),
                indent: int = 0) -> None:
    """Columns as wide as their longest value (rich, imported only here); a row is never wrapped
    when stdout is not a terminal (a pipe, cron mail), whatever its length."""
    from rich import box
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name in header:
        table.add_column(name, justify="right" if name in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)
    console.print(Padding(table, (0, 0, 0, indent), expand=False) if indent else table)


def emit(text: str = "") -> None:
    """Command output (not logs) goes to stdout."""
    typer.echo(text)
