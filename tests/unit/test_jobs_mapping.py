"""The jobs' pure mappings: a run's exit code, its notification event and its metrics, and a
failed drill's notification (one place for the CLI and the jobs)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sentinel_backup.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, Interrupted
from sentinel_backup.jobs.events import drill_failed_event, run_event
from sentinel_backup.jobs.metrics import metrics_for, run_exit_code
from sentinel_backup.logical.drill import DrillReport
from sentinel_backup.logical.run import Outcome, RunResult
from sentinel_backup.model.check import Check
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.notify import EventKind

START = datetime(2026, 12, 3, 3, tzinfo=UTC)


def manifest(db: str, stored: int = 100) -> Manifest:
    return Manifest.model_validate({
        "id": f"{db}_x", "database": db, "artifact": f"sentinel_backup_{db}_x.sql.gz", "created_at": START,
        "finished_at": START, "duration_seconds": 1, "tool_version": "t", "hostname": "h",
        "compression": {"algorithm": "gzip", "level": 6}, "raw_size_bytes": stored * 3, "raw_sha256": "0" * 64,
        "size_bytes": stored, "sha256": "0" * 64})


def good(db: str, *, failed: dict[str, str] | None = None) -> Outcome:
    return Outcome(db, manifest=manifest(db), stored=["local"], failed=failed or {})


def test_exit_codes() -> None:
    assert run_exit_code(RunResult([good("a")], START, 1.0)) == EXIT_OK
    assert run_exit_code(RunResult([good("a", failed={"s3": "down"})], START, 1.0)) == EXIT_PARTIAL
    assert run_exit_code(RunResult([good("a"), Outcome("b", error="boom")], START, 1.0)) == EXIT_FAILURE
    assert run_exit_code(RunResult([good("a")], START, 1.0, Interrupted("stop"))) == EXIT_INTERRUPTED


def test_run_event_names_what_failed_where() -> None:
    result = RunResult([good("a", failed={"s3": "AccessDenied"}), Outcome("b", error="pg_dump failed")],
                       START, 12.34)
    event = run_event(result)
    assert event.kind is EventKind.BACKUP_FAILED
    assert event.error == "b: pg_dump failed\na on s3: AccessDenied"
    assert event.destinations == ["local"] and event.sizes == {"a": 100}
    assert event.counts == {"succeeded": 1, "failed": 1} and event.duration_seconds == 12.3
    assert run_event(RunResult([good("a", failed={"s3": "x"})], START, 1)).kind is EventKind.BACKUP_PARTIAL
    assert run_event(RunResult([good("a")], START, 1)).kind is EventKind.BACKUP_SUCCEEDED


def test_metrics_of_a_run_and_of_drills() -> None:
    result = RunResult([good("a", failed={"s3": "down"}), Outcome("b", error="x")], START, 1.0)
    drill = DrillReport("a_x", "a", "local", "scratch", "2026-12-03T03:00:00Z", passed=True, restore_seconds=2.5)
    metrics = metrics_for(result, [drill])
    by_db = {d.database: d for d in metrics.databases}
    assert by_db["a"].ok and by_db["a"].stored_bytes == 100 and by_db["a"].destinations == {"local": True,
                                                                                             "s3": False}
    assert not by_db["b"].ok and by_db["b"].raw_bytes is None
    assert metrics.scope == frozenset({("a", "database"), ("b", "database")})
    assert not metrics.ok  # a failed database: not a success
    assert [(d.database, d.ok, d.restore_seconds) for d in metrics.drills] == [("a", True, 2.5)]
    alone = metrics_for(None, [drill])
    assert alone.scope is None and alone.finished is None  # a drill alone carries every database forward


def test_a_failed_drill_is_one_notification_naming_the_error_or_the_differences() -> None:
    report = DrillReport("a_x", "a", "local", "scratch", "t", differences={"public.t": {}, "public.u": {}})
    event = drill_failed_event(report)
    assert event.kind is EventKind.VERIFY_FAILED and event.databases == ["a"]
    assert event.error == "2 table(s) differ from the manifest"
    report.error = "restore failed (hint: see the log)"
    assert drill_failed_event(report).error == "restore failed (hint: see the log)"


def test_drill_record_keeps_its_format_with_check_results() -> None:
    import json

    report = DrillReport("a_x", "a", "local", "scratch", "t", passed=False,
                         checks=[Check.of("SELECT true", True, "returned 't'"), Check.of("SELECT 1/0", False, "ERR")])
    doc = json.loads(report.to_json())
    assert doc["checks"] == [{"sql": "SELECT true", "ok": True, "detail": "returned 't'"},
                             {"sql": "SELECT 1/0", "ok": False, "detail": "ERR"}]


def test_the_roles_are_not_a_database_named_globals_in_events_and_metrics() -> None:
    roles = Outcome("globals", "globals", manifest=manifest("roles", 7), stored=["local"])
    failed_roles = Outcome("globals", "globals", error="pg_dumpall failed")
    event = run_event(RunResult([good("globals"), roles], START, 1.0))
    assert event.databases == ["globals"] and event.sizes == {"globals": 100}
    assert event.globals and event.globals_size == 7
    failed = run_event(RunResult([good("globals"), failed_roles], START, 1.0))
    assert failed.error == "roles and tablespaces: pg_dumpall failed" and failed.globals_size is None
    metrics = metrics_for(RunResult([good("globals"), roles], START, 1.0), [])
    assert {(d.database, d.kind) for d in metrics.databases} == {("globals", "database"), ("globals", "globals")}


def test_last_run_record_keeps_the_roles_apart_per_server(tmp_path: Path) -> None:
    """The roles under `globals`, a database named globals under `databases`; a named server's
    record has its own file; an old record (roles in `databases`) still reads."""
    from sentinel_backup.config import settings_from
    from sentinel_backup.jobs.lastrun import GLOBALS_LABEL, last_run_path, outcomes, read_last_run, write_last_run

    base = {"POSTGRES_USER": "u", "POSTGRES_DB": "globals", "BACKUP_DIR": str(tmp_path)}
    roles = Outcome("globals", "globals", error="pg_dumpall failed")
    for server in ("", "db1"):
        settings = settings_from({**base, "SERVER_NAME": server} if server else base)
        write_last_run(settings, RunResult([good("globals"), roles], START, 1.0), EXIT_FAILURE)
        record = read_last_run(settings)
        assert record is not None and record["server"] == server
        assert record["databases"]["globals"]["ok"] and not record["globals"]["ok"]
        assert outcomes(record)[GLOBALS_LABEL]["error"] == "pg_dumpall failed" and outcomes(record)["globals"]["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sentinel-last-run.db1.json", ".sentinel-last-run.json"]
    assert last_run_path(settings).name == ".sentinel-last-run.db1.json"
    old = {"status": "ok", "finished_at": "x", "databases": {"globals": {"ok": True}}}
    assert outcomes(old) == {"globals": {"ok": True}}
