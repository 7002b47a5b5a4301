"""The scratch database a logical restore goes into, and the swap that gives it the target's name.

- :meth:`ScratchDatabases.scratch_database` creates ``<target>__sentinel_restore`` and drops
  it on the way out unless it was renamed away (``WITH (FORCE)``, which also ends the server
  sessions of a client tool that was stopped);
- the swap (:meth:`ScratchDatabases._swap`), once the restore succeeded and the row counts matched:
  1. the scratch database stops accepting connections and any session on it (nobody
     has business there, e.g. a monitoring agent) is terminated;
  2. with ``--clean``, sessions on the old target are listed: the restore refuses while
     there are any, unless ``--terminate-sessions`` was given; then the old target stops
     accepting connections and its sessions are terminated;
  3. one transaction renames the old target to ``<target>__sentinel_old`` and the scratch
     database to ``<target>`` and lets the new target accept connections again: either
     everything or nothing of it happens;
  4. only then is ``<target>__sentinel_old`` dropped (if that fails, it is kept and named);
- a restore that did not complete gets an error naming every database that exists now
  (:meth:`ScratchDatabases._failed`).

The short DDL steps and the swap run deferred under a :class:`~sentinel_backup.interrupt.StopSignals`
guard: a signal during them is honoured right after them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import Interrupted, RestoreFailed, SentinelError, SourceError
from sentinel_backup.interrupt import StopSignals
from sentinel_backup.pg.source import PSQL_FLAGS, Source, conninfo

logger = log.get("restore")

SCRATCH_SUFFIX = "__sentinel_restore"
OLD_SUFFIX = "__sentinel_old"
MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated by the server

SESSIONS_SQL = ("SELECT coalesce(json_agg(json_build_object('pid', pid, 'user', usename, 'application',"
                " application_name, 'client', coalesce(host(client_addr), 'local'), 'state', state) ORDER BY pid),"
                " '[]') FROM pg_stat_activity WHERE datname = {name} AND pid <> pg_backend_pid()")
TERMINATE_SQL = ("SELECT coalesce(json_agg(pg_terminate_backend(pid, 5000)), '[]') FROM pg_stat_activity"
                 " WHERE datname = {name} AND pid <> pg_backend_pid()")


def derived_name(target: str, suffix: str) -> str:
    """``target + suffix`` within 63 bytes: the target is shortened (at a character boundary)."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    head = target.encode()[:room].decode(errors="ignore")
    return head + suffix


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class ScratchDatabases:
    """Database steps of a restore on one server (see the module doc); ``Restorer`` builds on it."""

    def __init__(self, settings: Settings, *, stop: StopSignals | None = None) -> None:
        self.settings = settings
        self.source = Source(settings)
        self.stop = stop

    def _deferred(self, *, deliver: bool = True) -> contextlib.AbstractContextManager[None]:
        """A step a stop signal must not cut in half (no-op without a StopSignals guard)."""
        return self.stop.deferred(deliver=deliver) if self.stop is not None else contextlib.nullcontext()

    # --- database helpers -------------------------------------------------------------
    def database_exists(self, name: str) -> bool:
        sql = f"SELECT json_build_array(EXISTS (SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}))"
        result = self.source.query_json(sql)
        return bool(isinstance(result, list) and result[0])

    def execute(self, sql: str, database: str = "postgres") -> None:
        self.source.run("psql", *PSQL_FLAGS, "-d", conninfo(database), "-c", sql)

    def row_counts(self, database: str) -> dict[str, int]:
        return self.source.row_counts(database)

    @contextlib.contextmanager
    def scratch_database(self, name: str, *, create_hint: str = "") -> Iterator[str]:
        """Create ``name``; drop it on the way out unless it was renamed away."""
        if self.database_exists(name):
            raise RestoreFailed(f"scratch database {name} already exists (left by an interrupted restore?)",
                                f"check it is not needed, then: DROP DATABASE {quote_ident(name)}")
        try:
            with self._deferred(deliver=False):  # a stop during CREATE is acted on below, where the drop is sure
                self.execute(f"CREATE DATABASE {quote_ident(name)}")
        except SourceError as exc:
            if "permission denied to create database" not in exc.message:
                raise
            user = self.settings.postgres_user
            raise SourceError(f"{exc.message} (restores go through a scratch database, {name})",
                              f"the role {user} needs CREATEDB: ALTER ROLE {quote_ident(user)} CREATEDB;"
                              f" or use a superuser{create_hint}") from None
        try:
            if self.stop is not None:
                self.stop.check()
            yield name
        finally:
            # FORCE also ends the server sessions of a client tool that was stopped.
            with self._deferred(deliver=False):
                if self.database_exists(name):
                    try:
                        self.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
                    except SentinelError as exc:
                        logger.error(f"Could not drop scratch database {name}: {exc.message}")

    # --- the swap ---------------------------------------------------------------------
    def sessions(self, database: str) -> list[dict[str, object]]:
        """Other sessions connected to ``database`` (pid, user, application, client, state)."""
        found = self.source.query_json(SESSIONS_SQL.format(name=quote_literal(database)))
        return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []

    def _refuse_sessions(self, target: str, terminate: bool, error: type[SentinelError]) -> None:
        sessions = self.sessions(target)
        if sessions and not terminate:
            listed = "; ".join(f"pid {s['pid']} user {s['user']} application {s['application'] or '-'}"
                               f" from {s['client']} ({s['state']})" for s in sessions[:10])
            more = f" and {len(sessions) - 10} more" if len(sessions) > 10 else ""
            raise error(f"{len(sessions)} session(s) are connected to {target}, which --clean would replace:"
                        f" {listed}{more}",
                        "stop them (e.g. the application) and run the restore again, or pass --terminate-sessions"
                        " to have them terminated just before the swap")

    def _close(self, database: str) -> None:
        """No new connections to ``database``; sessions on it are terminated (waiting up to 5 s each)."""
        self.execute(f"ALTER DATABASE {quote_ident(database)} ALLOW_CONNECTIONS false")
        self.source.query_json(TERMINATE_SQL.format(name=quote_literal(database)))

    def _allows_connections(self, database: str) -> bool:
        result = self.source.query_json("SELECT json_build_array(datallowconn) FROM pg_database"
                                        f" WHERE datname = {quote_literal(database)}")
        return bool(isinstance(result, list) and result[0])

    def _swap_committed(self, scratch: str, old: str | None, error: SourceError) -> bool:
        """After psql failed on the swap transaction (killed after the server committed it, say):
        did it happen? Read back from pg_database; RestoreFailed when that cannot be told."""
        try:
            return not self.database_exists(scratch) and (old is None or self.database_exists(old))
        except SentinelError as exc:
            raise RestoreFailed(f"the swap of {scratch} failed ({error.message}) and what exists now could not be"
                                f" read ({exc.message})", "look at pg_database: the restored copy is either still "
                                f"{scratch} or already the target, and the old copy ends in {OLD_SUFFIX}") from None

    def _swap(self, scratch: str, target: str, old: str | None, terminate: bool) -> list[str]:
        """Give the restored copy the target's name (see the module doc); notes on what is left."""
        logger.info(f"Swapping the restored copy {scratch} in as {target}")
        self._close(scratch)  # nobody has business on the scratch database
        reopen = False
        try:
            statements = []
            if old is not None:
                self._refuse_sessions(target, terminate, RestoreFailed)
                if terminate and self._allows_connections(target):
                    logger.warning(f"Terminating the sessions on {target} (--terminate-sessions)")
                    reopen = True
                    self._close(target)
                statements.append(f"ALTER DATABASE {quote_ident(target)} RENAME TO {quote_ident(old)}")
            statements += [f"ALTER DATABASE {quote_ident(scratch)} RENAME TO {quote_ident(target)}",
                           f"ALTER DATABASE {quote_ident(target)} ALLOW_CONNECTIONS true"]
            try:
                self.execute("BEGIN; " + "; ".join(statements) + "; COMMIT")
            except SourceError as exc:
                if not self._swap_committed(scratch, old, exc):
                    raise RestoreFailed(f"the swap of {scratch} in as {target} failed, nothing of it was done:"
                                        f" {exc.message}") from None
                logger.warning(f"psql failed after the swap committed ({exc.message}): {target} holds the restore")
        except BaseException:
            if reopen:
                try:
                    self.execute(f"ALTER DATABASE {quote_ident(target)} ALLOW_CONNECTIONS true")
                except SentinelError as exc:
                    logger.error(f"Could not let {target} accept connections again: {exc.message}")
            raise
        if old is None:
            return []
        logger.info(f"Dropping the old {target}, renamed {old} (--clean)")
        try:
            self.execute(f"DROP DATABASE {quote_ident(old)} WITH (FORCE)")
        except SentinelError as exc:
            logger.error(f"Could not drop {old}: {exc.message}")
            return [f"the old content of {target} is kept as database {old} (dropping it failed: {exc.message});"
                    f" drop it when it is no longer needed: DROP DATABASE {quote_ident(old)}"]
        return []

    def _failed(self, exc: SentinelError | KeyboardInterrupt, backup_id: str, target: str, scratch: str,
                old: str | None, existed: bool) -> SentinelError:
        """The error to raise for a restore that did not complete, naming every database that exists now."""
        state = self._state(target, scratch, old, existed)
        signal_name = self.stop.name if self.stop is not None else None
        if isinstance(exc, KeyboardInterrupt) or signal_name is not None:
            by = f" by {signal_name}" if signal_name else ""
            return Interrupted(f"the restore of {backup_id} into {target} was interrupted{by}", state)
        assert isinstance(exc, SentinelError)
        return type(exc)(exc.message, f"{exc.hint}; {state}" if exc.hint else state)

    def _state(self, target: str, scratch: str, old: str | None, existed: bool) -> str:
        try:
            with self._deferred(deliver=False):
                facts = []
                if self.database_exists(target):
                    connectable = self._allows_connections(target)
                    facts.append(f"{target} holds what it held before the restore" if existed else
                                 f"{target} exists (it did not before the restore)")
                    if not connectable:
                        facts.append(f"{target} does not accept connections: ALTER DATABASE {quote_ident(target)}"
                                     " ALLOW_CONNECTIONS true")
                else:
                    facts.append(f"there is NO database {target} any more" if existed else f"{target} was not created")
                facts.append(f"the scratch database {scratch} still exists (it holds the partly restored copy)"
                             if self.database_exists(scratch) else f"the scratch database {scratch} was dropped")
                if old is not None and self.database_exists(old):
                    facts.append(f"{old} holds the old content of {target}")
        except SentinelError as err:
            return f"could not check which databases exist now ({err.message}): look at {target} and {scratch}"
        return "; ".join(facts)
