"""METRICS_FILE from real runs (backup, failed backup, drills), read back with prometheus_client's parser."""

from __future__ import annotations

import json
import stat
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel_backup import __version__
from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli, promtool_check
from tests.plugins.s3 import WeedServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def db(pg: TempCluster, new_db: str) -> str:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", new_db)
    return new_db


def read(path: Path) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.name.startswith("sentinel_backup_") and family.type == "gauge", family
        for s in family.samples:
            samples[(s.name.removeprefix("sentinel_backup_"), tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample of the unnamed server (``server=""``); of a database's backups (``kind="database"``)
    unless ``kind`` is given."""
    defaults = {"server": "", **({"kind": "database"} if "database" in labels else {})}
    return samples[(name, tuple(sorted({**defaults, **labels}.items())))]


def manifest_of(env: dict[str, str]) -> dict[str, object]:
    item = cli(env, "list", "--json").json()[0]
    doc: dict[str, object] = json.loads((Path(env["BACKUP_DIR"]) / f"{item['artifact']}.manifest.json").read_text())
    return doc


def ts(text: object) -> float:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def test_metrics_after_success_then_failure(pg: TempCluster, db: str, base_env: dict[str, str],
                                            tmp_path: Path) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    metrics = folder / "sentinel.prom"
    env = {**base_env, "POSTGRES_DB": db, "METRICS_FILE": str(metrics)}
    assert cli(env, "backup").code == 0

    samples = read(metrics)
    manifest = manifest_of(env)
    assert value(samples, "last_run_success") == 1
    assert value(samples, "last_success_timestamp_seconds", database=db) == pytest.approx(ts(manifest["finished_at"]))
    assert value(samples, "raw_bytes", database=db) == manifest["raw_size_bytes"]
    assert value(samples, "stored_bytes", database=db) == manifest["size_bytes"]
    assert value(samples, "result", database=db, destination="local") == 1
    assert value(samples, "duration_seconds", database=db) >= 0
    first_run = value(samples, "last_run_timestamp_seconds")
    assert first_run >= value(samples, "last_success_timestamp_seconds", database=db)
    assert not any(name.startswith("drill_") for name, _ in samples)  # no drill has run yet
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o600  # private when new (chmod 644 once for node_exporter: kept)
    assert sorted(p.name for p in folder.iterdir()) == [".sentinel.prom.lock", "sentinel.prom"]  # no temp file

    # The database disappears: the run fails, the last success is carried forward.
    pg.psql(f"DROP DATABASE {db} WITH (FORCE)")
    failed = cli(env, "backup")
    assert failed.code == 1, failed.output
    after = read(metrics)
    assert value(after, "last_run_success") == 0
    assert value(after, "last_run_timestamp_seconds") > first_run
    assert value(after, "last_success_timestamp_seconds", database=db) == value(
        samples, "last_success_timestamp_seconds", database=db)
    assert value(after, "raw_bytes", database=db) == manifest["raw_size_bytes"]
    assert value(after, "stored_bytes", database=db) == manifest["size_bytes"]
    assert value(after, "result", database=db, destination="local") == 0
    assert sorted(p.name for p in folder.iterdir()) == [".sentinel.prom.lock", "sentinel.prom"]


def test_drills_set_the_drill_gauges(pg: TempCluster, db: str, base_env: dict[str, str], tmp_path: Path) -> None:
    metrics = tmp_path / "sentinel.prom"
    env = {**base_env, "POSTGRES_DB": db, "METRICS_FILE": str(metrics)}
    assert cli(env, "backup").code == 0
    backup = read(metrics)

    assert cli(env, "verify", "latest", "--restore").code == 0
    item = cli(env, "list", "--json").json()[0]
    samples = read(metrics)
    assert value(samples, "drill_success", database=db) == 1
    assert value(samples, "drill_restore_seconds", database=db) == item["drill"]["restore_seconds"]
    assert value(samples, "drill_last_timestamp_seconds", database=db) >= ts(item["drill"]["started_at"])
    for key, old in backup.items():  # a drill alone carries every backup gauge forward unchanged
        assert samples[key] == old, key

    # A failing drill (the manifest's count altered) turns drill_success to 0 and keeps the last restore time.
    path = Path(env["BACKUP_DIR"]) / f"{item['artifact']}.manifest.json"
    doc = json.loads(path.read_text())
    doc["tables"]["public.t"] = 1
    path.write_text(json.dumps(doc))
    assert cli(env, "verify", "latest", "--restore").code == 1
    failed = read(metrics)
    assert value(failed, "drill_success", database=db) == 0
    assert value(failed, "drill_last_timestamp_seconds", database=db) >= value(
        samples, "drill_last_timestamp_seconds", database=db)
    assert value(failed, "last_success_timestamp_seconds", database=db) == value(
        backup, "last_success_timestamp_seconds", database=db)


def test_backup_with_restore_drill_reports_both(db: str, base_env: dict[str, str], tmp_path: Path) -> None:
    metrics = tmp_path / "sentinel.prom"
    env = {**base_env, "POSTGRES_DB": db, "METRICS_FILE": str(metrics), "VERIFY_AFTER_BACKUP": "restore"}
    assert cli(env, "backup").code == 0
    samples = read(metrics)
    item = cli(env, "list", "--json").json()[0]
    assert value(samples, "last_run_success") == 1
    assert value(samples, "result", database=db, destination="local") == 1
    assert value(samples, "drill_success", database=db) == 1
    assert value(samples, "drill_restore_seconds", database=db) == item["drill"]["restore_seconds"]


def test_unwritable_metrics_file_is_a_warning_only(db: str, base_env: dict[str, str], tmp_path: Path) -> None:
    env = {**base_env, "POSTGRES_DB": db, "METRICS_FILE": str(tmp_path / "missing-folder" / "sentinel.prom")}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    assert any("[WARN]" in line and "METRICS_FILE" in line for line in result.output.splitlines()), result.output


def test_a_database_no_longer_backed_up_loses_its_series(pg: TempCluster, db: str, base_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    other = f"{db}_other"
    pg.psql(f"CREATE DATABASE {other}")
    try:
        pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", other)
        metrics = tmp_path / "sentinel.prom"
        env = {**base_env, "POSTGRES_DB": f"{db},{other}", "METRICS_FILE": str(metrics)}
        assert cli(env, "backup").code == 0
        both = read(metrics)
        promtool_check(metrics.read_bytes())
        listed = cli(env, "list", "--json").json()
        assert value(both, "destination_backups", destination="local") == len(listed) == 3  # with globals
        assert value(both, "destination_stored_bytes", destination="local") == sum(i["size_bytes"] for i in listed)
        assert value(both, "destination_oldest_backup_timestamp_seconds", destination="local") == pytest.approx(
            min(ts(i["created_at"]) for i in listed))
        assert value(both, "last_success_timestamp_seconds", database=other) > 0
        info = [labels for name, labels in both if name == "build_info"]
        assert info and dict(info[0])["version"] == __version__

        env["POSTGRES_DB"] = db  # `other` is no longer backed up
        assert cli(env, "backup").code == 0
        after = read(metrics)
        assert not [key for key in after if ("database", other) in key[1]], after
        stored = len(cli(env, "list", "--json").json())
        assert value(after, "destination_backups", destination="local") == stored == 4  # its backups stay
        promtool_check(metrics.read_bytes())
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {other} WITH (FORCE)", check=False)


def test_inventory_per_destination_with_s3(db: str, base_env: dict[str, str], tmp_path: Path,
                                           s3_server: WeedServer, s3_bucket: str) -> None:
    metrics = tmp_path / "sentinel.prom"
    env = {**base_env, **s3_server.s3_env(s3_bucket, "inventory"), "POSTGRES_DB": db, "METRICS_FILE": str(metrics),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    assert cli(env, "backup").code == 0
    samples = read(metrics)
    [item] = [i for i in cli(env, "list", "--json").json() if i["kind"] == "database"]
    for destination in ("local", "s3"):
        assert value(samples, "destination_backups", destination=destination) == 1
        assert value(samples, "destination_stored_bytes", destination=destination) == item["size_bytes"]
        assert value(samples, "destination_oldest_backup_timestamp_seconds", destination=destination) == \
            pytest.approx(ts(item["created_at"]))
    promtool_check(metrics.read_bytes())
