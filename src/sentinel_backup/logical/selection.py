"""Which tables a pg_dump with PG_DUMP_OPTIONS holds data of, computed as pg_dump does.

The manifest's table facts must describe exactly what the dump holds, so the set of
tables is derived from pg_dump's own selection rules (``selectDumpableNamespace``,
``selectDumpableTable``, ``makeTableDataInfo`` in pg_dump.c): ``-n/-N/-t/-T``,
``--exclude-table-data``, the ``...-and-children`` forms (PG16+), ``-s``, ``--no-data``,
``--section`` and ``--no-unlogged-table-data``. Patterns are translated to regular
expressions as psql/pg_dump do (``patternToSQLRegex``) and matched by the server itself,
with the same operator, so the two can never disagree about what a pattern means.

The options are parsed like pg_dump's getopt_long does (``-tX``, ``-t X``, ``--table=X``,
``--table X``, unambiguous abbreviations of long options). An option this module does not
know, or one whose effect on the selection it cannot reproduce (``--filter``), is refused:
facts that might not describe the dump are never recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sentinel_backup.errors import ConfigError

# pg_dump 13-18 short options; a trailing ':' takes an argument.
_SHORT = "abBcCd:e:E:f:F:h:j:n:N:Op:RsS:t:T:U:vwWxXZ:"
_SHORT_ARG = {c for i, c in enumerate(_SHORT) if c != ":" and _SHORT[i + 1:i + 2] == ":"}
_SHORT_FLAG = {c for c in _SHORT if c != ":"} - _SHORT_ARG

# pg_dump 13-18 long options -> whether they take an argument.
_LONG_ARG = {
    "dbname", "extension", "file", "format", "host", "jobs", "port", "schema", "exclude-schema", "superuser",
    "table", "exclude-table", "username", "compress", "encoding", "exclude-table-data", "extra-float-digits",
    "lock-wait-timeout", "role", "section", "snapshot", "rows-per-insert", "include-foreign-data",
    "table-and-children", "exclude-table-and-children", "exclude-table-data-and-children", "sync-method",
    "filter", "exclude-extension",
}
_LONG_FLAG = {
    "data-only", "blobs", "large-objects", "no-blobs", "no-large-objects", "clean", "create", "no-reconnect",
    "no-owner", "schema-only", "no-password", "password", "verbose", "no-privileges", "no-acl", "help",
    "version", "attribute-inserts", "binary-upgrade", "column-inserts", "disable-dollar-quoting",
    "disable-triggers", "enable-row-security", "if-exists", "inserts", "no-table-access-method",
    "no-tablespaces", "quote-all-identifiers", "load-via-partition-root", "serializable-deferrable",
    "statistics-only", "strict-names", "use-set-session-authorization", "no-comments", "no-data",
    "no-policies", "no-publications", "no-schema", "no-security-labels", "no-statistics", "no-subscriptions",
    "no-toast-compression", "no-unlogged-table-data", "no-sync", "on-conflict-do-nothing", "with-data",
    "with-schema", "with-statistics", "statistics", "sequence-data",
}
_LONG_OF_SHORT = {"n": "schema", "N": "exclude-schema", "t": "table", "T": "exclude-table", "s": "schema-only",
                  "a": "data-only"}
_UNSUPPORTED = {"filter": "--filter reads selection rules from a file Sentinel Backup cannot interpret"}
_HINT = "PG_DUMP_OPTIONS must hold pg_dump options only; see docs/operations.md (what the manifest counts)"


@dataclass
class DumpSelection:
    """The options of one pg_dump command line that decide which tables' data it dumps."""

    schemas: list[str] = field(default_factory=list)  # -n
    exclude_schemas: list[str] = field(default_factory=list)  # -N
    tables: list[str] = field(default_factory=list)  # -t
    tables_and_children: list[str] = field(default_factory=list)
    exclude_tables: list[str] = field(default_factory=list)  # -T
    exclude_tables_and_children: list[str] = field(default_factory=list)
    exclude_data: list[str] = field(default_factory=list)
    exclude_data_and_children: list[str] = field(default_factory=list)
    schema_only: bool = False  # -s, --no-data, --statistics-only: no table data at all
    data_only: bool = False
    sections: list[str] = field(default_factory=list)
    no_unlogged_data: bool = False

    def dumps(self, section: str) -> bool:
        """Whether the dump holds table data of this section: ``data`` (tables' rows) or
        ``post-data`` (where REFRESH MATERIALIZED VIEW lives)."""
        if self.schema_only and not self.data_only:
            return False
        return not self.sections or section in self.sections


def _long_name(text: str) -> str:
    """A long option name as getopt_long resolves it: exact, or an unambiguous prefix."""
    known = _LONG_ARG | _LONG_FLAG
    if text in known:
        return text
    matches = sorted(n for n in known if n.startswith(text))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"PG_DUMP_OPTIONS: option --{text} is ambiguous ({', '.join('--' + m for m in matches)})",
                          "write the option name in full")
    raise ConfigError(f"PG_DUMP_OPTIONS: unknown pg_dump option --{text}",
                      "Sentinel Backup must understand every pg_dump option to record what the dump holds; "
                      "remove it, or report it if it is a pg_dump option")


def parse_options(args: list[str]) -> DumpSelection:
    """The selection of ``pg_dump <args>``; ConfigError for what cannot be interpreted safely."""
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            name = _long_name(name)
            if name in _LONG_ARG:
                if not eq:
                    if i >= len(args):
                        raise ConfigError(f"PG_DUMP_OPTIONS: option --{name} needs a value", _HINT)
                    value = args[i]
                    i += 1
                options.append((name, value))
            else:
                if eq:
                    raise ConfigError(f"PG_DUMP_OPTIONS: option --{name} takes no value", _HINT)
                options.append((name, None))
        elif arg.startswith("-") and arg != "-":
            pos = 1
            while pos < len(arg):
                letter = arg[pos]
                pos += 1
                if letter in _SHORT_ARG:
                    value = arg[pos:]
                    if not value:
                        if i >= len(args):
                            raise ConfigError(f"PG_DUMP_OPTIONS: option -{letter} needs a value", _HINT)
                        value = args[i]
                        i += 1
                    options.append((_LONG_OF_SHORT.get(letter, "-" + letter), value))
                    break
                if letter not in _SHORT_FLAG:
                    raise ConfigError(f"PG_DUMP_OPTIONS: unknown pg_dump option -{letter}", _HINT)
                options.append((_LONG_OF_SHORT.get(letter, "-" + letter), None))
        # anything else is a positional argument (a database name): not a selection
    return _selection(options)


def _selection(options: list[tuple[str, str | None]]) -> DumpSelection:
    sel = DumpSelection()
    lists = {"schema": sel.schemas, "exclude-schema": sel.exclude_schemas, "table": sel.tables,
             "table-and-children": sel.tables_and_children, "exclude-table": sel.exclude_tables,
             "exclude-table-and-children": sel.exclude_tables_and_children, "exclude-table-data": sel.exclude_data,
             "exclude-table-data-and-children": sel.exclude_data_and_children}
    for name, value in options:
        if name in _UNSUPPORTED:
            raise ConfigError(f"PG_DUMP_OPTIONS: {_UNSUPPORTED[name]}",
                              "write the rules as --table/--exclude-table/--schema/--exclude-schema/"
                              "--exclude-table-data options in PG_DUMP_OPTIONS instead")
        if name in lists:
            assert value is not None
            lists[name].append(value)
        elif name in ("schema-only", "no-data", "statistics-only"):
            sel.schema_only = True
        elif name == "data-only":
            sel.data_only = True
        elif name == "section":
            assert value is not None
            sel.sections.append(value.strip())
        elif name == "no-unlogged-table-data":
            sel.no_unlogged_data = True
    return sel


# --- patterns -------------------------------------------------------------------------
def pattern_regexes(pattern: str) -> list[str]:
    """psql/pg_dump pattern -> one anchored POSIX regex per dotted part (``patternToSQLRegex``).

    Outside double quotes: letters fold to lower case, ``*`` is ``.*``, ``?`` is ``.``, ``.``
    separates parts, other regex characters keep their meaning (except ``[]``). Inside
    double quotes everything is literal, ``""`` is one quote. ``$`` is always literal."""
    parts = [""]
    inquotes = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == '"':
            if inquotes and pattern[i + 1:i + 2] == '"':
                parts[-1] += '"'
                i += 1
            else:
                inquotes = not inquotes
        elif not inquotes and "A" <= ch <= "Z":
            parts[-1] += ch.lower()
        elif not inquotes and ch == "*":
            parts[-1] += ".*"
        elif not inquotes and ch == "?":
            parts[-1] += "."
        elif not inquotes and ch == ".":
            parts.append("")
        elif ch == "$":
            parts[-1] += "\\$"
        elif inquotes and ch in "|*+?()[]{}.^$\\":
            parts[-1] += "\\" + ch
        elif ch == "[" and pattern[i + 1:i + 2] == "]":
            parts[-1] += "\\["
        else:
            parts[-1] += ch
        i += 1
    return [f"^({p})$" for p in parts]


def sql_literal(text: str) -> str:
    """A SQL string literal safe whatever standard_conforming_strings is."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _match(column: str, regex: str) -> str | None:
    if regex == "^(.*)$":  # pg_dump optimises "*" away (it also matches what ~ could not)
        return None
    return f"{column} OPERATOR(pg_catalog.~) {sql_literal(regex)} COLLATE pg_catalog.default"


def _too_many(kind: str, pattern: str) -> ConfigError:
    return ConfigError(f"PG_DUMP_OPTIONS: improper qualified name (too many dotted names) in {kind} {pattern!r}",
                       "write schema.table (or database.schema.table)")


def schema_condition(pattern: str) -> str:
    """WHERE condition over namespace ``n`` for a -n/-N pattern (``[database.]schema``)."""
    parts = pattern_regexes(pattern)
    if len(parts) > 2:
        raise _too_many("schema pattern", pattern)
    conds = [c for c in [_match("n.nspname", parts[-1])] if c]
    if len(parts) == 2:
        conds.append(_match("pg_catalog.current_database()", parts[0]) or "true")
    return "(" + (" AND ".join(conds) or "true") + ")"


def table_condition(pattern: str) -> str:
    """WHERE condition over relation ``r`` for a -t/-T pattern (``[[database.]schema.]table``).

    Without a schema part only tables visible in the search path match, as in pg_dump."""
    parts = pattern_regexes(pattern)
    if len(parts) > 3:
        raise _too_many("table pattern", pattern)
    conds = ["r.relkind IN ('r', 'S', 'v', 'm', 'f', 'p')"]
    if len(parts) >= 2:
        conds.append(_match("r.nspname", parts[-2]) or "true")
    else:
        conds.append("pg_catalog.pg_table_is_visible(r.oid)")
    conds.append(_match("r.relname", parts[-1]) or "true")
    if len(parts) == 3:
        conds.append(_match("pg_catalog.current_database()", parts[0]) or "true")
    return "(" + " AND ".join(conds) + ")"


def _any(conditions: list[str]) -> str:
    return " OR ".join(conditions) or "false"


def _table_set(name: str, plain: list[str], children: list[str]) -> str:
    """CTEs ``name`` (and ``name_tree``): oids matching ``plain``, or ``children`` and their descendants."""
    return (f"{name}_tree(oid) AS (SELECT r.oid FROM rel r WHERE {_any([table_condition(p) for p in children])}"
            f" UNION SELECT i.inhrelid FROM {name}_tree k JOIN pg_catalog.pg_inherits i ON i.inhparent = k.oid),\n"
            f"{name}(oid) AS (SELECT r.oid FROM rel r WHERE {_any([table_condition(p) for p in plain])}"
            f" UNION SELECT oid FROM {name}_tree)")


def _sql_bool(value: bool) -> str:
    return "true" if value else "false"


def selection_sql(sel: DumpSelection) -> str:
    """One catalog query: ``[[name, relkind, has_data], ...]`` for every table or materialized view
    whose definition the dump holds (extension members excluded). ``name`` is the quoted
    ``schema.table`` used as the manifest key and in FROM clauses."""
    schema_inc = _any([schema_condition(p) for p in sel.schemas])
    schema_exc = _any([schema_condition(p) for p in sel.exclude_schemas])
    if sel.tables or sel.tables_and_children:
        dumped = "r.oid IN (SELECT oid FROM t_inc)"
    elif sel.schemas:
        dumped = "r.nsp IN (SELECT oid FROM s_inc) AND r.nsp NOT IN (SELECT oid FROM s_exc)"
    else:
        dumped = ("r.nspname NOT IN ('pg_catalog', 'information_schema') AND r.nspname NOT LIKE 'pg\\_%'"
                  " AND r.nsp NOT IN (SELECT oid FROM s_exc)")
    # pg_dump never dumps unlogged data from a standby; a matview's data is its REFRESH
    # (post-data), emitted only when it is populated.
    unlogged = "true" if sel.no_unlogged_data else "pg_catalog.pg_is_in_recovery()"
    has_data = (f"r.oid NOT IN (SELECT oid FROM d_exc) AND NOT (r.relpersistence = 'u' AND {unlogged})"
                f" AND CASE WHEN r.relkind = 'r' THEN {_sql_bool(sel.dumps('data'))}"
                f" ELSE {_sql_bool(sel.dumps('post-data'))} AND r.relispopulated END")
    return f"""
WITH RECURSIVE
rel AS (SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.relispopulated, n.oid AS nsp, n.nspname
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace),
s_inc(oid) AS (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE {schema_inc}),
s_exc(oid) AS (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE {schema_exc}),
{_table_set("t_inc", sel.tables, sel.tables_and_children)},
{_table_set("t_exc", sel.exclude_tables, sel.exclude_tables_and_children)},
{_table_set("d_exc", sel.exclude_data, sel.exclude_data_and_children)}
SELECT coalesce(json_agg(json_build_array(format('%I.%I', r.nspname, r.relname), r.relkind, {has_data})
                         ORDER BY r.nspname, r.relname), '[]'::json)
FROM rel r
WHERE r.relkind IN ('r', 'm') AND {dumped} AND r.oid NOT IN (SELECT oid FROM t_exc)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                  AND d.objid = r.oid AND d.deptype = 'e')
"""
