"""Selective restores and archive listings: pg_restore's own selection (``-n``, ``-t``, ``-l``).

A selection restores, like ``pg_restore -n S -t T``, the objects of the named schemas (all
of them with ``-n`` alone) and the tables, views and sequences of the given names (their
definition and data; pg_restore restores no index, constraint or trigger for ``-t``). Names
are exact, not patterns; given both, an object must match both.

pg_restore does not create the schema of a selected object, so the schemas the selection
needs are created first in the (scratch) database the restore goes into. The row-count
check then covers exactly the selected tables of the manifest. Plain (SQL) backups have no
table of contents to select from: a selection or a listing of one is refused (exit 2) with
the fix, BACKUP_FORMAT=custom. Everything here works the same for every archive format
pg_restore reads (custom, directory, tar): only ``plain`` is special.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from dataclasses import dataclass

from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, SourceError
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.pg.source import Source
from sentinel_backup.pipeline.read import decode_to_child, decrypting_cipher, require_stored
from sentinel_backup.storage.base import Storage

FORMAT_HINT = "set BACKUP_FORMAT=custom so that the next backups can be listed and restored selectively"


@dataclass(frozen=True)
class RestoreSelection:
    """``--schema`` and ``--table`` of a restore (each repeatable)."""

    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.schemas and not self.tables

    def pg_restore_args(self) -> list[str]:
        return [*(a for s in self.schemas for a in ("-n", s)), *(a for t in self.tables for a in ("-t", t))]

    def selects(self, qualified: str) -> bool:
        """Whether pg_restore's selection covers the table ``schema.table`` (as the manifest names it)."""
        schema, table = split_qualified(qualified)
        return (not self.schemas or schema in self.schemas) and (not self.tables or table in self.tables)

    def expected(self, tables: dict[str, int] | None) -> dict[str, int] | None:
        """The manifest's row counts of the selected tables only (None: the manifest has none)."""
        if tables is None or self.empty:
            return tables
        return {name: rows for name, rows in tables.items() if self.selects(name)}

    def schemas_needed(self, tables: dict[str, int] | None) -> list[str]:
        """The schemas to create before pg_restore runs: the named ones and those of the selected tables."""
        found = {split_qualified(name)[0] for name in (self.expected(tables) or {})}
        return sorted(found | set(self.schemas))

    def explain(self, error: SourceError, tables: dict[str, int] | None) -> SourceError:
        """A failed selective restore of tables that need objects -t does not select (a type, a
        sequence, a function): the hint names the fix, selecting their whole schema."""
        if not self.tables or "does not exist" not in error.message:
            return error
        schemas = " ".join(f"--schema {quote_arg(s)}" for s in self.schemas_needed(tables))
        return SourceError(error.message, "--table restores the selected tables only, as pg_restore -t does, not "
                           "the types, sequences or functions they need: restore their whole schema instead "
                           f"({schemas}), or the whole backup")

    def describe(self) -> str:
        parts = [f"schema {', '.join(self.schemas)}" if self.schemas else "",
                 f"table {', '.join(self.tables)}" if self.tables else ""]
        return " and ".join(p for p in parts if p)


def quote_arg(name: str) -> str:
    """A name as a shell argument in a hint."""
    return shlex.quote(name)


def split_qualified(name: str) -> tuple[str, str]:
    """``app.t`` / ``"Weird Schema"."Mixed Case"`` (format('%I.%I')) -> (schema, table), unquoted."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(name):
        char = name[i]
        if quoted and char == '"' and name[i + 1:i + 2] == '"':
            current.append('"')
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "." and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return (parts[0], ".".join(parts[1:])) if len(parts) > 1 else ("public", parts[0])


def require_archive(manifest: Manifest, what: str, *, legacy: bool = False) -> None:
    """A listing or selection needs a format pg_restore reads: exit 2 for plain SQL."""
    if manifest.kind == "globals":
        raise ConfigError(f"{manifest.id} holds roles and tablespaces (plain SQL): {what} needs a database backup",
                          f"see it with: sentinel-backup restore --globals {manifest.id} --dry-run")
    if legacy or manifest.format == "plain":
        raise ConfigError(f"{manifest.id} is a plain SQL dump: {what} needs a backup in custom or directory format",
                          f"restore the whole backup (without --schema/--table/--list), or {FORMAT_HINT}")


def check_selection(manifest: Manifest, selection: RestoreSelection) -> None:
    """Refuse (exit 2) a selection that matches no table the backup holds, before any work."""
    if manifest.tables is None or selection.expected(manifest.tables):
        return
    dotted = [t for t in selection.tables if "." in t]
    hint = (f"--table takes a table name without its schema, as pg_restore -t does: "
            f"--schema {split_qualified(dotted[0])[0]} --table {split_qualified(dotted[0])[1]}" if dotted
            else f"see what the backup holds: sentinel-backup restore {manifest.id} --list")
    raise ConfigError(f"{selection.describe()} selects no table of backup {manifest.id}", hint)


def list_contents(settings: Settings, manifest: Manifest, storage: Storage, *, legacy: bool = False) -> str:
    """``pg_restore -l`` of a backup: its table of contents, the names ``--schema``/``--table``
    select from. The stored copy's SHA-256 is checked first, as for a restore."""
    require_archive(manifest, "--list", legacy=legacy)
    require_stored(storage, manifest)
    cipher = decrypting_cipher(manifest, settings)
    with tempfile.TemporaryFile() as out:  # a file, not a pipe: a long listing can never block pg_restore
        proc = Source(settings).popen("pg_restore", "-l", stdin=subprocess.PIPE, stdout=out)
        decode_to_child(proc, "pg_restore", storage, manifest, settings, cipher=cipher, reads_all=False)
        out.seek(0)
        return out.read().decode(errors="replace")


__all__ = ["RestoreSelection", "check_selection", "list_contents", "require_archive", "split_qualified"]
