"""The monitoring-plugin line, from check results (pure)."""

from __future__ import annotations

from sentinel_backup.checks import CRITICAL, OK, WARNING, CheckResult, Perf, nagios_report, nagios_unknown


def test_worst_status_decides_and_critical_comes_first() -> None:
    results = [CheckResult("source", OK, "PostgreSQL 16"),
               CheckResult("last run", WARNING, "no run recorded"),
               CheckResult("backup app", CRITICAL, "no backup found\nat all | really")]
    line, code = nagios_report(results)
    assert code == 2
    assert line == ("SENTINEL CRITICAL - backup app: no backup found at all / really; last run: no run recorded"
                    " | 'checks_ok'=1;;;0 'checks_warning'=1;;;0 'checks_critical'=1;;;0")


def test_ok_lists_ages_and_quotes_labels() -> None:
    results = [CheckResult("backup it's", OK, "fine", perf=Perf("backup_age_it's", 5400, "s", None, 93600))]
    line, code = nagios_report(results)
    assert code == 0
    assert line == ("SENTINEL OK - 1 checks ok; newest backups: it's 1.5 h | 'backup_age_it''s'=5400s;;93600;0 "
                    "'checks_ok'=1;;;0 'checks_warning'=0;;;0 'checks_critical'=0;;;0")
    assert nagios_report([CheckResult("x", WARNING, "w")])[1] == 1


def test_unknown() -> None:
    assert nagios_unknown("POSTGRES_USER is required | x") == ("SENTINEL UNKNOWN - POSTGRES_USER is required / x", 3)
