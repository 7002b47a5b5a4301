"""Files of the original shell version (``pg_dump | gzip > sentinel_backup_<db>_<YYYYMMDD_HHMMSS>.sql.gz``,
no manifest) are listed, verified and restored by name, and never picked as ``latest``."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import assert_same_data, cli, load

STAMP = "20241103_030000"  # the shell version's `date +%Y%m%d_%H%M%S`


def shell_backup(pg: TempCluster, database: str, folder: Path, *, key: Path | None = None,
                 checksum: bool = False) -> Path:
    """What backup.sh did: pg_dump | gzip > file [; openssl enc ...] [; sha256sum file > file.sha256]."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"sentinel_backup_{database}_{STAMP}.sql.gz"
    pg_dump = f"{pg.bin_dir / 'pg_dump'} -h {pg.socket_dir} -p {pg.port} -U {pg.user} {database}"
    subprocess.run(f"set -o pipefail; {pg_dump} | gzip > {target}", shell=True, executable="/bin/bash",
                   check=True)
    if key is not None:
        encrypted = target.with_name(target.name + ".enc")
        subprocess.run(["openssl", "enc", "-aes-256-cbc", "-salt", "-pbkdf2", "-pass", f"file:{key}",
                        "-in", str(target), "-out", str(encrypted)], check=True)
        target.unlink()
        target = encrypted
    if checksum:
        line = subprocess.run(["sha256sum", target.name], cwd=folder, capture_output=True, text=True,
                              check=True).stdout
        (folder / (target.name + ".sha256")).write_text(line)
    return target


@pytest.fixture
def legacy_db(pg: TempCluster, new_db: str) -> str:
    load(pg, new_db, "complex.sql")
    pg.psql("CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS t FROM generate_series(1, 5000) g", new_db)
    return new_db


def test_list_verify_restore_a_shell_backup(pg: TempCluster, legacy_db: str, base_env: dict[str, str]) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    legacy = shell_backup(pg, legacy_db, folder, checksum=True)
    env = {**base_env, "POSTGRES_DB": legacy_db}

    listed = cli(env, "list", "--json")
    assert listed.code == 0, listed.output
    [item] = listed.json()
    assert item["id"] == legacy.name and item["artifact"] == legacy.name
    assert item["legacy"] is True and item["database"] == legacy_db
    assert item["created_at"] == "2024-11-03T03:00:00Z"
    assert item["size_bytes"] == legacy.stat().st_size
    assert item["sha256"] is None and item["tables"] is None and item["encryption"] is None
    assert item["destinations"] == ["local"]

    human = cli(env, "list")
    assert human.code == 0, human.output
    [row] = [line for line in human.stdout.splitlines() if line.startswith(legacy.name)]
    assert "2024-11-03 03:00:00" in row and row.endswith("LEGACY")

    verified = cli(env, "verify", legacy.name)
    assert verified.code == 0, verified.output
    assert "decompressed in full" in verified.stdout
    assert f"matches {legacy.name}.sha256" in verified.stdout
    assert "end-of-dump marker present" in verified.stdout

    target = f"{legacy_db}_back"
    try:
        restored = cli(env, "restore", legacy.name, "--target-db", target, "--create")
        assert restored.code == 0, restored.output
        assert "row-count check skipped" in restored.stdout
        assert_same_data(pg, legacy_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")


def test_latest_is_never_a_legacy_file(pg: TempCluster, legacy_db: str, base_env: dict[str, str]) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    legacy = shell_backup(pg, legacy_db, folder)
    env = {**base_env, "POSTGRES_DB": legacy_db, "BACKUP_GLOBALS": "false"}
    only_legacy = cli(env, "verify", "latest")
    assert only_legacy.code == 1
    assert "legacy" in only_legacy.stderr and legacy.name in only_legacy.stderr  # the hint names it
    assert "Traceback" not in only_legacy.output

    # A real backup made now is newer; rename the legacy file to a date in the future: still not `latest`.
    future = legacy.rename(folder / f"sentinel_backup_{legacy_db}_20991231_235959.sql.gz")
    assert cli(env, "backup").code == 0
    items = cli(env, "list", "--json").json()
    assert items[0]["id"] == future.name and items[0]["legacy"] is True  # newest first, marked
    real = next(i for i in items if not i["legacy"])
    latest = cli(env, "verify", "latest")
    assert latest.code == 0, latest.output
    assert f"Verified {real['id']} on local" in latest.output
    assert "legacy file" not in latest.stdout
    drill = cli(env, "verify", future.name, "--restore")
    assert drill.code == 2 and "no row counts" in drill.stderr


def test_truncated_legacy_file_is_refused(pg: TempCluster, legacy_db: str, base_env: dict[str, str]) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    legacy = shell_backup(pg, legacy_db, folder)
    data = legacy.read_bytes()
    legacy.write_bytes(data[: len(data) * 2 // 3])  # a dump cut short (disk full, killed job)
    env = {**base_env, "POSTGRES_DB": legacy_db}

    verified = cli(env, "verify", legacy.name)
    assert verified.code == 1
    assert "decode" in verified.stdout and "FAILED" in verified.stdout
    assert "truncated" in verified.stdout

    target = f"{legacy_db}_cut"
    restored = cli(env, "restore", legacy.name, "--target-db", target, "--create")
    assert restored.code == 1
    assert "cannot be restored" in restored.stderr and "Traceback" not in restored.output
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{target}%'") == "0"


def test_checksum_file_that_disagrees_fails_verify(pg: TempCluster, legacy_db: str,
                                                   base_env: dict[str, str]) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    legacy = shell_backup(pg, legacy_db, folder, checksum=True)
    wrong = hashlib.sha256(b"something else").hexdigest()
    (folder / (legacy.name + ".sha256")).write_text(f"{wrong}  {legacy.name}\n")
    verified = cli({**base_env, "POSTGRES_DB": legacy_db}, "verify", legacy.name)
    assert verified.code == 1
    assert "sha256-file" in verified.stdout and f"!= {legacy.name}.sha256" in verified.stdout


def test_encrypted_shell_backup(pg: TempCluster, legacy_db: str, base_env: dict[str, str], tmp_path: Path) -> None:
    key = tmp_path / "backup.key"
    key.write_text(subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True, text=True,
                                  check=True).stdout)
    key.chmod(0o600)
    folder = Path(base_env["BACKUP_DIR"])
    legacy = shell_backup(pg, legacy_db, folder, key=key, checksum=True)
    env = {**base_env, "POSTGRES_DB": legacy_db}

    [item] = cli(env, "list", "--json").json()
    assert item["legacy"] is True and item["encryption"] == {"method": "aes-256-cbc", "key_id": None}

    no_key = cli(env, "verify", legacy.name)
    assert no_key.code == 1
    assert "cannot be read" in no_key.stdout and "ENCRYPTION_KEY_PATH" in no_key.stdout

    keyed = {**env, "ENCRYPTION_KEY_PATH": str(key)}
    verified = cli(keyed, "verify", legacy.name)
    assert verified.code == 0, verified.output
    assert "decrypted and decompressed in full" in verified.stdout

    target = f"{legacy_db}_enc"
    try:
        restored = cli(keyed, "restore", legacy.name, "--target-db", target, "--create")
        assert restored.code == 0, restored.output
        assert_same_data(pg, legacy_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
