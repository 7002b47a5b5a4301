"""`check --nagios` end to end: one plugin line on stdout, exit 0/1/2/3 as monitors read them."""

from __future__ import annotations

import re
from pathlib import Path

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import Result, cli

LINE = re.compile(r"^SENTINEL (OK|WARNING|CRITICAL|UNKNOWN) - ([^|\n]+?)(?: \| (.+))?$")
PERF = re.compile(r"'([^']+)'=(\d+(?:\.\d+)?)(s?);([\d.]*);([\d.]*);([\d.]*)")


def parsed(result: Result) -> tuple[str, str, dict[str, tuple[float, str, str, str]]]:
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.output  # exactly one line
    match = LINE.match(result.stdout.rstrip("\n"))
    assert match, result.stdout
    perf = {}
    for item in (match.group(3) or "").split(" ") if match.group(3) else []:
        m = PERF.fullmatch(item)
        assert m, item
        perf[m.group(1)] = (float(m.group(2)), m.group(3), m.group(4), m.group(5))
    return match.group(1), match.group(2), perf


def small_db(pg: TempCluster, name: str) -> None:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", name)


def test_ok_warning_critical(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    small_db(pg, new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "MAX_BACKUP_AGE": "2h"}

    none_yet = cli(env, "check", "--nagios")
    state, summary, perf = parsed(none_yet)
    assert (none_yet.code, state) == (2, "CRITICAL")
    assert f"backup {new_db}: no backup found" in summary
    assert perf["checks_critical"][0] >= 1

    assert cli(env, "backup").code == 0
    good = cli(env, "check", "--nagios")
    state, summary, perf = parsed(good)
    assert (good.code, state) == (0, "OK"), good.output
    assert re.search(rf"\d+ checks ok; newest backups: {new_db} 0\.0 h", summary), summary
    age, unit, warn, crit = perf[f"backup_age_{new_db}"]
    assert unit == "s" and 0 <= age < 120 and warn == "" and crit == "7200"
    assert perf["checks_warning"][0] == 0 and perf["checks_critical"][0] == 0
    assert "[INFO]" not in good.stdout  # log lines never reach the plugin output
    assert parsed(cli(env, "check", "--nagios", "--quiet"))[0] == "OK"  # --quiet never hides the line

    (Path(env["BACKUP_DIR"]) / ".sentinel-last-run.json").unlink()  # no run recorded: a warning
    warned = cli(env, "check", "--nagios")
    state, summary, _ = parsed(warned)
    assert (warned.code, state) == (1, "WARNING"), warned.output
    assert summary.startswith("last run: ")

    assert cli(env, "check").code == 4  # the other modes keep their codes
    assert cli(env, "check", "--json").code == 4


def test_unknown_when_the_check_cannot_run(tmp_path: Path) -> None:
    result = cli({"CWD": str(tmp_path), "BACKUP_DIR": str(tmp_path)}, "check", "--nagios")  # no POSTGRES_USER
    state, summary, perf = parsed(result)
    assert (result.code, state) == (3, "UNKNOWN")
    assert "POSTGRES_USER" in summary and perf == {}
    assert cli({"CWD": str(tmp_path)}, "check", "--nagios", "--json").code == 2
