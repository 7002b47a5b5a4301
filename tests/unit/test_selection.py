"""PG_DUMP_OPTIONS -> pg_dump's table selection: option forms and psql pattern translation."""

from __future__ import annotations

import pytest

from sentinel_backup.config import parse_timeout
from sentinel_backup.errors import ConfigError
from sentinel_backup.logical.selection import parse_options, pattern_regexes


@pytest.mark.parametrize("args", [["-tX"], ["-t", "X"], ["--table=X"], ["--table", "X"],
                                  ["-vtX"], ["-v", "--table", "X", "dbname"]])
def test_every_option_form_selects_the_table(args: list[str]) -> None:
    assert parse_options(args).tables == ["X"]


def test_every_selection_option_is_collected() -> None:
    sel = parse_options(["-n", "a", "-N", "b", "-T", "c", "--exclude-table-data=d", "--table-and-children=e",
                         "--exclude-table-and-children", "f", "--exclude-table-data-and-children=g",
                         "--no-unlogged-table-data", "-Z", "9", "-j", "2", "--lock-wait-timeout=10"])
    assert (sel.schemas, sel.exclude_schemas, sel.exclude_tables, sel.exclude_data) == (["a"], ["b"], ["c"], ["d"])
    assert (sel.tables_and_children, sel.exclude_tables_and_children, sel.exclude_data_and_children) == (
        ["e"], ["f"], ["g"])
    assert sel.no_unlogged_data and not sel.tables and sel.dumps("data")


def test_values_of_other_options_are_not_taken_for_selections() -> None:
    sel = parse_options(["-f", "-t", "--role", "-n", "-E", "UTF8"])
    assert not sel.tables and not sel.schemas


@pytest.mark.parametrize(("args", "data", "post"), [
    ([], True, True), (["-s"], False, False), (["--schema-only"], False, False), (["--no-data"], False, False),
    (["--section=pre-data"], False, False), (["--section=data"], True, False),
    (["--section", "data", "--section", "post-data"], True, True), (["-a"], True, True),
])
def test_which_sections_hold_data(args: list[str], data: bool, post: bool) -> None:
    sel = parse_options(args)
    assert (sel.dumps("data"), sel.dumps("post-data")) == (data, post)


@pytest.mark.parametrize(("args", "needle"), [
    (["--filter=rules.txt"], "--filter"), (["--no-such-option"], "unknown pg_dump option --no-such-option"),
    (["-K"], "unknown pg_dump option -K"), (["--exclude-table-dat=x"], "ambiguous"), (["-t"], "needs a value"),
    (["--schema-only=yes"], "takes no value"),
])
def test_options_that_cannot_be_interpreted_are_config_errors(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options(args)
    assert needle in caught.value.message and caught.value.exit_code == 2


@pytest.mark.parametrize(("pattern", "regexes"), [
    ("orders", ["^(orders)$"]),
    ("Orders", ["^(orders)$"]),
    ('"Orders"', ["^(Orders)$"]),
    ("app.*", ["^(app)$", "^(.*)$"]),
    ("app.ord?rs", ["^(app)$", "^(ord.rs)$"]),
    ('"Weird.Schema"."Odd.Name"', ["^(Weird\\.Schema)$", "^(Odd\\.Name)$"]),
    ('"say ""hi"""', ['^(say "hi")$']),
    ('"a*b"', ["^(a\\*b)$"]),
    ("price$", ["^(price\\$)$"]),
    ("t[0-9]+", ["^(t[0-9]+)$"]),
    ("int[]", ["^(int\\[])$"]),
    ("db.app.t", ["^(db)$", "^(app)$", "^(t)$"]),
    ('My"Mixed"Case', ["^(myMixedcase)$"]),
])
def test_patterns_translate_like_psql(pattern: str, regexes: list[str]) -> None:
    assert pattern_regexes(pattern) == regexes


def test_too_many_dotted_names_are_refused() -> None:
    from sentinel_backup.logical.selection import schema_condition, table_condition

    with pytest.raises(ConfigError, match="too many dotted names"):
        table_condition("a.b.c.d")
    with pytest.raises(ConfigError, match="too many dotted names"):
        schema_condition("a.b.c")


@pytest.mark.parametrize(("text", "seconds"), [("0", 0), ("0s", 0), ("3s", 3), ("5m", 300), ("90", 90)])
def test_lock_wait_timeout_accepts_zero_for_no_limit(text: str, seconds: int) -> None:
    assert parse_timeout(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["-1", "5 minutes", "", "1.5s"])
def test_lock_wait_timeout_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_timeout(text)


def test_unambiguous_abbreviations_resolve_like_getopt_long() -> None:
    assert parse_options(["--exclude-sch=audit"]).exclude_schemas == ["audit"]
