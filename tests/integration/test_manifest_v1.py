"""A backup written by release 0.1 (manifest ``format_version`` 1, tests/data/manifest-v1/, made
by that release's own ``backup``) is listed, verified, shown and restored by this version."""

from __future__ import annotations

import shutil
from pathlib import Path

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli

FIXTURE = Path(__file__).parent.parent / "data" / "manifest-v1"
BACKUP_ID = "legacy_app_20261203T080106Z"


def test_version_1_backup_lists_verifies_and_restores(pg: TempCluster, base_env: dict[str, str]) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    shutil.copytree(FIXTURE, folder)
    folder.chmod(0o700)
    env = {**base_env, "POSTGRES_DB": "legacy_app"}

    listed = cli(env, "list", "--json")
    assert listed.code == 0, listed.output
    [item] = listed.json()
    assert item["id"] == BACKUP_ID and item["kind"] == "database" and item["legacy"] is False
    assert item["tables"] == 2 and item["sha256"].startswith("a93fd417")

    verified = cli(env, "verify", BACKUP_ID)
    assert verified.code == 0, verified.output

    target = "legacy_app_from_v1"
    try:
        restored = cli(env, "restore", BACKUP_ID, "--target-db", target, "--create")
        assert restored.code == 0, restored.output
        assert pg.psql("SELECT count(*) FROM items", target).strip() == "50"
        assert pg.psql("SELECT string_agg(body, ',' ORDER BY id) FROM notes", target).strip() == "ünïcode,two"
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")


def test_version_1_artifact_corrupted_is_refused(pg: TempCluster, base_env: dict[str, str]) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    shutil.copytree(FIXTURE, folder)
    artifact = folder / f"sentinel_backup_{BACKUP_ID}.sql.gz"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    verified = cli({**base_env, "POSTGRES_DB": "legacy_app"}, "verify", BACKUP_ID)
    assert verified.code != 0
    assert "sha256" in verified.output.lower()
