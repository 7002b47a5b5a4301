"""Retention end to end on a real S3 server (SeaweedFS): two years of backups, legacy objects
of the shell version and incomplete leftovers, pruned by the real program.

S3 cannot backdate LastModified, so the history is made from one real backup: its objects
are copied under names stamped up to two years back, with manifests edited to match (same
bytes, so every copy is a valid, restorable backup). Retention reads dates from manifests
and names; leftovers age from their last sign of life (LastModified), so their removal is
checked with an injected clock.
"""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_backup.config import settings_from
from sentinel_backup.demo.cluster import TempCluster
from sentinel_backup.jobs.backup import prune_job
from sentinel_backup.model.manifest import Manifest, artifact_name, backup_id, checksum_line
from tests.helpers import cli
from tests.integration.test_s3_e2e import json_doc, keys
from tests.plugins.s3 import WeedServer

DAYS = 30  # RETENTION_DAYS (minio)
S3_DAYS = 7  # S3_RETENTION_DAYS (s3 only)
PREFIXES = {"s3": "pg/", "minio": "onsite/"}


def history() -> list[int]:
    """Ages in days of the generated backups of the main database: daily for a month, then
    every four weeks back to two years."""
    return [k for k in range(1, 731) if k <= 32 or k % 28 == 0]


RETIRED_AGES = [400, 500, 600]  # a database no longer backed up: all its backups are old
LEGACY_AGES = [3, 10, 100, 700]  # sentinel_backup_YYYYMMDD_HHMMSS.sql.gz of the shell version


def at(now: datetime, days: int) -> datetime:
    """``days`` (and one hour) before now, whole seconds: far from any rule's boundary."""
    return (now - timedelta(days=days, hours=1)).replace(microsecond=0)


@pytest.fixture
def bucket_env(pg: TempCluster, new_db: str, base_env: dict[str, str], s3_server: WeedServer, s3_bucket: str,
               tmp_path: Path) -> dict[str, str]:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", new_db)
    return {**base_env, "POSTGRES_DB": new_db, "LOCAL_ENABLED": "false", "RETENTION_AFTER_BACKUP": "false",
            **s3_server.s3_env(s3_bucket, "pg"), **s3_server.minio_env(s3_bucket, "onsite"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true"}


def fill(server: WeedServer, bucket: str, database: str, now: datetime) -> dict[str, object]:
    """One real backup, then two years of copies of it, legacy objects and leftovers, on both
    prefixes. What was written: ids by age, legacy names by age, leftover keys."""
    client = server.client()
    [real] = [k for k in keys(server, bucket, "pg/") if k.endswith(".manifest.json")]
    template = Manifest.from_json(client.get_object(Bucket=bucket, Key=real)["Body"].read(), real)
    data = client.get_object(Bucket=bucket, Key="pg/" + template.artifact)["Body"].read()
    objects: dict[str, bytes] = {}

    def backup(db: str, moment: datetime, *, manifest: bool = True) -> str:
        name = artifact_name(db, moment, ".sql.gz")
        objects[name] = data
        objects[name + ".sha256"] = checksum_line(template.sha256, name)
        if manifest:
            copy = template.model_copy(update={"id": backup_id(name), "database": db, "artifact": name,
                                               "created_at": moment, "finished_at": moment + timedelta(seconds=2)})
            objects[copy.manifest_key] = copy.to_json()
        return backup_id(name)

    main = {k: backup(database, at(now, k)) for k in history()}
    retired = {k: backup("retired", at(now, k)) for k in RETIRED_AGES}
    legacy = {k: f"sentinel_backup_{at(now, k):%Y%m%d_%H%M%S}.sql.gz" for k in LEGACY_AGES}
    for name in legacy.values():
        objects[name] = gzip.compress(b"-- a dump by the shell version\n")
    crashed = backup(database, at(now, 50), manifest=False)  # a run that died before its manifest
    orphan_sum = artifact_name(database, at(now, 60), ".sql.gz") + ".sha256"  # a .sha256 alone
    objects[orphan_sum] = b"0" * 64 + b"  x\n"

    def put(item: tuple[str, str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0] + item[1], Body=item[2])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [(p, k, v) for p in PREFIXES.values() for k, v in objects.items()]))
    return {"real": template.id, "main": main, "retired": retired, "legacy": legacy,
            "leftovers": {crashed, backup_id(orphan_sum.removesuffix(".sha256"))}}


def test_two_years_of_backups_on_a_real_bucket(pg: TempCluster, bucket_env: dict[str, str], s3_server: WeedServer,
                                               s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**bucket_env, "RETENTION_DAYS": str(DAYS), "S3_RETENTION_DAYS": str(S3_DAYS)}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    now = datetime.now(UTC)
    made = fill(s3_server, s3_bucket, env["POSTGRES_DB"], now)
    main, retired, legacy = made["main"], made["retired"], made["legacy"]
    assert isinstance(main, dict) and isinstance(retired, dict) and isinstance(legacy, dict)
    before = keys(s3_server, s3_bucket)
    everything = cli(env, "list", "--json").json()
    listed = [i for i in everything if not i["legacy"]]
    assert len(listed) == 1 + len(main) + len(retired)  # no leftover is a listed backup
    assert {i["id"] for i in everything if i["legacy"]} == set(legacy.values())  # shell files: marked legacy
    assert all(i["destinations"] == ["minio", "s3"] for i in listed)

    # expected, per destination: within its days, the newest of each database, legacy within its days
    def expected_removed(days: int) -> set[str]:
        gone = {main[k] for k in main if k >= days} | {retired[k] for k in RETIRED_AGES[1:]}
        return gone | {legacy[k] for k in LEGACY_AGES if k >= days}

    # --- dry run: the plan, nothing deleted
    plans = {p["destination"]: p for p in json_doc(cli(env, "prune", "--dry-run", "--json"))}
    assert set(plans) == {"s3", "minio"}
    assert keys(s3_server, s3_bucket) == before
    for destination, days in (("s3", S3_DAYS), ("minio", DAYS)):
        plan = plans[destination]
        assert plan["dry_run"] is True and plan["policy"] == f"days {days} (UTC)"
        removed = {d["id"] for d in plan["decisions"] if d["action"] == "remove"}
        assert removed == expected_removed(days), destination
        assert plan["result"] == {"would_remove": len(removed)}
        by_id = {d["id"]: d for d in plan["decisions"]}
        assert by_id[made["real"]]["reason"].startswith(f"newest backup of {env['POSTGRES_DB']}")
        assert by_id[retired[400]]["action"] == "keep" and by_id[retired[400]]["reason"] == "newest backup of retired"
        assert by_id[main[days]]["reason"] == f"older than {days} days"
        assert by_id[main[days - 1]]["reason"] == f"within {days} days"
        assert by_id[legacy[700]]["kind"] == "legacy" and by_id[legacy[700]]["reason"] == \
            f"legacy older than {days} days"
        assert by_id[legacy[700]]["keys"] == [legacy[700]]
        assert by_id[main[days]]["keys"] == [f"{artifact_name(env['POSTGRES_DB'], at(now, days), '.sql.gz')}{s}"
                                             for s in (".manifest.json", ".sha256", "")]  # manifest first
        for leftover in made["leftovers"]:  # young by LastModified: a run may still be writing it
            assert by_id[leftover]["kind"] == "incomplete" and by_id[leftover]["action"] == "keep"
            assert "younger than 24h" in by_id[leftover]["reason"]
    assert legacy[10] not in {d["id"] for d in plans["minio"]["decisions"] if d["action"] == "remove"}

    # --- the real prune removes exactly the plan's objects, on each prefix by its own policy
    pruned = json_doc(cli(env, "prune", "--json"))
    assert {p["destination"]: p["result"] for p in pruned} == {
        d: {"removed": len(expected_removed(days)), "locked": 0, "errors": 0}
        for d, days in (("s3", S3_DAYS), ("minio", DAYS))}
    planned_keys = {PREFIXES[d] + k for d, p in plans.items() for dec in p["decisions"] if dec["action"] == "remove"
                    for k in dec["keys"]}
    after = keys(s3_server, s3_bucket)
    assert set(after) == set(before) - planned_keys

    survivors = {d: {i["id"] for i in cli(env, "list", "--json", "--destination", d).json()} for d in PREFIXES}
    for destination, days in (("s3", S3_DAYS), ("minio", DAYS)):
        assert survivors[destination] == ({made["real"], retired[400]} | {main[k] for k in main if k < days}
                                          | {legacy[k] for k in LEGACY_AGES if k < days}), destination
    newest = cli(env, "verify", made["real"], "--destination", "s3")  # the newest good backup, whole
    assert newest.code == 0, newest.output

    # --- stable: a second prune removes nothing more
    again = json_doc(cli(env, "prune", "--json"))
    assert all(p["result"] == {"removed": 0, "locked": 0, "errors": 0} for p in again)
    assert keys(s3_server, s3_bucket) == after

    # --- a day later (injected clock), with no retention rule: only the leftovers go
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(key, env[key])
    no_rules = settings_from({k: v for k, v in env.items() if not k.endswith("RETENTION_DAYS")})
    results = prune_job(no_rules, now=datetime.now(UTC) + timedelta(hours=25))
    for _, applied in results:
        assert {r.backup.id for r in applied.removed} == made["leftovers"], applied.destination
        assert all("incomplete leftover older than 24h" in r.reason for r in applied.results)
    final = keys(s3_server, s3_bucket)
    assert not any(backup_id(k.split("/")[1].removesuffix(".sha256")) in made["leftovers"] for k in final)
    assert len(final) == len(after) - 2 * 3  # artifact + .sha256, and the lone .sha256, on both prefixes
    assert {i["id"] for i in cli(env, "list", "--json").json()} == survivors["minio"]
    assert json.dumps(results[0][0].to_dict())  # the plan stays serialisable with an injected clock
