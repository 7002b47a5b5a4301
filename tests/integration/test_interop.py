"""The standard tools read what Sentinel Backup writes, without it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import assert_same_data, cli, load


@pytest.mark.parametrize(("compression", "tester"), [("gzip", ["gunzip", "-t"]), ("zstd", ["zstd", "-q", "-t"])])
def test_standard_tools_check_the_artifact(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                           compression: str, tester: list[str]) -> None:
    load(pg, new_db, "complex.sql")
    env = {**base_env, "POSTGRES_DB": new_db, "COMPRESSION": compression}
    assert cli(env, "backup").code == 0
    folder = Path(env["BACKUP_DIR"])
    artifact = next(folder.glob("sentinel_backup_*.sql." + {"gzip": "gz", "zstd": "zst"}[compression]))
    assert subprocess.run([*tester, artifact.name], cwd=folder).returncode == 0
    check = subprocess.run(["sha256sum", "-c", f"{artifact.name}.sha256"], cwd=folder, capture_output=True,
                           text=True)
    assert check.returncode == 0 and f"{artifact.name}: OK" in check.stdout


def test_gunzip_psql_restores_the_backup(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    load(pg, new_db, "complex.sql")
    env = {**base_env, "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0
    artifact = next(Path(env["BACKUP_DIR"]).glob("sentinel_backup_*.sql.gz"))
    target = f"{new_db}_by_hand"
    pg.psql(f"CREATE DATABASE {target}")
    try:
        pipeline = (f"gunzip -c {artifact} | {pg.bin_dir}/psql -X -q -v ON_ERROR_STOP=1 -h {pg.socket_dir} "
                    f"-p {pg.port} -U {pg.user} -d {target} >/dev/null")
        assert subprocess.run(["bash", "-o", "pipefail", "-c", pipeline]).returncode == 0
        assert_same_data(pg, new_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}")


def test_corrupted_artifact_is_refused(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    load(pg, new_db, "complex.sql")
    env = {**base_env, "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0
    artifact = next(Path(env["BACKUP_DIR"]).glob("sentinel_backup_*.sql.gz"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    verified = cli(env, "verify", "latest")
    assert verified.code == 1
    assert "sha256" in verified.stdout and "FAILED" in verified.stdout
    restored = cli(env, "restore", "latest", "--target-db", f"{new_db}_bad", "--create")
    assert restored.code == 1 and "does not match its manifest" in restored.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{new_db}_bad%'") == "0"


def test_missing_manifest_is_not_listed(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS n", new_db)
    env = {**base_env, "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0
    manifest = next(Path(env["BACKUP_DIR"]).glob("*.manifest.json"))
    manifest.unlink()
    assert cli(env, "list", "--json").json() == []
    missing = cli(env, "verify", "latest")
    assert missing.code == 1 and "no backups found" in missing.stderr


def test_truncated_artifact_fails_integrity(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    """Even with a manifest edited to match, a truncated gzip fails the decompression check."""
    import hashlib
    import json

    pg.psql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g", new_db)
    env = {**base_env, "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0
    folder = Path(env["BACKUP_DIR"])
    artifact = next(folder.glob("sentinel_backup_*.sql.gz"))
    short = artifact.read_bytes()[:-50]
    artifact.write_bytes(short)
    manifest_path = Path(f"{artifact}.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(size_bytes=len(short), sha256=hashlib.sha256(short).hexdigest())
    manifest_path.write_text(json.dumps(manifest))
    Path(f"{artifact}.sha256").unlink()
    verified = cli(env, "verify", "latest")
    assert verified.code == 1 and "truncated" in verified.stdout
