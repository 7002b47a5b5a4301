"""PostgreSQL access: the client-tool commands, direct or through ``docker exec``
(a child's stderr and failure wording: ``pg.child``).

One path for both modes: every interaction is a PostgreSQL client program (pg_dump,
pg_dumpall, psql, pg_restore) started through :meth:`Source.command`. In container
mode it runs inside the database container, so the dump tool always matches the server.
The password travels only in the child's environment (``docker exec -e PGPASSWORD``
copies it from ours), never in argv.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sentinel_backup.errors import SourceError
from sentinel_backup.logical.lockwait import LockWatcher, lock_tables
from sentinel_backup.logical.selection import DumpSelection, selection_sql, sql_literal
from sentinel_backup.pg.child import StderrCollector, source_error
from sentinel_backup.pg.tools import ToolChoice, check_container, choose_local, layout_dirs

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

_TOOLS = {"pg_dump", "pg_dumpall", "psql", "pg_restore", "pg_basebackup"}

# What a fact is per table: its row count, or "rows:md5" (a hash of the sorted row hashes,
# independent of row order). ``t`` is the table's alias.
COUNT_EXPRESSION = "count(*)"
HASH_EXPRESSION = "count(*) || ':' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '')"
EMPTY_HASH = "0:"  # HASH_EXPRESSION of a table without rows

# The tables a (restored) database is compared on: ordinary tables (partitions individually)
# and populated materialized views outside the system schemas, extension members excluded.
# Core SQL only (no query_to_xml: servers built without libxml must work too).
TABLES_SQL = r"""
SELECT coalesce(json_agg(format('%I.%I', ns.nspname, c.relname) ORDER BY ns.nspname, c.relname), '[]'::json)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
  AND ns.nspname NOT IN ('pg_catalog', 'information_schema') AND ns.nspname NOT LIKE 'pg\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""

FACTS_BATCH = 500  # tables per statement: thousands of tables take a few statements, not one each


def per_table_statements(names: list[str], expression: str) -> list[str]:
    """Statements returning ``{"schema.table": <expression over table t>}``, ``FACTS_BATCH``
    tables each. ``names`` are quoted ``schema.table`` identifiers (format('%I.%I'))."""
    statements = []
    for start in range(0, len(names), FACTS_BATCH):
        rows = " UNION ALL ".join(f"SELECT {sql_literal(name)}, (SELECT {expression} FROM {name} t)"
                                  for name in names[start:start + FACTS_BATCH])
        statements.append(f"SELECT json_object_agg(k, v) FROM ({rows}) AS f(k, v)")
    return statements


def table_facts(query: Callable[[str], str], names: list[str], expression: str) -> dict[str, object]:
    """``expression`` per table, through ``query(sql) -> JSON text`` (one session, or one
    snapshot: the caller decides)."""
    facts: dict[str, object] = {}
    for statement in per_table_statements(names, expression):
        facts.update(json.loads(query(statement)))
    return facts


def list_tables(query: Callable[[str], str]) -> list[str]:
    names = json.loads(query(TABLES_SQL.replace("\n", " ")))
    assert isinstance(names, list)
    return [str(n) for n in names]


# Stable text forms for content hashes, whatever the server's or drill server's defaults.
STABLE_SETTINGS = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
                   " SET extra_float_digits = 3; SET bytea_output = 'hex'")

DATABASES_SQL = ("SELECT coalesce(json_agg(datname ORDER BY datname), '[]'::json) FROM pg_database"
                 " WHERE datallowconn AND NOT datistemplate")


PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def widen_pipe(fd: int) -> None:
    """Grow a pipe to 1 MiB (Linux's default is 64 KiB): fewer, larger reads and writes."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def conninfo(database: str) -> str:
    """A libpq connection string naming only the database (safe for any name)."""
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


@dataclass
class Source:
    """How to run PostgreSQL client tools against the configured server."""

    settings: Settings
    _password: str | None = field(default=None, init=False, repr=False)
    _tools: ToolChoice | None = field(default=None, init=False, repr=False)
    # Called with every child started (e.g. Stopper.adopt, so a stop request ends it).
    on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._password = self.settings.password()

    @property
    def container(self) -> str | None:
        return self.settings.postgres_container

    def describe(self) -> dict[str, object]:
        """Where the server is, for manifests and logs (no secret)."""
        s = self.settings
        return {"container": s.postgres_container, "host": s.postgres_host, "port": s.postgres_port,
                "user": s.postgres_user}

    def command(self, tool: str, *args: str, connect: bool = True) -> list[str]:
        """argv for a client tool with the connection options (never the password)."""
        assert tool in _TOOLS, tool
        s = self.settings
        conn = ["-U", s.postgres_user] if connect else []
        if s.postgres_host and connect:
            conn += ["-h", s.postgres_host]
        if s.postgres_port and connect:
            conn += ["-p", str(s.postgres_port)]
        if self.container:
            passed = [opt for name in self._child_env() for opt in ("-e", name)]
            return [s.docker_bin, "exec", "-i", *passed, self.container, tool, *conn, *args]
        if connect and tool != "psql":
            self.matched_tools()  # pg_dump / pg_dumpall / pg_restore must suit the server
        folder = self._tools.bin_dir if self._tools is not None else s.pg_bin_dir or _fallback_psql_dir(tool)
        binary = str(folder / tool) if folder else tool
        return [binary, *conn, *args]

    def matched_tools(self) -> ToolChoice:
        """The client tools for this server, chosen once (see pgtools): ToolsTooOld (exit 2)
        when none is new enough."""
        if self._tools is None:
            server = self.server_version_num()
            if self.container:
                self._tools = check_container(server, self.tool_version("pg_dump"), self.container)
            else:
                self._tools = choose_local(server, self.settings.pg_bin_dir)
        return self._tools

    def server_version_num(self) -> str:
        """``server_version_num`` of the server (e.g. ``180006``), through psql."""
        return self.run("psql", *PSQL_FLAGS, "-d", conninfo("postgres"), "-c", "SHOW server_version_num").strip()

    def _child_env(self) -> dict[str, str]:
        extra = {"PGAPPNAME": "sentinel-backup", "PGCONNECT_TIMEOUT": os.environ.get("PGCONNECT_TIMEOUT", "15")}
        if self._password is not None:
            extra["PGPASSWORD"] = self._password
        return extra

    def env(self) -> dict[str, str]:
        """Environment for a child process: ours plus the password and app name."""
        return {**os.environ, **self._child_env()}

    def popen(self, tool: str, *args: str, stdin: int | IO[bytes] | None = subprocess.DEVNULL,
              stdout: int | IO[bytes] | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
        return self.spawn(self.command(tool, *args), stdin=stdin, stdout=stdout)

    def spawn(self, argv: list[str], *, stdin: int | IO[bytes] | None = subprocess.DEVNULL,
              stdout: int | IO[bytes] | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
        """Start a command built by :meth:`command`; stderr is a pipe for the caller to drain."""
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=self.env(),
                                    bufsize=0)
        except FileNotFoundError:
            hint = ("install the container CLI or fix DOCKER_BIN" if self.container else
                    "install the PostgreSQL client (e.g. apt-get install postgresql-client) or set PG_BIN_DIR")
            raise SourceError(f"{argv[0]} not found", hint) from None
        if self.on_spawn is not None:
            self.on_spawn(proc)
        for pipe in (proc.stdout, proc.stdin):
            if pipe is not None:
                widen_pipe(pipe.fileno())
        return proc

    def run(self, tool: str, *args: str, input: bytes | None = None) -> str:
        """Run a client tool to completion; its stdout, or SourceError with its stderr."""
        proc = self.popen(tool, *args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        out, err = proc.communicate(input)
        if proc.returncode != 0:
            raise source_error(tool, err.decode(errors="replace"), proc.returncode)
        return out.decode()

    def tool_version(self, tool: str = "pg_dump") -> str:
        """``<tool> --version`` of the tool that would run (inside the container in container mode)."""
        proc = self.spawn(self.command(tool, "--version", connect=False))
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise source_error(tool, err.decode(errors="replace"), proc.returncode)
        return out.decode().strip()

    def query_json(self, sql: str, database: str = "postgres") -> object:
        """Run one statement that returns a single JSON value."""
        text = self.run("psql", *PSQL_FLAGS, "-d", conninfo(database), "-c", sql)
        return json.loads(text)

    def row_counts(self, database: str) -> dict[str, int]:
        """Rows per table of every table in the database (what a restore is compared on)."""
        return {k: int(str(v)) for k, v in self._facts(database, COUNT_EXPRESSION).items()}

    def table_hashes(self, database: str) -> dict[str, str]:
        """Content fingerprint per table (rows and an order-independent hash)."""
        return {k: str(v) for k, v in self._facts(database, HASH_EXPRESSION, setup=STABLE_SETTINGS).items()}

    def _facts(self, database: str, expression: str, *, setup: str | None = None) -> dict[str, object]:
        """``expression`` for every table of ``database``, in one session."""
        session = PsqlSession(self, database)
        try:
            if setup is not None:
                session.query(setup)
            return table_facts(session.query, list_tables(session.query), expression)
        finally:
            session.close()

    def list_databases(self) -> list[str]:
        names = self.query_json(DATABASES_SQL)
        assert isinstance(names, list)
        return [str(n) for n in names]

    def resolve_databases(self) -> list[str]:
        """POSTGRES_DB resolved: `all` becomes every connectable non-template database."""
        if self.settings.all_databases:
            return self.list_databases()
        return self.settings.databases

    @contextlib.contextmanager
    def snapshot(self, database: str, *, hashes: bool = False, selection: DumpSelection | None = None,
                 lock_timeout: timedelta = timedelta(0)) -> Iterator[Snapshot]:
        """Open a REPEATABLE READ transaction, export its snapshot and read the table facts in it.

        The facts cover exactly the tables ``pg_dump`` with ``selection`` dumps: each table
        it dumps data of with its rows, each table it creates without data with 0. Those
        tables are locked first (ACCESS SHARE, as pg_dump does), one by one, waiting at most
        ``lock_timeout`` (0: forever) while a watcher logs who holds a lock we wait for.
        The transaction stays open while the caller runs ``pg_dump --snapshot``.
        """
        session = PsqlSession(self, database)
        watcher: LockWatcher | None = None
        try:
            session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot_id = session.query("SELECT pg_export_snapshot()")
            version = session.query("SHOW server_version")
            session.query(f"SET lock_timeout = {int(lock_timeout.total_seconds() * 1000)}")
            listed = json.loads(session.query(selection_sql(selection or DumpSelection()).replace("\n", " ")))
            assert session.backend_pid is not None  # a session that started knows its server pid
            watcher = LockWatcher(self, database, session.backend_pid)
            watcher.start()
            lock_tables(session, [str(name) for name, kind, _ in listed if kind == "r"], watcher, lock_timeout)
            with_data = [str(name) for name, _, data in listed if data]
            without = [str(name) for name, kind, data in listed if not data and kind == "r"]
            counts = table_facts(session.query, with_data, COUNT_EXPRESSION)
            tables = {**{n: int(str(v)) for n, v in counts.items()}, **dict.fromkeys(without, 0)}
            table_hashes = None
            if hashes:
                session.query(STABLE_SETTINGS)
                found = table_facts(session.query, with_data, HASH_EXPRESSION)
                table_hashes = {**{n: str(v) for n, v in found.items()}, **dict.fromkeys(without, EMPTY_HASH)}
            yield Snapshot(snapshot_id, version, dict(sorted(tables.items())),
                           dict(sorted(table_hashes.items())) if table_hashes is not None else None)
        finally:
            if watcher is not None:
                watcher.stop()
            session.close()


PSQL_FLAGS = ("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")


def _fallback_psql_dir(tool: str) -> Path | None:
    """Before the tools are chosen only psql runs (to ask the server's version): from PATH,
    else from the newest distribution folder."""
    if shutil.which(tool):
        return None
    found = [d for d in layout_dirs(0) if (d / tool).is_file()]
    return found[-1] if found else None


@dataclass(frozen=True)
class Snapshot:
    id: str
    server_version: str
    tables: dict[str, int]
    hashes: dict[str, str] | None = None


class PsqlSession:
    """A long-lived psql process fed statements one at a time (works through docker exec)."""

    _MARK = "__sentinel_end_of_result__"

    def __init__(self, source: Source, database: str) -> None:
        self.source, self.database = source, database
        self.proc = source.popen("psql", *PSQL_FLAGS, "-d", conninfo(database), stdin=subprocess.PIPE)
        self.errors = StderrCollector(self.proc)
        self.backend_pid: int | None = None
        self.died_in_query = False
        try:
            self.backend_pid = int(self.query("SELECT pg_backend_pid()"))
        except BaseException:
            self.close()
            raise

    def query(self, sql: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{sql};\n\\echo {self._MARK}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        lines: list[str] = []
        for raw in self.proc.stdout:
            line = raw.decode().rstrip("\n")
            if line == self._MARK:
                return "\n".join(lines).strip()
            lines.append(line)
        code = self.proc.wait()
        self.died_in_query = True
        self.errors.join()
        raise source_error("psql", self.errors.text(), code)

    def run_each(self, statements: list[str], batch: int = 200) -> tuple[int, SourceError] | None:
        """Run statements in order, pipelined ``batch`` at a time, each followed by a numbered
        marker; None when all succeeded, else (index of the one that failed, its error).
        psql stops at the first error (ON_ERROR_STOP), so the session is over then."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for start in range(0, len(statements), batch):
            chunk = statements[start:start + batch]
            payload = "".join(f"{sql};\n\\echo {self._MARK} {start + k}\n" for k, sql in enumerate(chunk))
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(payload.encode())
                self.proc.stdin.flush()
            last, done = start + len(chunk) - 1, start - 1
            for raw in self.proc.stdout:
                line = raw.decode().rstrip("\n")
                if line.startswith(self._MARK + " "):
                    done = int(line.rsplit(" ", 1)[1])
                    if done == last:
                        break
            else:
                code = self.proc.wait()
                self.died_in_query = True  # its server session may still wait (e.g. on a lock): close() ends it
                self.errors.join()
                return done + 1, source_error("psql", self.errors.text(), code)
        return None

    def close(self) -> None:
        """End the session. If psql died during a statement (killed by a signal sent to the
        whole process group, say), its server session may still wait on a lock, unaware that
        the client is gone: it is terminated from a fresh connection."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errors.join()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        if self.died_in_query and self.backend_pid is not None:
            self.died_in_query = False
            with contextlib.suppress(SourceError):
                self.source.run("psql", *PSQL_FLAGS, "-d", conninfo(self.database), "-c",
                                f"SELECT pg_terminate_backend({self.backend_pid})")

__all__ = ["HASH_EXPRESSION", "PSQL_FLAGS", "STABLE_SETTINGS", "PsqlSession", "Snapshot", "Source",
           "StderrCollector", "conninfo", "list_tables", "source_error", "table_facts"]
