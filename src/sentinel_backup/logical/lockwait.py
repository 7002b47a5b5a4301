"""Waiting for table locks: never silently, never forever unless asked to.

The snapshot session locks every dumped table (ACCESS SHARE, what pg_dump takes too) one
by one with ``lock_timeout`` = LOCK_WAIT_TIMEOUT, so a table another session holds
exclusively is named when the wait ends. While any of this run's sessions waits for a
lock, a watcher in a session of its own logs which relation it waits for and which
process holds it (pid, application_name, user, state, query start).
"""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sentinel_backup import log
from sentinel_backup.errors import SentinelError, SourceError
from sentinel_backup.logical.selection import sql_literal

if TYPE_CHECKING:
    from sentinel_backup.pg.source import PsqlSession, Source

logger = log.get("backup")

APPLICATION = "sentinel-backup"  # PGAPPNAME of every session the tool opens

_BLOCKER_FIELDS = ("'pid', b.pid, 'application', b.application_name, 'user', b.usename, 'state', b.state,"
                   " 'query_start', b.query_start::text")


def waits_sql(pid: int) -> str:
    """Who blocks the sessions of this run: the snapshot session ``pid`` and the sessions
    of the tool opened after it on the same database (pg_dump's)."""
    return f"""
SELECT coalesce(json_agg(json_build_object(
    'waiting', w.pid,
    'relation', coalesce((SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = l.relation),
                         l.locktype),
    {_BLOCKER_FIELDS}) ORDER BY w.pid, b.pid), '[]'::json)
FROM pg_catalog.pg_stat_activity w
JOIN pg_catalog.pg_locks l ON l.pid = w.pid AND NOT l.granted
CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(w.pid)) AS bp(pid)
JOIN pg_catalog.pg_stat_activity b ON b.pid = bp.pid
WHERE w.datname = pg_catalog.current_database() AND w.pid <> pg_catalog.pg_backend_pid()
  AND (w.pid = {pid} OR (w.application_name = {sql_literal(APPLICATION)} AND w.backend_start >=
       (SELECT s.backend_start FROM pg_catalog.pg_stat_activity s WHERE s.pid = {pid})))
"""


def holders_sql(relation: str) -> str:
    """Sessions holding a lock on ``relation`` that conflicts with ACCESS SHARE."""
    return f"""
SELECT coalesce(json_agg(json_build_object({_BLOCKER_FIELDS}) ORDER BY b.pid), '[]'::json)
FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity b ON b.pid = l.pid
WHERE l.granted AND l.mode = 'AccessExclusiveLock' AND l.relation = pg_catalog.to_regclass({sql_literal(relation)})
"""


def describe(blocker: dict[str, Any]) -> str:
    return (f"pid {blocker.get('pid')} (application_name {blocker.get('application') or '-'!s},"
            f" user {blocker.get('user')}, state {blocker.get('state')}, query started {blocker.get('query_start')})")


class LockWatcher:
    """Polls, in its own session, for locks this run waits for, and logs each new wait once."""

    def __init__(self, source: Source, database: str, pid: int, *, first: float = 2.0, every: float = 5.0) -> None:
        self.source = source
        self.database = database
        self.pid = pid
        self.first = first
        self.every = every
        self.blockers: dict[str, list[dict[str, Any]]] = {}  # relation -> who blocked it last time we looked
        self._seen: set[tuple[object, object, object]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        if self._stop.wait(self.first):
            return
        from sentinel_backup.pg.source import PsqlSession  # the watcher's own session (source imports this module)

        try:
            session = PsqlSession(self.source, self.database)
        except SentinelError as exc:
            logger.debug(f"Lock watcher could not start: {exc.message}")
            return
        try:
            while not self._stop.is_set():
                self.poll(session)
                if self._stop.wait(self.every):
                    break
        except SentinelError as exc:
            logger.debug(f"Lock watcher stopped: {exc.message}")
        finally:
            session.close()

    def poll(self, session: PsqlSession) -> None:
        waits = json.loads(session.query(waits_sql(self.pid).replace("\n", " ")))
        current: dict[str, list[dict[str, Any]]] = {}
        for wait in waits:
            current.setdefault(str(wait["relation"]), []).append(wait)
            key = (wait["waiting"], wait["relation"], wait["pid"])
            if key not in self._seen:
                self._seen.add(key)
                logger.warning(f"Waiting for a lock on {wait['relation']} in {self.database}, held by "
                               f"{describe(wait)} (LOCK_WAIT_TIMEOUT bounds the wait)",
                               extra=log.fields(database=self.database, relation=str(wait["relation"]),
                                                blocker_pid=wait["pid"], waiting_pid=wait["waiting"]))
        self.blockers.update(current)


def lock_tables(session: PsqlSession, names: list[str], watcher: LockWatcher, timeout: timedelta) -> None:
    """LOCK each table ACCESS SHARE (pipelined; the session's lock_timeout bounds each wait).
    A wait that times out becomes a SourceError naming the table and who holds it."""
    failed = session.run_each([f"LOCK TABLE ONLY {name} IN ACCESS SHARE MODE" for name in names])
    if failed is None:
        return
    index, error = failed
    if "lock timeout" not in error.message or index >= len(names):
        raise error
    relation = names[index]
    blockers = watcher.blockers.get(relation) or _holders(watcher, relation)
    held = "; held by " + ", ".join(describe(b) for b in blockers) if blockers else ""
    raise SourceError(
        f"timed out after {_seconds(timeout)} waiting for a lock on table {relation} in {watcher.database}{held}",
        "find the session holding the lock (pg_stat_activity, pg_blocking_pids) and end it or let it finish, "
        "or raise LOCK_WAIT_TIMEOUT (0 waits forever)")


def _holders(watcher: LockWatcher, relation: str) -> list[dict[str, Any]]:
    with contextlib.suppress(SentinelError, ValueError):
        found = watcher.source.query_json(holders_sql(relation).replace("\n", " "), watcher.database)
        if isinstance(found, list):
            return [b for b in found if isinstance(b, dict)]
    return []


def _seconds(timeout: timedelta) -> str:
    seconds = timeout.total_seconds()
    return f"{seconds:g}s"
