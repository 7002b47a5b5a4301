"""Backups to S3 and MinIO end to end: the real program, a real PostgreSQL and real SeaweedFS
servers (no mocks). One pass to local + s3 + minio, verify each copy, restore from a bucket
with no local copy left; and the faults the issue names: a wrong secret key, a missing
bucket, the server killed mid-upload, a corrupted remote object, an object lock."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import Result, assert_same_data, cli, load, reap
from tests.plugins.s3 import WeedServer

AWS_ISOLATION = ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED", "AWS_PROFILE")


@pytest.fixture
def complex_db(pg: TempCluster, new_db: str) -> str:
    load(pg, new_db, "complex.sql")
    return new_db


@pytest.fixture
def env(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The session cluster, BACKUP_DIR in tmp, and no AWS profile or instance role from this machine."""
    return {**base_env, "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def target_db(pg: TempCluster, new_db: str) -> Iterator[str]:
    """A database name to restore into, dropped afterwards (it does not exist yet)."""
    name = f"{new_db}_restored"
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z \[(DEBUG|INFO|WARN|ERROR)\] ")


def json_doc(result: Result) -> Any:
    """The JSON a `--json` command printed. Log lines also go to stdout (reported: they should
    not mix with --json output), so they are set aside here."""
    assert result.code == 0, result.output
    return json.loads("\n".join(line for line in result.stdout.splitlines() if not _LOG_LINE.match(line)))


def keys(server: WeedServer, bucket: str, prefix: str = "") -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def body(server: WeedServer, bucket: str, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def database_exists(pg: TempCluster, name: str) -> bool:
    return pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"


def backup_ok(env: dict[str, str]) -> dict[str, Any]:
    """Run a backup that must succeed; the one listed backup."""
    result = cli(env, "backup")
    assert result.code == 0, result.output
    listed = cli(env, "list", "--json")
    assert listed.code == 0, listed.output
    [item] = listed.json()
    return dict(item)


def assert_remote_copy(server: WeedServer, bucket: str, prefix: str, item: dict[str, Any]) -> None:
    """Artifact, .sha256 and manifest beside each other; the bytes are what the manifest says."""
    artifact = prefix + item["artifact"]
    assert {artifact, artifact + ".sha256", artifact + ".manifest.json"} <= set(keys(server, bucket, prefix))
    data = body(server, bucket, artifact)
    assert len(data) == item["size_bytes"] and hashlib.sha256(data).hexdigest() == item["sha256"]
    assert body(server, bucket, artifact + ".sha256").decode() == f"{item['sha256']}  {item['artifact']}\n"
    manifest = json.loads(body(server, bucket, artifact + ".manifest.json"))
    assert manifest["id"] == item["id"] and manifest["sha256"] == item["sha256"]


# --- the happy paths ----------------------------------------------------------------------
def test_local_s3_and_minio_in_one_pass_then_restore_from_the_bucket(
        pg: TempCluster, complex_db: str, env: dict[str, str], s3_server: WeedServer, target_db: str) -> None:
    s3_bucket, minio_bucket = s3_server.create_bucket(), s3_server.create_bucket()
    env = {**env, "POSTGRES_DB": complex_db, **s3_server.s3_env(s3_bucket, "pg/prod"),
           "S3_STORAGE_CLASS": "STANDARD_IA", **s3_server.minio_env(minio_bucket, "onsite")}
    item = backup_ok(env)
    assert item["database"] == complex_db
    assert item["destinations"] == ["local", "minio", "s3"]
    assert item["locations"]["local"] == {"path": item["artifact"]}
    assert item["locations"]["s3"] == {"key": item["artifact"]}
    assert item["locations"]["minio"] == {"key": item["artifact"]}
    assert_remote_copy(s3_server, s3_bucket, "pg/prod/", item)
    assert_remote_copy(s3_server, minio_bucket, "onsite/", item)
    local = Path(env["BACKUP_DIR"]) / item["artifact"]
    assert hashlib.sha256(local.read_bytes()).hexdigest() == item["sha256"]  # one pass: the same bytes everywhere

    # the storage class applies to the s3 artifact only, not its sidecars nor the minio copy
    client = s3_server.client()
    artifact = f"pg/prod/{item['artifact']}"
    assert client.head_object(Bucket=s3_bucket, Key=artifact).get("StorageClass") == "STANDARD_IA"
    for sidecar in (artifact + ".sha256", artifact + ".manifest.json"):
        assert client.head_object(Bucket=s3_bucket, Key=sidecar).get("StorageClass", "STANDARD") == "STANDARD"
    assert client.head_object(Bucket=minio_bucket, Key=f"onsite/{item['artifact']}").get(
        "StorageClass", "STANDARD") == "STANDARD"

    for destination in ("s3", "minio"):
        verified = cli(env, "verify", "latest", "--destination", destination)
        assert verified.code == 0, verified.output
        assert f"{destination}: sha256" in verified.stdout and "FAILED" not in verified.stdout
        assert "local:" not in verified.stdout
    only_s3 = cli(env, "list", "--json", "--destination", "s3").json()
    assert [i["destinations"] for i in only_s3] == [["s3"]]

    # a machine that lost its local folder: the buckets are enough
    folder = Path(env["BACKUP_DIR"])
    for path in folder.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    [remote] = cli(env, "list", "--json").json()
    assert remote["id"] == item["id"] and remote["destinations"] == ["minio", "s3"]
    restored = cli(env, "restore", item["id"], "--from", "s3", "--target-db", target_db, "--create")
    assert restored.code == 0, restored.output
    assert "from s3" in restored.stdout
    assert_same_data(pg, complex_db, target_db)
    assert not any(p.name.startswith("sentinel_backup_") for p in folder.iterdir())  # streamed, not downloaded


@pytest.fixture
def age_keys(tmp_path: Path) -> tuple[Path, str]:
    identity = tmp_path / "age-identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True, check=True)
    return identity, public.stdout.strip()


@pytest.mark.parametrize("destination", ["minio", "s3"])
def test_remote_only(pg: TempCluster, complex_db: str, env: dict[str, str], s3_server: WeedServer,
                     s3_bucket: str, target_db: str, age_keys: tuple[Path, str], destination: str) -> None:
    """LOCAL_ENABLED=false: nothing in BACKUP_DIR but the run's bookkeeping. The s3 case is also
    encrypted with age: the bucket never sees plain data."""
    env = {**env, "POSTGRES_DB": complex_db, "LOCAL_ENABLED": "false"}
    encrypted = destination == "s3"
    if encrypted:
        env.update(s3_server.s3_env(s3_bucket, "enc"), ENCRYPT_ENABLED="true", ENCRYPTION_METHOD="age",
                   AGE_RECIPIENTS=age_keys[1], AGE_IDENTITY_FILE=str(age_keys[0]))
    else:
        env.update(s3_server.minio_env(s3_bucket, "plain"))
    prefix = "enc/" if encrypted else "plain/"
    item = backup_ok(env)
    assert item["destinations"] == [destination] and set(item["locations"]) == {destination}
    assert not any(p.name.startswith("sentinel_backup_") for p in Path(env["BACKUP_DIR"]).iterdir())
    assert_remote_copy(s3_server, s3_bucket, prefix, item)
    stored = body(s3_server, s3_bucket, prefix + item["artifact"])
    if encrypted:
        assert item["artifact"].endswith(".sql.gz.age") and item["encryption"]["method"] == "age"
        assert stored.startswith(b"age-encryption.org/v1")
        # the standard tool reads what is in the bucket
        plain = subprocess.run(["age", "-d", "-i", str(age_keys[0])], input=stored, capture_output=True,
                               check=True).stdout
        assert b"-- PostgreSQL database dump complete" in gzip.decompress(plain)
    else:
        assert item["artifact"].endswith(".sql.gz") and item["encryption"] is None

    verified = cli(env, "verify", "latest", "--destination", destination)
    assert verified.code == 0, verified.output
    restored = cli(env, "restore", "latest", "--from", destination, "--target-db", target_db, "--create")
    assert restored.code == 0, restored.output
    assert_same_data(pg, complex_db, target_db)


# --- faults -------------------------------------------------------------------------------
def test_wrong_minio_secret_is_a_partial_success(pg: TempCluster, complex_db: str, env: dict[str, str],
                                                 s3_server: WeedServer, s3_bucket: str) -> None:
    env = {**env, "POSTGRES_DB": complex_db, **s3_server.minio_env(s3_bucket),
           "MINIO_SECRET_KEY": "not-the-secret-key"}
    result = cli(env, "backup")
    assert result.code == 3, result.output
    assert "minio" in result.output and "SignatureDoesNotMatch" in result.output
    assert "MINIO_SECRET_KEY" in result.output and "not-the-secret-key" not in result.output
    assert s3_server.secret_key not in result.output
    assert keys(s3_server, s3_bucket) == []

    [item] = json_doc(cli(env, "list", "--json"))  # minio cannot be listed: a warning, not a failure
    assert item["destinations"] == ["local"] and item["database"] == complex_db
    assert cli({**env, "MINIO_ENABLED": "false"}, "verify", "latest").code == 0
    record = json.loads((Path(env["BACKUP_DIR"]) / ".sentinel-last-run.json").read_text())
    assert record["exit_code"] == 3 and record["status"] == "partial"
    assert "minio" in record["databases"][complex_db]["failed_destinations"]


def test_missing_bucket_as_the_only_destination_fails_before_dumping(
        complex_db: str, env: dict[str, str], s3_server: WeedServer) -> None:
    env = {**env, "POSTGRES_DB": complex_db, "LOCAL_ENABLED": "false",
           **s3_server.s3_env("no-such-bucket-e2e", "pg")}
    result = cli(env, "backup")
    # exit 1 (a failure the store reported), not 2: the settings are well-formed, the bucket is absent
    assert result.code == 1, result.output
    assert "no-such-bucket-e2e" in result.stderr and "NoSuchBucket" in result.stderr
    assert "create bucket no-such-bucket-e2e" in result.stderr and "S3_BUCKET" in result.stderr
    assert f"Dumping {complex_db}" not in result.output  # nothing was dumped
    assert "no-such-bucket-e2e" not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert not any(p.name.startswith("sentinel_backup_") for p in Path(env["BACKUP_DIR"]).iterdir())


def test_missing_bucket_beside_local_is_a_partial_success(complex_db: str, env: dict[str, str],
                                                          s3_server: WeedServer) -> None:
    """A destination that cannot be used is reported, the others still get the backup."""
    env = {**env, "POSTGRES_DB": complex_db, **s3_server.s3_env("no-such-bucket-e2e", "pg")}
    result = cli(env, "backup")
    assert result.code == 3, result.output
    assert "no-such-bucket-e2e" in result.output and "NoSuchBucket" in result.output
    assert "create bucket no-such-bucket-e2e" in result.output
    [item] = json_doc(cli(env, "list", "--json"))
    assert item["destinations"] == ["local"]


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Like helpers.cli, but returns the running child."""
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "S3_", "MINIO_", "PG"))}
    child.update(env)
    return subprocess.Popen([sys.executable, "-m", "sentinel_backup", *args], env=child, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_upload(server: WeedServer, bucket: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the backup ended before its upload was seen: {proc.communicate()}"
        if client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            return
        time.sleep(0.02)
    raise AssertionError("no multipart upload started")


def test_s3_server_killed_mid_upload(pg: TempCluster, new_db: str, env: dict[str, str],
                                     weed_factory: Callable[[], WeedServer]) -> None:
    server = weed_factory()
    bucket = server.create_bucket()
    # ~190 MB of dump, stored uncompressed: a dozen 16 MiB parts, so the upload is in flight for a while
    pg.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 700000) g",
            new_db)
    env = {**env, "POSTGRES_DB": new_db, "COMPRESSION": "none", **server.s3_env(bucket, "pg")}
    proc = spawn(env, "backup")
    try:
        wait_for_upload(server, bucket, proc)
        proc.send_signal(signal.SIGSTOP)  # hold the run still while the server dies: the upload is in flight
        try:
            assert keys(server, bucket) == [], "the upload completed before the server could be killed"
            server.kill()
        finally:
            proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        reap(proc)
    result = Result(proc.returncode, stdout, stderr)
    assert result.code == 3, result.output
    assert "Destination s3 failed" in result.output and bucket in result.output
    local = [p.name for p in Path(env["BACKUP_DIR"]).iterdir() if p.name.startswith("sentinel_backup_")]
    assert len(local) == 3  # artifact, .sha256, manifest: the local copy was committed

    server.start()
    assert keys(server, bucket) == []  # no object, and above all no manifest
    [item] = cli(env, "list", "--json").json()
    assert item["destinations"] == ["local"] and item["database"] == new_db
    # a multipart upload the dead server could not abort is invisible: never listed, never restorable
    for upload in server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        assert upload["Key"] == f"pg/{item['artifact']}"
    assert cli(env, "verify", "latest", "--destination", "local").code == 0
    # the next run does not depend on the failed copy
    time.sleep(1.1)  # a new artifact name (stamped to the second)
    pg.psql("TRUNCATE big", new_db)
    again = cli(env, "backup")
    assert again.code == 0, again.output
    newest = cli(env, "list", "--json").json()[0]
    assert newest["destinations"] == ["local", "s3"]


def test_corrupted_remote_object_is_refused(pg: TempCluster, complex_db: str, env: dict[str, str],
                                            s3_server: WeedServer, s3_bucket: str, target_db: str) -> None:
    env = {**env, "POSTGRES_DB": complex_db, **s3_server.s3_env(s3_bucket, "pg")}
    item = backup_ok(env)
    key = f"pg/{item['artifact']}"
    data = bytearray(body(s3_server, s3_bucket, key))
    data[len(data) // 2] ^= 0x01
    s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))

    verified = cli(env, "verify", "latest", "--destination", "s3")
    assert verified.code == 1, verified.output
    assert "s3: sha256" in verified.stdout and "FAILED" in verified.stdout
    assert cli(env, "verify", "latest", "--destination", "local").code == 0  # the local copy is fine

    restored = cli(env, "restore", "latest", "--from", "s3", "--target-db", target_db, "--create")
    assert restored.code == 1, restored.output
    assert "does not match its manifest" in restored.stderr and "Traceback" not in restored.output
    assert not database_exists(pg, target_db)
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%sentinel_restore'") == "0"


def test_object_lock_skips_the_locked_backup_in_prune(pg: TempCluster, complex_db: str, env: dict[str, str],
                                                      s3_server: WeedServer, target_db: str) -> None:
    bucket = s3_server.create_bucket(object_lock=True)
    env = {**env, "POSTGRES_DB": complex_db, "LOCAL_ENABLED": "false", **s3_server.s3_env(bucket, "locked"),
           "S3_OBJECT_LOCK_DAYS": "1", "RETENTION_KEEP_LAST": "1", "RETENTION_AFTER_BACKUP": "false"}
    assert cli(env, "backup").code == 0
    time.sleep(1.1)  # a new artifact name (stamped to the second)
    assert cli(env, "backup").code == 0
    newest, oldest = cli(env, "list", "--json").json()
    retention = s3_server.client().get_object_retention(Bucket=bucket, Key=f"locked/{oldest['artifact']}")
    assert retention["Retention"]["Mode"] == "GOVERNANCE"

    [plan] = json_doc(cli(env, "prune", "--dry-run", "--json"))
    assert [d["id"] for d in plan["decisions"] if d["action"] == "remove"] == [oldest["id"]]

    pruned = cli(env, "prune", "--json")
    [applied] = json_doc(pruned)
    assert applied["result"] == {"removed": 0, "locked": 1, "errors": 0}
    assert "object lock" in pruned.output  # the note, at INFO, not an error
    assert "[ERROR]" not in pruned.output
    assert [i["id"] for i in cli(env, "list", "--json").json()] == [newest["id"], oldest["id"]]
    keys_now = keys(s3_server, bucket, "locked/")
    assert f"locked/{oldest['artifact']}.manifest.json" in keys_now  # still a listed, complete backup

    restored = cli(env, "restore", oldest["id"], "--from", "s3", "--target-db", target_db, "--create")
    assert restored.code == 0, restored.output
    assert_same_data(pg, complex_db, target_db)
