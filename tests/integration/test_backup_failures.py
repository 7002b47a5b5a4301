"""A failed, killed or truncated dump never becomes a backup; bad input gets one clear message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli


def committed(folder: Path) -> list[str]:
    """Artifacts, checksums, manifests and partial files (not the run lock / last-run record)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") or p.name.endswith(".partial"))


def test_wrong_password(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": new_db, "POSTGRES_PASSWORD": "not-the-password"}
    result = cli(env, "backup")
    assert result.code == 1
    assert "password authentication failed" in result.output
    assert "POSTGRES_PASSWORD" in result.output  # the hint names the setting to fix
    assert "not-the-password" not in result.output
    assert "Traceback" not in result.output
    assert committed(Path(env["BACKUP_DIR"])) == []


def test_password_never_in_argv_or_logs(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                        tmp_path: Path) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 200000) AS n", new_db)
    log = tmp_path / "run.log"
    env = {**base_env, "POSTGRES_DB": new_db, "LOG_LEVEL": "DEBUG", "LOG_FILE": str(log)}
    seen: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None:
        seen += subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
        time.sleep(0.05)
    output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, output
    assert not [line for line in seen if env["POSTGRES_PASSWORD"] in line]
    assert env["POSTGRES_PASSWORD"] not in output
    assert env["POSTGRES_PASSWORD"] not in log.read_text()
    assert "Backup process completed" in log.read_text()


def test_database_does_not_exist(base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": "no_such_database"}
    result = cli(env, "backup")
    assert result.code == 1
    assert 'database "no_such_database" does not exist' in result.output
    assert committed(Path(env["BACKUP_DIR"])) == []


def test_one_failed_database_fails_the_run_but_not_the_others(pg: TempCluster, new_db: str,
                                                              base_env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n", new_db)
    env = {**base_env, "POSTGRES_DB": f"{new_db},missing_db", "BACKUP_GLOBALS": "false"}
    result = cli(env, "backup")
    assert result.code == 1
    assert "Backup process failed for missing_db" in result.stdout
    listed = cli(env, "list", "--json").json()
    assert [i["database"] for i in listed] == [new_db]


def test_backup_dir_not_writable(pg: TempCluster, new_db: str, base_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {**base_env, "POSTGRES_DB": new_db, "BACKUP_DIR": str(blocker / "backups")}
    result = cli(env, "backup")
    assert result.code == 2
    assert "BACKUP_DIR" in result.stderr and "not writable" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
    ("POSTGRES_PORT", "fivefourthreetwo", "POSTGRES_PORT"),
    ("COMPRESSION", "rar", "COMPRESSION"),
    ("COMPRESSION_LEVEL", "12", "COMPRESSION_LEVEL"),
    ("S3_ENABLED", "maybe", "S3_ENABLED"),
])
def test_bad_values_fail_before_work(base_env: dict[str, str], variable: str, value: str, expected: str) -> None:
    env = {**base_env, "POSTGRES_DB": "whatever", variable: value}
    result = cli(env, "backup")
    assert result.code == 2, result.output
    assert expected in result.stderr and "HINT" in result.stderr
    assert "Traceback" not in result.output
    assert not Path(env["BACKUP_DIR"]).exists()


def test_missing_required_variable(base_env: dict[str, str]) -> None:
    env = {k: v for k, v in base_env.items() if k != "POSTGRES_USER"}
    result = cli({**env, "POSTGRES_DB": "x"}, "backup")
    assert result.code == 2
    assert "POSTGRES_USER is required" in result.stderr


def test_traceback_only_with_debug(base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": "x", "POSTGRES_PORT": "1"}
    quiet = cli(env, "check")
    assert quiet.code == 1 and "Traceback" not in quiet.output
    bad = cli({**env, "LOG_LEVEL": "DEBUG", "POSTGRES_DB": "x"}, "restore", "nope", "--target-db", "y")
    assert bad.code != 0 and "Traceback" in bad.stderr


def _pg_dump_pids(parent: int) -> list[int]:
    """The pg_dump started by this run only (never another process's on the machine)."""
    out = subprocess.run(["pgrep", "-P", str(parent), "-x", "pg_dump"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "terminate-backend"])
def test_killed_dump_leaves_nothing(pg: TempCluster, new_db: str, base_env: dict[str, str], how: str) -> None:
    pg.psql("CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS v"
            " FROM generate_series(1, 1500000) g", new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "COMPRESSION": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = Path(env["BACKUP_DIR"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until data is flowing into the partial file
        partials = list(folder.glob(".*.partial")) if folder.exists() else []
        if partials and partials[0].stat().st_size > 1_000_000:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the dump never started streaming")
    if how == "kill":
        pids = _pg_dump_pids(proc.pid)
        assert pids, "pg_dump is not a child of the backup process"
        for pid in pids:
            os.kill(pid, 9)
    else:
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sentinel-backup'"
                " AND query ILIKE 'COPY%'")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "pg_dump failed" in output
    assert committed(folder) == []  # no artifact, no partial, no manifest
    assert cli(env, "list", "--json").json() == []
