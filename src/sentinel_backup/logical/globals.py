"""Apply a globals backup (``pg_dumpall --globals-only``: roles, memberships, tablespaces).

The artifact's stored SHA-256 and its decoded SHA-256 are checked against the manifest
before a statement runs. Then, statement by statement, on the ``postgres`` database:

- a role that already exists is never changed: its ``CREATE ROLE``, ``ALTER ROLE`` (attributes,
  password, settings) and ``COMMENT ON ROLE`` are skipped, and the role is reported as skipped;
- the same for a tablespace that exists;
- everything else (new roles, their attributes, memberships, new tablespaces) is run; a
  statement that fails is reported with the server's error and the others still run.

psql meta-commands (``\\restrict`` of newer pg_dumpall) and comments are not statements.
A failure message never shows a password (``PASSWORD '...'`` is masked).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, SentinelError
from sentinel_backup.model.catalog import Catalog, Entry
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.pg.source import PsqlSession, Source
from sentinel_backup.pipeline.read import decode_into, decrypting_cipher, require_stored
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.base import FileSink

logger = log.get("globals")
_IDENT = r'("(?:[^"]|"")+"|[^\s;"]+)'
_SUBJECTS = (
    ("create_role", re.compile(rf"^CREATE\s+ROLE\s+{_IDENT}", re.I)),
    ("role", re.compile(rf"^(?:ALTER\s+ROLE|COMMENT\s+ON\s+ROLE)\s+{_IDENT}", re.I)),
    ("create_tablespace", re.compile(rf"^CREATE\s+TABLESPACE\s+{_IDENT}", re.I)),
    ("tablespace", re.compile(rf"^(?:ALTER\s+TABLESPACE|COMMENT\s+ON\s+TABLESPACE)\s+{_IDENT}", re.I)),
)
_PASSWORD = re.compile(r"(PASSWORD\s+)E?'(?:[^']|'')*'", re.I)
EXISTING_SQL = ("SELECT json_build_object('roles', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles),"
                " 'tablespaces', (SELECT coalesce(json_agg(spcname), '[]') FROM pg_tablespace))")


@dataclass(frozen=True)
class Statement:
    sql: str
    kind: str  # create_role, role, create_tablespace, tablespace, set, other
    name: str | None = None
    skip: str | None = None  # why it is not run (the role or tablespace exists)


@dataclass
class GlobalsReport:
    backup_id: str
    roles_created: list[str] = field(default_factory=list)
    roles_skipped: list[str] = field(default_factory=list)  # they exist: left exactly as they are
    tablespaces_created: list[str] = field(default_factory=list)
    tablespaces_skipped: list[str] = field(default_factory=list)
    applied: int = 0  # statements that ran without error
    failed: list[tuple[str, str]] = field(default_factory=list)  # (statement, error), passwords masked

    @property
    def ok(self) -> bool:
        return not self.failed


def find_globals(catalog: Catalog, wanted: str) -> Entry:
    """``latest`` globals backup, or the one with this id; a database backup is refused (exit 2)."""
    if wanted == "latest":
        pool = [e for e in catalog.entries if e.manifest.kind == "globals" and not e.legacy]
        if not pool:
            raise ConfigError("no globals backup found (roles and tablespaces)",
                              "set BACKUP_GLOBALS=true and run `sentinel-backup backup`")
        return pool[0]
    entry = catalog.find(wanted)
    if entry.manifest.kind != "globals":
        raise ConfigError(f"{entry.id} is a backup of the database {entry.manifest.database}, not of the globals",
                          f"restore it with: sentinel-backup restore {entry.id} --target-db NAME; the globals "
                          "backups are the sentinel_globals_* ids of `sentinel-backup list`")
    return entry


def read_sql(settings: Settings, manifest: Manifest, storage: Storage) -> str:
    """The SQL of a globals backup, its stored and decoded SHA-256 checked."""
    require_stored(storage, manifest)
    cipher = decrypting_cipher(manifest, settings)
    buffer = io.BytesIO()
    decode_into(storage, manifest, settings, _Keep(buffer), cipher=cipher, check_raw=True)
    return buffer.getvalue().decode()


class _Keep(FileSink):
    def close(self) -> None:
        pass  # the buffer is read after the decoder closed its sinks


def split_statements(sql: str) -> list[str]:
    """SQL statements (without their ``;``); comments and psql meta-command lines left out."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if not current and (char.isspace() or sql.startswith("--", i) or char == "\\"):
            if char.isspace():
                i += 1
            else:  # a comment or a meta-command line (\restrict, \connect): to its end
                end = sql.find("\n", i)
                i = n if end < 0 else end + 1
            continue
        if char in "'\"":
            escapes = char == "'" and bool(current) and current[-1] in "Ee"
            j = i + 1
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == char:
                    if sql[j + 1:j + 2] == char:
                        j += 2
                        continue
                    break
                j += 1
            current.append(sql[i:j + 1])
            i = j + 1
            continue
        if char == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return [s for s in statements if s]


def unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def classify(sql: str, roles: set[str], tablespaces: set[str]) -> Statement:
    for kind, pattern in _SUBJECTS:
        match = pattern.match(sql)
        if match is None:
            continue
        name = unquote(match.group(1))
        existing = roles if "role" in kind else tablespaces
        what = "role" if "role" in kind else "tablespace"
        return Statement(sql, kind, name, f"{what} {name} exists" if name in existing else None)
    return Statement(sql, "set" if re.match(r"^SET\s", sql, re.I) else "other")


def plan(sql: str, roles: set[str], tablespaces: set[str]) -> list[Statement]:
    return [classify(s, roles, tablespaces) for s in split_statements(sql)]


def dry_run_text(statements: list[Statement]) -> str:
    """The SQL that would run; skipped statements as comments that say why."""
    lines = []
    for s in statements:
        lines.append(f"-- skipped ({s.skip}): {s.sql};" if s.skip else f"{s.sql};")
    return "\n".join(lines) + "\n"


def mask(text: str) -> str:
    return _PASSWORD.sub(r"\1'***'", text)


class GlobalsRestorer:
    def __init__(self, settings: Settings) -> None:
        self.source = Source(settings)

    def existing(self) -> tuple[set[str], set[str]]:
        found = self.source.query_json(EXISTING_SQL)
        assert isinstance(found, dict)
        return {str(r) for r in found["roles"]}, {str(t) for t in found["tablespaces"]}

    def plan(self, sql: str) -> list[Statement]:
        return plan(sql, *self.existing())

    def apply(self, backup_id: str, statements: list[Statement]) -> GlobalsReport:
        report = GlobalsReport(backup_id)
        settings_run: list[str] = []  # SET statements, replayed in a new session after a failure
        session: PsqlSession | None = None
        try:
            for s in statements:
                if s.skip is not None:
                    target = report.roles_skipped if s.kind == "create_role" else \
                        report.tablespaces_skipped if s.kind == "create_tablespace" else None
                    if target is not None and s.name is not None:
                        target.append(s.name)
                    continue
                if session is None:
                    session = PsqlSession(self.source, "postgres")
                    for setting in settings_run:
                        session.query(setting)
                try:
                    session.query(s.sql)
                except SentinelError as exc:
                    report.failed.append((mask(_short(s.sql)), mask(exc.message)))
                    logger.error(f"Statement failed: {mask(_short(s.sql))}: {mask(exc.message)}")
                    session.close()  # psql stops at the error (ON_ERROR_STOP): a new session goes on
                    session = None
                    continue
                report.applied += 1
                if s.kind == "set":
                    settings_run.append(s.sql)
                elif s.kind == "create_role" and s.name is not None:
                    report.roles_created.append(s.name)
                elif s.kind == "create_tablespace" and s.name is not None:
                    report.tablespaces_created.append(s.name)
        finally:
            if session is not None:
                session.close()
        return report


def _short(sql: str, limit: int = 160) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


__all__ = ["GlobalsReport", "GlobalsRestorer", "Statement", "dry_run_text", "find_globals", "read_sql",
           "split_statements"]
