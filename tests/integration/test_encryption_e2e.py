"""Encrypted backups end to end: backup -> verify -> restore, interop, tampering, bad keys."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import assert_same_data, cli, load


@pytest.fixture
def aes_key(tmp_path: Path) -> Path:
    key = tmp_path / "backup.key"
    key.write_text(subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True, text=True,
                                  check=True).stdout)
    key.chmod(0o600)
    return key


@pytest.fixture
def age_keys(tmp_path: Path) -> tuple[Path, str]:
    identity = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    identity.chmod(0o600)
    public = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True,
                            check=True).stdout.strip()
    return identity, public


def encryption_env(method: str, aes_key: Path, age_keys: tuple[Path, str]) -> dict[str, str]:
    if method == "aes-256-cbc":
        return {"ENCRYPT_ENABLED": "true", "ENCRYPTION_KEY_PATH": str(aes_key)}
    return {"ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age", "AGE_RECIPIENTS": age_keys[1],
            "AGE_IDENTITY_FILE": str(age_keys[0])}


def decrypt_with_standard_tool(method: str, artifact: Path, aes_key: Path, identity: Path) -> bytes:
    argv = (["openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-pass", f"file:{aes_key}", "-in", str(artifact)]
            if method == "aes-256-cbc" else ["age", "-d", "-i", str(identity), str(artifact)])
    return subprocess.run(argv, capture_output=True, check=True).stdout


@pytest.mark.parametrize("method", ["aes-256-cbc", "age"])
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_encrypted_roundtrip(pg: TempCluster, new_db: str, base_env: dict[str, str], aes_key: Path,
                             age_keys: tuple[Path, str], method: str, compression: str) -> None:
    load(pg, new_db, "complex.sql")
    env = {**base_env, "POSTGRES_DB": new_db, "COMPRESSION": compression,
           **encryption_env(method, aes_key, age_keys)}
    backup = cli(env, "backup")
    assert backup.code == 0, backup.output
    item = cli(env, "list", "--json").json()[0]
    assert item["encryption"]["method"] == method
    if method == "age":
        assert item["encryption"]["key_id"] == age_keys[1]
    else:
        assert item["encryption"]["key_id"].startswith("sha256:")
        assert aes_key.read_text().strip() not in backup.output + str(item)
    artifact = Path(env["BACKUP_DIR"]) / item["artifact"]
    assert artifact.name.endswith(".enc" if method == "aes-256-cbc" else ".age")

    plain = decrypt_with_standard_tool(method, artifact, aes_key, age_keys[0])
    tester = ["gunzip", "-t"] if compression == "gzip" else ["zstd", "-q", "-t"]
    assert subprocess.run(tester, input=plain).returncode == 0

    verified = cli(env, "verify")
    assert verified.code == 0, verified.output
    assert "raw" in verified.stdout and "FAILED" not in verified.stdout
    target = f"{new_db}_enc"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create")
    assert restored.code == 0, restored.output
    try:
        assert_same_data(pg, new_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}")


@pytest.mark.parametrize("method", ["aes-256-cbc", "age"])
def test_tampered_encrypted_artifact_is_refused(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                                aes_key: Path, age_keys: tuple[Path, str], method: str) -> None:
    pg.psql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g", new_db)
    env = {**base_env, "POSTGRES_DB": new_db, **encryption_env(method, aes_key, age_keys)}
    assert cli(env, "backup").code == 0
    artifact = next(Path(env["BACKUP_DIR"]).glob("sentinel_backup_*.sql.gz.*[cge]"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 3] ^= 0x40
    artifact.write_bytes(bytes(data))
    assert cli(env, "verify").code == 1
    restored = cli(env, "restore", "latest", "--target-db", f"{new_db}_x", "--create")
    assert restored.code == 1 and "does not match its manifest" in restored.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{new_db}_x%'") == "0"


def test_age_verify_without_identity_says_what_it_checked(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                                          age_keys: tuple[Path, str]) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS n", new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age",
           "AGE_RECIPIENTS": age_keys[1]}
    assert cli(env, "backup").code == 0  # the backup host needs only the public key
    verified = cli(env, "verify")
    assert verified.code == 0, verified.output
    assert "sha256" in verified.stdout and "AGE_IDENTITY_FILE" in verified.stdout
    restored = cli(env, "restore", "latest", "--target-db", f"{new_db}_noid", "--create")
    assert restored.code == 2 and "AGE_IDENTITY_FILE" in restored.stderr


def test_restore_with_wrong_key_writes_nothing(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                               aes_key: Path, tmp_path: Path) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS n", new_db)
    env = {**base_env, "POSTGRES_DB": new_db, "ENCRYPT_ENABLED": "true", "ENCRYPTION_KEY_PATH": str(aes_key)}
    assert cli(env, "backup").code == 0
    other = tmp_path / "other.key"
    other.write_text("a different password\n")
    other.chmod(0o600)
    restored = cli({**env, "ENCRYPTION_KEY_PATH": str(other)}, "restore", "latest", "--target-db",
                   f"{new_db}_wrong", "--create")
    assert restored.code == 2, restored.output
    assert "key" in restored.stderr.lower() and "Traceback" not in restored.output
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{new_db}_wrong%'") == "0"


@pytest.mark.parametrize("problem", ["missing", "group-readable", "empty", "no-key", "bad-recipient"])
def test_bad_encryption_settings_stop_before_the_dump(base_env: dict[str, str], new_db: str, tmp_path: Path,
                                                      problem: str) -> None:
    key = tmp_path / "k.key"
    env = {**base_env, "POSTGRES_DB": new_db, "ENCRYPT_ENABLED": "true", "ENCRYPTION_KEY_PATH": str(key)}
    expected = "ENCRYPTION_KEY_PATH"
    if problem == "group-readable":
        key.write_text("secret\n")
        os.chmod(key, 0o644)
        expected = "chmod 600"
    elif problem == "empty":
        key.write_text("")
        key.chmod(0o600)
    elif problem == "no-key":
        del env["ENCRYPTION_KEY_PATH"]
    elif problem == "bad-recipient":
        env.update(ENCRYPTION_METHOD="age", AGE_RECIPIENTS="age1notakey")
        expected = "AGE_RECIPIENTS"
    result = cli(env, "backup")
    assert result.code == 2, result.output
    assert expected in result.stderr
    assert "Dumping" not in result.stdout
    folder = Path(env["BACKUP_DIR"])
    assert not folder.exists() or not list(folder.iterdir())
