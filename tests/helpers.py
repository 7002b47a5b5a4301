"""Helpers shared by the integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel_backup.demo.cluster import TempCluster
from sentinel_backup.demo.compare import differences, fingerprints

DATA = Path(__file__).parent / "data"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(env: dict[str, str], *args: str, path_prefix: str | None = None, timeout: float = 600) -> Result:
    """Run the real sentinel-backup program in a child process (exit codes, no shared state)."""
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "S3_", "MINIO_", "PG"))}
    child.update(env)
    if path_prefix:
        child["PATH"] = f"{path_prefix}:{child['PATH']}"
    proc = subprocess.run([sys.executable, "-m", "sentinel_backup", *args], env=child, capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=env.get("CWD"))
    return Result(proc.returncode, proc.stdout, proc.stderr)


def load(pg: TempCluster, database: str, sql_file: str) -> None:
    pg.psql((DATA / sql_file).read_text(), database)


def assert_same_data(pg: TempCluster, left: str, right: str) -> dict[str, str]:
    """Both databases hold the same tables with the same rows (count and content)."""
    a = fingerprints(lambda sql, db: pg.psql(sql, db), left)
    b = fingerprints(lambda sql, db: pg.psql(sql, db), right)
    assert a, f"{left} has no tables"
    assert not differences(a, b), f"tables differ: {differences(a, b)}"
    return a


def schema_dump(pg: TempCluster, database: str) -> str:
    """A schema-only dump with the database-specific lines removed, for comparison."""
    out = subprocess.run([str(pg.bin_dir / "pg_dump"), "-s", "-h", str(pg.socket_dir), "-p", str(pg.port),
                          "-U", pg.user, database], capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("--") and "restrict" not in line)


def large_objects(pg: TempCluster, database: str) -> str:
    return pg.psql("SELECT string_agg(encode(lo_get(oid), 'escape'), '|' ORDER BY oid) FROM pg_largeobject_metadata",
                   database)


def big_database(pg: TempCluster, name: str, rows: int) -> str:
    """A fresh database with one table of ``rows`` rows of ~80 bytes (1.2 M rows ~ 150 MB dumped)."""
    pg.psql(f"DROP DATABASE IF EXISTS {name}")
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a, md5((g * 3)::text) AS b"
            f" FROM generate_series(1, {rows}) g", name)
    return name


def reap(process: subprocess.Popen[Any]) -> None:
    """Kill a child a test started, if it still runs (for ``finally`` blocks)."""
    if process.poll() is None:
        process.kill()
        process.wait()


def promtool_check(text: bytes) -> None:
    """`promtool check metrics` (Debian package prometheus, installed by scripts/setup): the file
    must parse and pass Prometheus' own lint. Skipped only outside CI when promtool is absent."""
    import shutil

    import pytest

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; scripts/setup does it)")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
