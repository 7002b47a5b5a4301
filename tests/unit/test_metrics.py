"""metrics: the written file parses back, carries state forward, and is replaced atomically."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from sentinel_backup import __version__, metrics
from sentinel_backup.errors import SentinelError
from sentinel_backup.metrics import (
    DatabaseResult,
    DestinationInventory,
    DrillResult,
    RunMetrics,
    inventory,
    write_metrics,
)
from tests.helpers import promtool_check

T0 = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)


DEFAULT_LABELS = {("server", ""), ("kind", "database")}  # the unnamed server, a database's series


def parse(path: Path, *, every_label: bool = False) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric name -> {sorted label pairs -> value}, read with the Prometheus parser; without
    ``every_label``, the labels of the unnamed server's database series are left out."""
    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_bytes().decode()):
        assert family.type == "gauge"
        for sample in family.samples:
            labels = [p for p in sorted(sample.labels.items()) if every_label or p not in DEFAULT_LABELS]
            values.setdefault(sample.name, {})[tuple(labels)] = sample.value
    return values


def db_value(values: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, database: str,
             **labels: str) -> float:
    return values["sentinel_backup_" + name][tuple(sorted({"database": database, **labels}.items()))]


def ok_result(database: str, start: datetime, *, raw: int = 1000, stored: int = 300) -> DatabaseResult:
    return DatabaseResult(database, True, start, start + timedelta(seconds=42), raw, stored,
                          {"local": True, "s3": True})


def test_successful_run_writes_every_gauge(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    run = RunMetrics(T0 + timedelta(minutes=1), True, [ok_result("shop", T0)],
                     [DrillResult("shop", True, T0 + timedelta(minutes=5), 12.5)])
    write_metrics(path, run)

    values = parse(path)
    assert values["sentinel_backup_last_run_timestamp_seconds"][()] == (T0 + timedelta(minutes=1)).timestamp()
    assert values["sentinel_backup_last_run_success"][()] == 1.0
    assert db_value(values, "last_success_timestamp_seconds", "shop") == (T0 + timedelta(seconds=42)).timestamp()
    assert db_value(values, "duration_seconds", "shop") == 42.0
    assert db_value(values, "raw_bytes", "shop") == 1000
    assert db_value(values, "stored_bytes", "shop") == 300
    assert db_value(values, "result", "shop", destination="local") == 1.0
    assert db_value(values, "result", "shop", destination="s3") == 1.0
    assert db_value(values, "drill_success", "shop") == 1.0
    assert db_value(values, "drill_restore_seconds", "shop") == 12.5
    assert db_value(values, "drill_last_timestamp_seconds", "shop") == (T0 + timedelta(minutes=5)).timestamp()
    assert all(name.startswith("sentinel_backup_") for name in values)


def test_failed_run_keeps_last_success_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, True, [ok_result("shop", T0)], [DrillResult("shop", True, T0, 9.0)]))
    failed = DatabaseResult("shop", False, T0 + DAY, T0 + DAY + timedelta(seconds=7), 5, 1,
                            {"local": True, "s3": False})
    write_metrics(path, RunMetrics(T0 + DAY, False, [failed]))

    values = parse(path)
    assert values["sentinel_backup_last_run_success"][()] == 0.0
    assert values["sentinel_backup_last_run_timestamp_seconds"][()] == (T0 + DAY).timestamp()
    assert db_value(values, "last_success_timestamp_seconds", "shop") == (T0 + timedelta(seconds=42)).timestamp()
    assert db_value(values, "raw_bytes", "shop") == 1000  # of the last good backup, not the failed one
    assert db_value(values, "stored_bytes", "shop") == 300
    assert db_value(values, "duration_seconds", "shop") == 7.0  # the newest attempt
    assert db_value(values, "result", "shop", destination="local") == 1.0
    assert db_value(values, "result", "shop", destination="s3") == 0.0
    assert db_value(values, "drill_success", "shop") == 1.0  # no drill this run: carried forward
    assert db_value(values, "drill_restore_seconds", "shop") == 9.0


def test_failure_before_any_destination_reports_known_destinations_as_failed(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, True, [ok_result("shop", T0)]))
    write_metrics(path, RunMetrics(T0 + DAY, False, [DatabaseResult("shop", False, T0 + DAY, T0 + DAY)]))

    values = parse(path)
    assert db_value(values, "result", "shop", destination="local") == 0.0
    assert db_value(values, "result", "shop", destination="s3") == 0.0


def test_success_drops_a_destination_no_longer_used(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, True, [ok_result("shop", T0)]))
    local_only = DatabaseResult("shop", True, T0 + DAY, T0 + DAY, 1, 1, {"local": True})
    write_metrics(path, RunMetrics(T0 + DAY, True, [local_only]))

    results = parse(path)["sentinel_backup_result"]
    assert list(results) == [(("database", "shop"), ("destination", "local"))]


def test_databases_not_in_this_run_are_carried_forward(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, True, [ok_result("shop", T0), ok_result("crm", T0, raw=77)]))
    write_metrics(path, RunMetrics(T0 + DAY, True, [ok_result("shop", T0 + DAY)]))

    values = parse(path)
    assert db_value(values, "last_success_timestamp_seconds", "crm") == (T0 + timedelta(seconds=42)).timestamp()
    assert db_value(values, "raw_bytes", "crm") == 77
    assert db_value(values, "last_success_timestamp_seconds", "shop") == (T0 + DAY + timedelta(seconds=42)).timestamp()


def test_databases_outside_the_run_scope_disappear(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    failed = DatabaseResult("crm", False, T0, T0 + timedelta(seconds=3), destinations={"local": False})
    write_metrics(path, RunMetrics(T0, False, [ok_result("shop", T0), failed],
                                   [DrillResult("crm", True, T0, 1.0)], scope=frozenset({"shop", "crm"})))
    assert db_value(parse(path), "last_failure_timestamp_seconds", "crm") == (T0 + timedelta(seconds=3)).timestamp()
    write_metrics(path, RunMetrics(T0 + DAY, True, [ok_result("shop", T0 + DAY)], scope=frozenset({"shop"})))

    text = path.read_text()
    assert 'database="crm"' not in text  # every series of crm: success, failure, result, drill
    newest = (T0 + DAY + timedelta(seconds=42)).timestamp()
    assert db_value(parse(path), "last_success_timestamp_seconds", "shop") == newest
    write_metrics(path, RunMetrics(None, True, drills=[DrillResult("shop", True, T0 + DAY)]))  # no scope: kept
    assert db_value(parse(path), "raw_bytes", "shop") == 1000
    promtool_check(path.read_bytes())


def test_last_failure_survives_a_later_success(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, False, [DatabaseResult("shop", False, T0, T0 + timedelta(seconds=1))]))
    write_metrics(path, RunMetrics(T0 + DAY, True, [ok_result("shop", T0 + DAY)]))
    assert db_value(parse(path), "last_failure_timestamp_seconds", "shop") == (T0 + timedelta(seconds=1)).timestamp()


def test_destination_inventory_and_build_info(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    held = inventory([(T0, 100, ["local", "s3"]), (T0 + DAY, 50, ["local"]), (T0 - DAY, 7, ["tape"])],
                     ["local", "s3", "minio"], ["gone"])
    assert held == {"local": DestinationInventory(2, 150, T0), "s3": DestinationInventory(1, 100, T0),
                    "minio": DestinationInventory(0, 0, None), "gone": None}
    write_metrics(path, RunMetrics(T0, True, inventory=held))
    values = parse(path)
    assert values["sentinel_backup_destination_backups"] == {
        (("destination", "local"),): 2, (("destination", "s3"),): 1, (("destination", "minio"),): 0}
    assert values["sentinel_backup_destination_stored_bytes"][(("destination", "local"),)] == 150
    assert values["sentinel_backup_destination_oldest_backup_timestamp_seconds"] == {
        (("destination", "local"),): T0.timestamp(), (("destination", "s3"),): T0.timestamp()}
    [info] = values["sentinel_backup_build_info"].items()
    assert info[1] == 1 and dict(info[0])["version"] == __version__ and "python" in dict(info[0])
    promtool_check(path.read_bytes())

    # s3 could not be listed: its values stay; minio no longer configured: dropped
    write_metrics(path, RunMetrics(T0 + DAY, True, inventory={"local": DestinationInventory(1, 50, T0 + DAY),
                                                               "s3": None}))
    assert parse(path)["sentinel_backup_destination_backups"] == {
        (("destination", "local"),): 1, (("destination", "s3"),): 1}
    write_metrics(path, RunMetrics(T0 + DAY, True))  # no inventory taken: carried forward
    assert parse(path)["sentinel_backup_destination_backups"][(("destination", "s3"),)] == 1


def test_drill_only_run_keeps_run_gauges_and_failed_drill_keeps_restore_time(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, True, [ok_result("shop", T0)], [DrillResult("shop", True, T0, 30.0)]))
    write_metrics(path, RunMetrics(None, False, drills=[DrillResult("shop", False, T0 + DAY)]))

    values = parse(path)
    assert values["sentinel_backup_last_run_success"][()] == 1.0
    assert values["sentinel_backup_last_run_timestamp_seconds"][()] == T0.timestamp()
    assert db_value(values, "drill_success", "shop") == 0.0
    assert db_value(values, "drill_last_timestamp_seconds", "shop") == (T0 + DAY).timestamp()
    assert db_value(values, "drill_restore_seconds", "shop") == 30.0


def test_first_drill_only_run_writes_no_run_gauges(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(None, True, drills=[DrillResult("shop", True, T0, 1.5)]))

    values = parse(path)
    assert "sentinel_backup_last_run_success" not in values
    assert "sentinel_backup_last_run_timestamp_seconds" not in values
    assert db_value(values, "drill_success", "shop") == 1.0


def test_damaged_previous_file_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sentinel.prom"
    path.write_text('sentinel_backup_raw_bytes{database="shop" 12\n')
    write_metrics(path, RunMetrics(T0, True, [ok_result("crm", T0)]))

    values = parse(path)
    assert db_value(values, "raw_bytes", "crm") == 1000
    assert ("database", "shop") not in {k[0] for k in values["sentinel_backup_raw_bytes"]}
    assert "cannot parse the previous metrics file" in caplog.text


def test_foreign_metrics_in_previous_file_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    path.write_text("# TYPE other_metric gauge\nother_metric 5\n"
                    "# TYPE sentinel_backup_retired gauge\nsentinel_backup_retired 1\n")
    write_metrics(path, RunMetrics(T0, True))
    assert set(parse(path)) == {"sentinel_backup_last_run_timestamp_seconds", "sentinel_backup_last_run_success",
                                "sentinel_backup_build_info"}


def test_write_goes_through_a_temp_file_in_the_same_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sentinel.prom"
    path.write_text("# TYPE sentinel_backup_last_run_success gauge\nsentinel_backup_last_run_success 1\n")
    old_text = path.read_text()
    renames: list[tuple[Path, Path, str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # at the moment of the rename: the final name still holds the complete old file,
        # and the temp file already holds the complete new one
        renames.append((Path(src), Path(dst), Path(dst).read_text(), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(metrics.os, "replace", spy)
    write_metrics(path, RunMetrics(T0, False))

    [(src, dst, before, staged)] = renames
    assert dst == path
    assert src.parent == path.parent
    assert src.name.startswith(".") and not src.name.endswith(".prom")  # invisible to the textfile collector
    assert before == old_text
    assert staged == path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sentinel.prom.lock", "sentinel.prom"]  # no temp file
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, True))
    old_text = path.read_text()

    def broken(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.os, "replace", broken)
    with pytest.raises(SentinelError, match="cannot write METRICS_FILE") as info:
        write_metrics(path, RunMetrics(T0 + DAY, False))
    assert info.value.hint
    assert path.read_text() == old_text
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sentinel.prom.lock", "sentinel.prom"]  # no temp file


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SentinelError, match="METRICS_FILE") as info:
        write_metrics(tmp_path / "nope" / "sentinel.prom", RunMetrics(T0, True))
    assert info.value.hint is not None and "nope" in info.value.hint


database_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(name=database_names, raw=st.integers(0, 2**53), seconds=st.floats(0, 1e6, allow_nan=False))
def test_any_database_name_and_value_round_trip(tmp_path_factory: pytest.TempPathFactory, name: str, raw: int,
                                                seconds: float) -> None:
    path = tmp_path_factory.mktemp("m") / "sentinel.prom"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    result = DatabaseResult(name, True, start, start + timedelta(seconds=seconds), raw, raw, {"local": True})
    write_metrics(path, RunMetrics(start, True, [result]))
    write_metrics(path, RunMetrics(start + DAY, False, [DatabaseResult(name, False, start, start)]))

    values = parse(path)
    assert db_value(values, "raw_bytes", name) == raw
    assert db_value(values, "last_success_timestamp_seconds", name) == (start + timedelta(seconds=seconds)).timestamp()
    assert db_value(values, "result", name, destination="local") == 0.0


def test_two_servers_share_one_file_without_touching_each_others_series(tmp_path: Path) -> None:
    """Every series carries `server`; a run's scope and inventory only drop its own server's."""
    path = tmp_path / "sentinel.prom"
    write_metrics(path, RunMetrics(T0, True, [ok_result("postgres", T0), ok_result("crm", T0)], server="db1",
                                   scope=frozenset({"postgres", "crm"}),
                                   inventory={"local": DestinationInventory(2, 600, T0)}))
    write_metrics(path, RunMetrics(T0 + DAY, False, [DatabaseResult("postgres", False, T0 + DAY, T0 + DAY)],
                                   server="db2", scope=frozenset({"postgres"}),
                                   inventory={"local": DestinationInventory(0, 0, None)}))
    values = parse(path, every_label=True)
    one = (("database", "postgres"), ("kind", "database"), ("server", "db1"))
    two = (("database", "postgres"), ("kind", "database"), ("server", "db2"))
    success = values["sentinel_backup_last_success_timestamp_seconds"]
    assert success[one] == (T0 + timedelta(seconds=42)).timestamp() and two not in success
    assert values["sentinel_backup_last_failure_timestamp_seconds"] == {two: (T0 + DAY).timestamp()}
    assert (("database", "crm"), ("kind", "database"), ("server", "db1")) in success  # not db2's to drop
    assert values["sentinel_backup_last_run_success"] == {(("server", "db1"),): 1.0, (("server", "db2"),): 0.0}
    assert values["sentinel_backup_destination_backups"] == {
        (("destination", "local"), ("server", "db1")): 2, (("destination", "local"), ("server", "db2")): 0}
    promtool_check(path.read_bytes())


def test_the_roles_and_a_database_named_globals_are_two_series(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    roles = DatabaseResult("globals", True, T0, T0 + timedelta(seconds=1), 10, 5, {"local": True}, kind="globals")
    write_metrics(path, RunMetrics(T0, True, [ok_result("globals", T0), roles],
                                   scope=frozenset({("globals", "database"), ("globals", "globals")})))
    raw = parse(path)["sentinel_backup_raw_bytes"]
    assert raw == {(("database", "globals"),): 1000, (("database", "globals"), ("kind", "globals")): 10}
    write_metrics(path, RunMetrics(T0 + DAY, True, [roles], scope=frozenset({("globals", "globals")})))
    assert parse(path)["sentinel_backup_raw_bytes"] == {(("database", "globals"), ("kind", "globals")): 10}
    promtool_check(path.read_bytes())


def test_a_file_written_before_server_and_kind_is_carried_forward(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.prom"
    path.write_text('# TYPE sentinel_backup_raw_bytes gauge\nsentinel_backup_raw_bytes{database="shop"} 12\n'
                    'sentinel_backup_raw_bytes{database="globals"} 3\n'
                    '# TYPE sentinel_backup_last_run_success gauge\nsentinel_backup_last_run_success 1\n')
    write_metrics(path, RunMetrics(None, True))
    values = parse(path, every_label=True)
    assert values["sentinel_backup_raw_bytes"] == {
        (("database", "shop"), ("kind", "database"), ("server", "")): 12,
        (("database", "globals"), ("kind", "globals"), ("server", "")): 3}
    assert values["sentinel_backup_last_run_success"] == {(("server", ""),): 1.0}


def test_servers_writing_one_file_at_once_lose_no_update(tmp_path: Path) -> None:
    """Servers with their own BACKUP_DIR (own run locks) sharing one METRICS_FILE write at once: each
    read-merge-write takes its turn and every server's series is in the file at the end."""
    import multiprocessing

    path = tmp_path / "sentinel.prom"
    servers = [f"db{n}" for n in range(4)]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(path, server)) for server in servers]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    values = parse(path, every_label=True)
    runs = values["sentinel_backup_last_run_success"]
    assert sorted(dict(labels)["server"] for labels in runs) == servers
    successes = values["sentinel_backup_last_success_timestamp_seconds"]
    assert len(successes) == len(servers) * 5  # every database of every server


def _write_many(path: Path, server: str) -> None:
    for n in range(5):
        write_metrics(path, RunMetrics(T0, True, [ok_result(f"shop{n}", T0)], server=server))
