"""`show ID|latest`: what the manifest says about one backup, against a real PostgreSQL, a
real S3 server (SeaweedFS) beside the local folder, real age encryption and a real drill."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli, load
from tests.plugins.s3 import WeedServer


@pytest.fixture
def complex_db(pg: TempCluster, new_db: str) -> str:
    load(pg, new_db, "complex.sql")
    return new_db


@pytest.fixture
def age_env(tmp_path: Path) -> dict[str, str]:
    identity = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True, check=True)
    return {"ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age", "AGE_RECIPIENTS": public.stdout.strip(),
            "AGE_IDENTITY_FILE": str(identity)}


def test_show_tells_everything_the_manifest_says(pg: TempCluster, complex_db: str, base_env: dict[str, str],
                                                 age_env: dict[str, str], s3_server: WeedServer, s3_bucket: str,
                                                 tmp_path: Path) -> None:
    env = {**base_env, **age_env, **s3_server.s3_env(s3_bucket, "show"), "POSTGRES_DB": complex_db,
           "MANIFEST_TABLE_HASHES": "true", "VERIFY_AFTER_BACKUP": "restore",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    backed = cli(env, "backup")
    assert backed.code == 0, backed.output
    listed = cli(env, "list", "--json").json()
    assert len(listed) == 1
    artifact = listed[0]["artifact"]
    manifest = json.loads((Path(env["BACKUP_DIR"]) / f"{artifact}.manifest.json").read_text())

    shown = cli(env, "show", "--json")
    assert shown.code == 0, shown.output
    doc: dict[str, Any] = json.loads(shown.stdout)
    for key in ("id", "sha256", "raw_sha256", "size_bytes", "raw_size_bytes", "tables", "table_hashes", "encryption"):
        assert doc[key] == manifest[key], key
    assert doc["encryption"]["method"] == "age" and doc["encryption"]["key_id"] == manifest["encryption"]["key_id"]
    assert doc["locations"] == {"local": str(Path(env["BACKUP_DIR"]) / artifact),
                                "s3": f"s3://{s3_bucket}/show/{artifact}"}
    assert doc["drills"]["local"]["passed"] is True and doc["legacy"] is False
    assert doc["tables"]['"Weird Schema"."Mixed Case Table"'] == manifest["tables"]['"Weird Schema"."Mixed Case Table"']

    human = cli(env, "show", doc["id"])
    assert human.code == 0, human.output
    text = human.stdout
    for expected in (doc["id"], manifest["sha256"], manifest["raw_sha256"], manifest["encryption"]["key_id"],
                     f"s3://{s3_bucket}/show/{artifact}", str(Path(env["BACKUP_DIR"]) / artifact),
                     f"({manifest['size_bytes']} bytes)", "Drill on local", '"Weird Schema"."Mixed Case Table"'):
        assert expected in text, expected
    # every table with its row count, on one line
    for table, rows in manifest["tables"].items():
        assert any(table in line and line.split()[-2 if manifest.get("table_hashes") else -1] == str(rows)
                   for line in text.splitlines()), table


def test_show_unknown_id_is_a_usage_error(base_env: dict[str, str], new_db: str) -> None:
    env = {**base_env, "POSTGRES_DB": new_db}
    assert cli(env, "backup").code == 0
    result = cli(env, "show", "no_such_backup")
    assert result.code == 2 and "no backup with id 'no_such_backup'" in result.stderr
    assert "Traceback" not in result.output


def test_show_globals_and_a_legacy_file(pg: TempCluster, base_env: dict[str, str], new_db: str) -> None:
    env = {**base_env, "POSTGRES_DB": new_db, "BACKUP_GLOBALS": "true"}
    assert cli(env, "backup").code == 0
    globals_id = next(b["id"] for b in cli(env, "list", "--json").json() if b["kind"] == "globals")
    shown = cli(env, "show", globals_id)
    assert shown.code == 0 and "none (roles and tablespaces)" in shown.stdout
    legacy = Path(env["BACKUP_DIR"]) / f"sentinel_backup_{new_db}_20240101_030000.sql.gz"
    subprocess.run(f"echo 'SELECT 1;' | gzip > {legacy}", shell=True, check=True)
    doc = json.loads(cli(env, "show", legacy.name, "--json").stdout)
    assert doc["legacy"] is True and doc["tables"] is None and doc["database"] == new_db
    text = cli(env, "show", legacy.name).stdout
    assert "legacy file of the shell version" in text and "not recorded" in text
