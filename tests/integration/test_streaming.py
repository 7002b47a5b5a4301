"""A few hundred MB through the whole pipeline, and the log formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import assert_same_data, cli


@pytest.mark.slow
def test_large_table_round_trip(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    """~300 MB of dump text, generated in SQL, backed up (zstd) and restored, content compared."""
    pg.psql("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h, repeat(chr(65 + g % 26), 150 + g % 50) AS body,"
            " now() - g * interval '1 second' AS at FROM generate_series(1, 1200000) g", new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "COMPRESSION": "zstd"}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    item = cli(env, "list", "--json").json()[0]
    assert item["raw_size_bytes"] > 250_000_000
    assert item["size_bytes"] < item["raw_size_bytes"] / 5
    target = f"{new_db}_big"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create")
    assert restored.code == 0, restored.output
    try:
        fingerprints = assert_same_data(pg, new_db, target)
        assert fingerprints["public.big"].startswith("1200000:")
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}")


def test_json_log_lines_and_log_file(pg: TempCluster, new_db: str, base_env: dict[str, str], tmp_path: Path) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n", new_db)
    log_file = tmp_path / "logs" / "sentinel.log"
    env = {**base_env, "POSTGRES_DB": new_db, "LOG_FORMAT": "json", "LOG_FILE": str(log_file)}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"timestamp", "level", "event"} <= set(records[0])
    done = records[-1]
    assert done["event"] == "Backup process completed" and done["level"] == "INFO"
    assert done["databases"] == 1 and done["raw_bytes"] > 0 and "duration_seconds" in done
    assert log_file.read_text().splitlines() == result.stdout.splitlines()


def test_log_level_filters(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n", new_db)
    env = {**base_env, "POSTGRES_DB": new_db}
    quiet = cli({**env, "LOG_LEVEL": "ERROR"}, "backup")
    assert quiet.code == 0 and quiet.stdout == ""
    debug = cli({**env, "LOG_LEVEL": "DEBUG"}, "backup")
    assert debug.code == 0 and "[DEBUG] Running " in debug.stdout and "--snapshot" in debug.stdout
    assert env["POSTGRES_PASSWORD"] not in debug.output
