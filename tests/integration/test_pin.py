"""`pin` / `unpin` end to end: a real PostgreSQL, the local folder and a real S3 server
(SeaweedFS). The pin sidecar is written beside the backup on both destinations; retention
(keep-last 1) keeps the pinned older backup on both, and removes it once unpinned."""

from __future__ import annotations

import json
from pathlib import Path

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli
from tests.integration.test_physical_base import cluster, env_for
from tests.integration.test_s3_e2e import json_doc, keys
from tests.plugins.s3 import WeedServer

PREFIX = "pins"
__all__ = ["cluster"]  # the physical tests' module-scoped cluster (archive_mode, replication)


def test_pin_survives_retention_on_every_destination_until_unpinned(
        pg: TempCluster, new_db: str, base_env: dict[str, str], s3_server: WeedServer, s3_bucket: str,
        tmp_path: Path) -> None:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", new_db)
    env = {**base_env, **s3_server.s3_env(s3_bucket, PREFIX), "POSTGRES_DB": new_db,
           "RETENTION_AFTER_BACKUP": "false", "RETENTION_KEEP_LAST": "1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    for _ in range(2):
        backed = cli(env, "backup")
        assert backed.code == 0, backed.output
    listed = [b for b in json_doc(cli(env, "list", "--json")) if b["database"] == new_db]
    assert len(listed) == 2 and all(b["pinned"] is None for b in listed)
    newer, older = listed
    folder = Path(env["BACKUP_DIR"])
    sidecar = older["artifact"] + ".pin.json"

    pinned = cli(env, "pin", older["id"], "--note", "before the v2 migration")
    assert pinned.code == 0, pinned.output
    assert "local" in pinned.stdout and "s3" in pinned.stdout
    local_pin = json.loads((folder / sidecar).read_text())
    assert local_pin["note"] == "before the v2 migration" and local_pin["pinned_at"] and local_pin["host"]
    assert f"{PREFIX}/{sidecar}" in keys(s3_server, s3_bucket, PREFIX + "/")
    by_id = {b["id"]: b for b in json_doc(cli(env, "list", "--json"))}
    assert by_id[older["id"]]["pinned"]["note"] == "before the v2 migration" and by_id[newer["id"]]["pinned"] is None
    table = cli(env, "list").stdout
    assert "PINNED" in next(line for line in table.splitlines() if older["id"] in line)
    shown = cli(env, "show", older["id"])
    assert shown.code == 0 and "before the v2 migration" in shown.stdout, shown.output

    plans = {p["destination"]: p for p in json_doc(cli(env, "prune", "--dry-run", "--json"))}
    assert set(plans) == {"local", "s3"}
    for the_plan in plans.values():
        decision = next(d for d in the_plan["decisions"] if d["id"] == older["id"])
        assert decision["action"] == "keep" and decision["reason"] == "pinned: before the v2 migration"
    dry = cli(env, "prune", "--dry-run")
    assert "pinned: before the v2 migration" in dry.stdout, dry.output
    pruned = cli(env, "prune")
    assert pruned.code == 0, pruned.output
    assert (folder / older["artifact"]).exists() and (folder / sidecar).exists()
    assert f"{PREFIX}/{older['artifact']}" in keys(s3_server, s3_bucket, PREFIX + "/")

    assert cli(env, "pin", "no_such_backup").code == 2

    unpinned = cli(env, "unpin", older["id"])
    assert unpinned.code == 0, unpinned.output
    assert not (folder / sidecar).exists() and f"{PREFIX}/{sidecar}" not in keys(s3_server, s3_bucket, PREFIX + "/")
    assert cli(env, "prune").code == 0
    remaining = [b["id"] for b in json_doc(cli(env, "list", "--json")) if b["database"] == new_db]
    assert remaining == [newer["id"]]
    assert not any(k.startswith(f"{PREFIX}/{older['artifact']}") for k in keys(s3_server, s3_bucket, PREFIX + "/"))
    assert not any(p.name.startswith(older["artifact"]) for p in folder.iterdir())


def test_pin_a_physical_base_backup(cluster: TempCluster, tmp_path: Path) -> None:
    env = env_for(cluster, tmp_path, RETENTION_KEEP_LAST="1", RETENTION_AFTER_BACKUP="false")
    for _ in range(2):
        done = cli(env, "backup", "--physical")
        assert done.code == 0, done.output
    newer, older = json_doc(cli(env, "list", "--json"))
    assert older["kind"] == "physical"
    assert cli(env, "pin", older["id"], "--note", "audit").code == 0
    sidecar = Path(env["BACKUP_DIR"]) / (older["artifact"] + ".pin.json")
    assert sidecar.is_file() and sidecar.parent.name == older["physical"]["system_identifier"]
    assert {b["id"]: b["pinned"] for b in json_doc(cli(env, "list", "--json"))}[older["id"]]["note"] == "audit"
    (the_plan,) = json_doc(cli(env, "prune", "--json"))
    decision = next(d for d in the_plan["decisions"] if d["id"] == older["id"])
    assert (decision["action"], decision["reason"]) == ("keep", "pinned: audit")
    assert (Path(env["BACKUP_DIR"]) / older["artifact"]).is_file()
    assert cli(env, "unpin", older["id"]).code == 0 and not sidecar.exists()
    assert cli(env, "prune").code == 0
    assert [b["id"] for b in json_doc(cli(env, "list", "--json"))] == [newer["id"]]
