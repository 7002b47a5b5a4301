"""`sentinel-backup check` end to end: exit codes a monitor can use (0 ok, 4 warning, 1 critical).

The clock is "injected" by dating the newest manifest back (the manifest is plain JSON;
verify's SHA-256 covers the artifact only).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import Result, cli
from tests.plugins.s3 import WeedServer

OK, WARNING, CRITICAL = 0, 4, 1


def small_db(pg: TempCluster, name: str) -> None:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", name)


def checks(result: Result) -> dict[str, dict[str, Any]]:
    """The --json output by check name; asserts its shape on the way."""
    doc = result.json()
    assert set(doc) == {"status", "checks"}
    assert doc["status"] == {OK: "ok", WARNING: "warning", CRITICAL: "critical"}[result.code]
    by_name = {}
    for item in doc["checks"]:
        assert set(item) == {"name", "status", "ok", "detail", "hint"}, item
        assert item["status"] in ("ok", "warning", "critical") and item["ok"] == (item["status"] == "ok")
        by_name[item["name"]] = item
    return by_name


def statuses(result: Result) -> dict[str, str]:
    return {name: item["status"] for name, item in checks(result).items()}


def newest_manifest(env: dict[str, str]) -> Path:
    return sorted(Path(env["BACKUP_DIR"]).glob("*.manifest.json"))[-1]


def test_fresh_backup_is_ok(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    small_db(pg, new_db)
    env = {**base_env, "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0

    result = cli(env, "check", "--json")
    assert result.code == OK, result.output
    found = checks(result)
    assert statuses(result) == {
        "configuration": "ok", "source": "ok", "pg_dump": "ok", "encryption": "ok", "destination local": "ok",
        f"backup {new_db}": "ok", "last run": "ok", f"drill {new_db}": "ok"}
    assert "0.0 h old" in found[f"backup {new_db}"]["detail"]
    assert "has not been drilled" in found[f"drill {new_db}"]["detail"]  # not expected without VERIFY_AFTER_BACKUP

    human = cli(env, "check")
    assert human.code == OK
    assert all(line.startswith("OK") for line in human.stdout.splitlines()), human.stdout
    assert not list(Path(env["BACKUP_DIR"]).glob("sentinel-backup-check-probe*"))  # the probe was deleted


def test_stale_backup_is_critical_naming_the_database(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    small_db(pg, new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "MAX_BACKUP_AGE": "26h"}
    assert cli(env, "backup").code == 0
    path = newest_manifest(env)
    doc = json.loads(path.read_text())
    then = datetime.now(UTC) - timedelta(days=3)
    doc["created_at"] = then.isoformat()
    doc["finished_at"] = (then + timedelta(seconds=1)).isoformat()
    path.write_text(json.dumps(doc))

    result = cli(env, "check", "--json")
    assert result.code == CRITICAL, result.output
    item = checks(result)[f"backup {new_db}"]
    assert item["status"] == "critical" and "3.0 d old" in item["detail"] and "MAX_BACKUP_AGE 26h" in item["detail"]
    assert item["hint"]
    assert [n for n, s in statuses(result).items() if s != "ok"] == [f"backup {new_db}"]

    human = cli(env, "check")
    assert human.code == CRITICAL
    assert any(line.startswith("CRITICAL") and new_db in line for line in human.stdout.splitlines()), human.stdout

    relaxed = cli({**env, "MAX_BACKUP_AGE": "4d"}, "check", "--json")  # the same backup within a longer limit
    assert relaxed.code == OK, relaxed.output


def test_no_backup_at_all_is_critical(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    small_db(pg, new_db)
    env = {**base_env, "POSTGRES_DB": new_db}
    result = cli(env, "check", "--json")
    assert result.code == CRITICAL, result.output
    found = checks(result)
    assert found[f"backup {new_db}"]["status"] == "critical"
    assert found[f"backup {new_db}"]["detail"] == "no backup found"
    assert found["last run"]["status"] == "warning"

    human = cli(env, "check")
    assert human.code == CRITICAL
    assert f"backup {new_db}" in human.stdout and "no backup found" in human.stdout


def test_destination_down_is_critical_naming_it(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                                weed_factory: Callable[[], WeedServer]) -> None:
    small_db(pg, new_db)
    server = weed_factory()
    bucket = server.create_bucket()
    env = {**base_env, **server.minio_env(bucket), "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0
    up = cli(env, "check", "--json")
    assert up.code == OK, up.output
    assert checks(up)["destination minio"]["status"] == "ok"

    server.stop()
    result = cli(env, "check", "--json")
    assert result.code == CRITICAL, result.output
    found = checks(result)
    assert found["destination minio"]["status"] == "critical"
    assert found["destination local"]["status"] == "ok"
    assert found[f"backup {new_db}"]["status"] == "ok"  # the copy in BACKUP_DIR is still fresh
    assert [n for n, s in statuses(result).items() if s != "ok"] == ["destination minio"]
    human = cli(env, "check")
    assert human.code == CRITICAL
    assert any(line.startswith("CRITICAL") and "destination minio" in line for line in human.stdout.splitlines())


def test_destination_on_a_closed_port_is_critical(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                                  closed_url: str) -> None:
    small_db(pg, new_db)
    endpoint = closed_url.removesuffix("/hook")
    env = {**base_env, "POSTGRES_DB": new_db, "MINIO_ENABLED": "true", "MINIO_ENDPOINT": endpoint,
           "MINIO_BUCKET": "nowhere", "MINIO_ACCESS_KEY": "k", "MINIO_SECRET_KEY": "secret-value-1234"}
    result = cli(env, "check", "--json")
    assert result.code == CRITICAL, result.output
    found = checks(result)
    assert found["destination minio"]["status"] == "critical"
    assert "secret-value-1234" not in result.output


def test_source_down_is_critical(pg: TempCluster, new_db: str, base_env: dict[str, str], closed_url: str) -> None:
    port = closed_url.split(":")[2].split("/")[0]
    env = {**base_env, "POSTGRES_DB": new_db, "POSTGRES_PORT": port}
    result = cli(env, "check", "--json")
    assert result.code == CRITICAL, result.output
    found = checks(result)
    assert found["source"]["status"] == "critical" and found["source"]["hint"]


def write_last_run(env: dict[str, str], status: str, database: str, **entry: Any) -> None:
    record = {"finished_at": datetime.now(UTC).isoformat(), "started_at": datetime.now(UTC).isoformat(),
              "exit_code": {"ok": 0, "partial": 3}.get(status, 1), "status": status,
              "databases": {database: {"ok": status != "failed", "error": None, "failed_destinations": {},
                                       "backup": None, **entry}}}
    (Path(env["BACKUP_DIR"]) / ".sentinel-last-run.json").write_text(json.dumps(record))


def test_partial_last_run_is_a_warning(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    small_db(pg, new_db)
    env = {**base_env, "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0
    write_last_run(env, "partial", new_db, failed_destinations={"s3": "bucket unreachable"})

    result = cli(env, "check", "--json")
    assert result.code == WARNING, result.output
    found = checks(result)
    assert found["last run"]["status"] == "warning"
    assert "partial" in found["last run"]["detail"] and "bucket unreachable" in found["last run"]["detail"]
    assert [n for n, s in statuses(result).items() if s != "ok"] == ["last run"]
    human = cli(env, "check")
    assert human.code == WARNING and any(line.startswith("WARNING") and "last run" in line
                                         for line in human.stdout.splitlines())

    write_last_run(env, "failed", new_db, error="pg_dump: connection refused")
    failed = cli(env, "check", "--json")
    assert failed.code == CRITICAL
    assert "connection refused" in checks(failed)["last run"]["detail"]


def test_drill_results_are_checked(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    small_db(pg, new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "VERIFY_AFTER_BACKUP": "restore"}
    assert cli({**env, "VERIFY_AFTER_BACKUP": "integrity"}, "backup").code == 0
    undrilled = cli(env, "check", "--json")  # drills are expected now, and this backup has none
    assert undrilled.code == WARNING, undrilled.output
    assert checks(undrilled)[f"drill {new_db}"]["status"] == "warning"

    assert cli(env, "verify", "latest", "--restore").code == 0
    passed = cli(env, "check", "--json")
    assert passed.code == OK, passed.output
    assert "1 tables match" in checks(passed)[f"drill {new_db}"]["detail"]

    path = newest_manifest(env)
    doc = json.loads(path.read_text())
    doc["tables"]["public.t"] = 1999
    path.write_text(json.dumps(doc))
    assert cli(env, "verify", "latest", "--restore").code == 1
    failed = cli(env, "check", "--json")
    assert failed.code == CRITICAL, failed.output
    drill = checks(failed)[f"drill {new_db}"]
    assert drill["status"] == "critical" and "public.t" in drill["detail"]
