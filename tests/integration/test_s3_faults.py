"""S3 destinations when things go wrong, against real SeaweedFS servers (no mocks)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_backup.config import load_settings
from sentinel_backup.errors import NotFound, ObjectLocked, StorageError
from sentinel_backup.storage.registry import build_destinations, destination_by_name
from sentinel_backup.storage.s3 import S3Config, S3Storage
from tests.integration.test_storage_contract import isolated_env, random_stream
from tests.plugins.s3 import WeedServer

MiB = 1024 * 1024


def storage_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> S3Storage:
    isolated_env(monkeypatch, tmp_path, {"LOCAL_ENABLED": "false", **env})
    [storage] = build_destinations(load_settings())
    assert isinstance(storage, S3Storage)
    return storage


def direct(server: WeedServer, bucket: str, **kwargs: object) -> S3Storage:
    config = S3Config(name="minio", bucket=bucket, endpoint_url=server.endpoint, access_key=server.access_key,
                      secret_key=server.secret_key, region=server.region, path_style=True,
                      variable="MINIO_BUCKET")
    return S3Storage(config, **kwargs)  # type: ignore[arg-type]


def assert_clean(error: StorageError, server: WeedServer, *words: str) -> None:
    text = f"{error} {error.hint}"
    assert server.secret_key not in text
    for word in words:
        assert word in text, (word, text)


# --- credentials and buckets -------------------------------------------------------------
def test_wrong_secret_key_minio(s3_server: WeedServer, s3_bucket: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**s3_server.minio_env(s3_bucket), "MINIO_SECRET_KEY": "not-the-secret"}
    storage = storage_from(monkeypatch, tmp_path, env)
    for attempt in (storage.probe, storage.prepare, lambda: storage.put_bytes("k", b"x")):
        with pytest.raises(StorageError) as info:
            attempt()
        assert_clean(info.value, s3_server, "minio", s3_bucket, "SignatureDoesNotMatch", "MINIO_SECRET_KEY")
        assert "not-the-secret" not in f"{info.value} {info.value.hint}"


def test_wrong_secret_key_s3_from_aws_chain(s3_server: WeedServer, s3_bucket: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**s3_server.s3_env(s3_bucket, "pg"), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    storage = storage_from(monkeypatch, tmp_path, env)
    with pytest.raises(StorageError) as info:
        storage.probe()
    assert_clean(info.value, s3_server, "s3:", s3_bucket, "SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY")


def test_unknown_access_key(s3_server: WeedServer, s3_bucket: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**s3_server.minio_env(s3_bucket), "MINIO_ACCESS_KEY": "nobody"}
    with pytest.raises(StorageError) as info:
        storage_from(monkeypatch, tmp_path, env).probe()
    assert_clean(info.value, s3_server, "InvalidAccessKeyId", "MINIO_ACCESS_KEY")


def test_secret_key_file(s3_server: WeedServer, s3_bucket: str, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "minio-secret"
    secret.write_text(s3_server.secret_key + "\n")
    secret.chmod(0o600)  # secret files readable by others are refused
    env = {**s3_server.minio_env(s3_bucket), "MINIO_SECRET_KEY_FILE": str(secret)}
    del env["MINIO_SECRET_KEY"]
    assert "OK" in storage_from(monkeypatch, tmp_path, env).probe()


def test_missing_bucket(s3_server: WeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = storage_from(monkeypatch, tmp_path, s3_server.s3_env("no-such-bucket-here", "x"))
    for attempt in (storage.prepare, storage.probe, lambda: list(storage.list())):
        with pytest.raises(StorageError) as info:
            attempt()
        assert_clean(info.value, s3_server, "s3:", "no-such-bucket-here", "NoSuchBucket", "S3_BUCKET")
    writer = storage.open_writer("a.sql.gz")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        for chunk in random_stream(40 * MiB, MiB):
            writer.write(chunk)
        writer.commit()
    writer.abort()
    buckets = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert "no-such-bucket-here" not in buckets  # not created behind the user's back


def test_nothing_listening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.plugins.s3 import free_ports

    [port] = free_ports(1)
    env = {"MINIO_ENABLED": "true", "MINIO_ENDPOINT": f"http://127.0.0.1:{port}", "MINIO_BUCKET": "backups/pg",
           "MINIO_ACCESS_KEY": "k", "MINIO_SECRET_KEY": "s"}
    with pytest.raises(StorageError) as info:
        storage_from(monkeypatch, tmp_path, env).probe()
    assert f"127.0.0.1:{port}" in str(info.value) and "MINIO_ENDPOINT" in (info.value.hint or "")


def test_destination_by_name_reads_a_bucket(s3_server: WeedServer, s3_bucket: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A new machine with only the bucket's settings (S3_ENABLED unset) can read it."""
    env = s3_server.s3_env(s3_bucket, "pg")
    del env["S3_ENABLED"]
    isolated_env(monkeypatch, tmp_path, env)
    s3_server.client().put_object(Bucket=s3_bucket, Key="pg/artifact", Body=b"data")
    storage = destination_by_name(load_settings(), "s3")
    assert storage.read_bytes("artifact") == b"data"


# --- the server going away -------------------------------------------------------------
def test_server_killed_mid_upload(weed_factory: Callable[[], WeedServer]) -> None:
    server = weed_factory()
    bucket = server.create_bucket()
    storage = direct(server, bucket, part_size=5 * MiB)
    writer = storage.open_writer("sentinel_backup_app_1.sql.gz")
    for chunk in random_stream(12 * MiB, MiB):  # two parts uploaded, one being buffered
        writer.write(chunk)
    server.kill()
    with pytest.raises(StorageError) as info:
        for chunk in random_stream(200 * MiB, MiB):
            writer.write(chunk)
        writer.commit()
    assert "minio" in str(info.value) and bucket in str(info.value)
    assert "MINIO_ENDPOINT" in (info.value.hint or "")
    writer.abort()  # harmless although the server is gone
    writer.abort()
    server.start()
    assert storage.stat("sentinel_backup_app_1.sql.gz") is None
    assert list(storage.list()) == []
    # the multipart upload the dead server could not abort is cleaned up later
    storage.abort_stale_uploads(timedelta(0))
    assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_reader_resumes_after_a_dropped_connection(weed_factory: Callable[[], WeedServer]) -> None:
    server = weed_factory()
    storage = direct(server, server.create_bucket())
    payload = os.urandom(24 * MiB)
    storage.put_bytes("big", payload)
    reader = storage.open_reader("big")
    head = reader.read(2 * MiB)
    server.stop()
    server.start()
    rest = b"".join(iter(lambda: reader.read(MiB), b""))
    assert getattr(reader, "raw").resumes >= 1  # noqa: B009 - BinaryIO hides the S3Reader
    reader.close()
    assert hashlib.sha256(head + rest).digest() == hashlib.sha256(payload).digest()


# --- checksums, storage class, object lock --------------------------------------------
def test_store_verifies_checksums_and_plain_uploads_work(s3_server: WeedServer, s3_bucket: str) -> None:
    for checksums in (True, False):
        storage = direct(s3_server, s3_bucket, part_size=5 * MiB, checksums=checksums)
        for size in (1000, 11 * MiB):
            writer = storage.open_writer(f"obj-{checksums}-{size}")
            for chunk in random_stream(size, MiB):
                writer.write(chunk)
            assert writer.commit().size == size
            assert writer.verified_by_store is checksums
    assert len(list(direct(s3_server, s3_bucket).list())) == 4


def test_storage_class_applies_to_artifacts_only(s3_server: WeedServer, s3_bucket: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**s3_server.s3_env(s3_bucket), "S3_STORAGE_CLASS": "standard_ia"}
    storage = storage_from(monkeypatch, tmp_path, env)
    for key, artifact in (("a.sql.gz", True), ("a.json", False)):
        writer = storage.open_writer(key, artifact=artifact)
        writer.write(b"x" * 2000)
        writer.commit()
    client = s3_server.client()
    assert client.head_object(Bucket=s3_bucket, Key="a.sql.gz").get("StorageClass") == "STANDARD_IA"
    assert client.head_object(Bucket=s3_bucket, Key="a.json").get("StorageClass", "STANDARD") == "STANDARD"
    assert not storage.is_locked("a.sql.gz")  # a bucket without object lock


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_object_lock_refuses_deletion(s3_server: WeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      mode: str) -> None:
    bucket = s3_server.create_bucket(object_lock=True)
    env = {**s3_server.minio_env(bucket, "locked"), "MINIO_OBJECT_LOCK_DAYS": "2", "MINIO_OBJECT_LOCK_MODE": mode}
    storage = storage_from(monkeypatch, tmp_path, env)
    for key, size in (("small.sql.gz", 100), ("large.sql.gz", 20 * MiB)):
        writer = storage.open_writer(key)
        for chunk in random_stream(size, MiB):
            writer.write(chunk)
        writer.commit()
        retention = s3_server.client().get_object_retention(Bucket=bucket, Key=f"locked/{key}")["Retention"]
        assert retention["Mode"] == mode
        assert retention["RetainUntilDate"] > datetime.now(UTC) + timedelta(days=1)
        assert storage.is_locked(key)
        with pytest.raises(ObjectLocked) as info:
            storage.delete(key)
        assert "lock" in str(info.value) and bucket in str(info.value)
        assert storage.stat(key) is not None  # still there, still listed
    storage.put_bytes("small.sql.gz.sha256", b"sum")  # sidecars carry no lock
    assert not storage.is_locked("small.sql.gz.sha256")
    storage.delete("small.sql.gz.sha256")
    assert sorted(i.key for i in storage.list()) == ["large.sql.gz", "small.sql.gz"]
    assert "OK" in storage.probe()


def test_read_of_missing_object_names_it(s3_server: WeedServer, s3_bucket: str) -> None:
    with pytest.raises(NotFound, match=f"{s3_bucket}/gone"):
        direct(s3_server, s3_bucket).open_reader("gone")
