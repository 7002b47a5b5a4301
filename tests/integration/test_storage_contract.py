"""One contract for every destination: local, s3 (S3_ENDPOINT_URL) and minio, against real stores.

Each backend is built from settings through ``storage.registry``, as the program builds it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_backup.config import load_settings
from sentinel_backup.errors import NotFound, StorageError
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.registry import build_destinations
from sentinel_backup.storage.s3 import S3Storage
from sentinel_backup.storage.wrappers import RetryingStorage
from tests.plugins.s3 import WeedServer

KINDS = ["local", "s3", "minio", "minio+retrying"]  # the last: the contract holds through RetryingStorage
MiB = 1024 * 1024


def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> None:
    """Only these settings (and no AWS profile, config file or instance metadata from this machine)."""
    for key in list(os.environ):
        if key.startswith(("POSTGRES_", "S3_", "MINIO_", "LOCAL_", "BACKUP_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    base = {"POSTGRES_USER": "postgres", "POSTGRES_DB": "app", "BACKUP_DIR": str(tmp_path / "backups"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true"}
    for key, value in {**base, **env}.items():
        monkeypatch.setenv(key, value)


def make_storage(kind: str, server: WeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    if kind.endswith("+retrying"):
        return RetryingStorage(make_storage(kind.removesuffix("+retrying"), server, tmp_path, monkeypatch))
    if kind == "local":
        env = {"LOCAL_ENABLED": "true"}
    elif kind == "s3":
        env = {"LOCAL_ENABLED": "false", **server.s3_env(server.create_bucket(), "pg/nightly")}
    else:
        env = {"LOCAL_ENABLED": "false", **server.minio_env(server.create_bucket(), "onsite")}
    isolated_env(monkeypatch, tmp_path, env)
    [storage] = build_destinations(load_settings())
    assert storage.name == kind
    if kind == "local":
        (tmp_path / "backups").mkdir(mode=0o700)
    return storage


@pytest.fixture(params=KINDS)
def storage(request: pytest.FixtureRequest, s3_server: WeedServer, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Storage:
    return make_storage(request.param, s3_server, tmp_path, monkeypatch)


def names(storage: Storage, prefix: str = "", *, deep: bool = False) -> set[str]:
    return {info.key for info in storage.list(prefix, deep=deep)}


def sha256_of(storage: Storage, key: str, chunk: int = MiB) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with storage.open_reader(key) as reader:
        while data := reader.read(chunk):
            digest.update(data)
            size += len(data)
    return digest.hexdigest(), size


def random_stream(total: int, chunk: int) -> Iterator[bytes]:
    block = os.urandom(chunk)
    for index in range(0, total, chunk):
        # vary every chunk cheaply so no two parts are equal
        yield index.to_bytes(8, "big") + block[8 : min(chunk, total - index)]


# --- small objects -------------------------------------------------------------------
def test_put_read_stat_list_delete(storage: Storage) -> None:
    key = "sentinel_backup_app_20261129T030000Z.sql.gz"
    info = storage.put_bytes(key, b"hello world")
    assert (info.key, info.size) == (key, 11)
    assert info.modified.tzinfo is not None and info.modified.utcoffset() == timedelta(0)
    assert storage.read_bytes(key) == b"hello world"
    stat = storage.stat(key)
    assert stat is not None and (stat.key, stat.size) == (key, 11)
    assert abs(stat.modified - datetime.now(UTC)) < timedelta(hours=1)
    assert [(i.key, i.size) for i in storage.list()] == [(key, 11)]
    storage.delete(key)
    assert storage.stat(key) is None
    assert names(storage) == set()
    storage.delete(key)  # missing is not an error


def test_empty_object_and_overwrite(storage: Storage) -> None:
    assert storage.put_bytes("empty", b"").size == 0
    assert storage.read_bytes("empty") == b""
    storage.put_bytes("doc.json", b"first")
    storage.put_bytes("doc.json", b"second version")
    assert storage.read_bytes("doc.json") == b"second version"
    assert names(storage) == {"empty", "doc.json"}


def test_missing_objects(storage: Storage) -> None:
    assert storage.stat("nothing-here") is None
    with pytest.raises(NotFound):
        storage.read_bytes("nothing-here")
    with pytest.raises(NotFound):
        storage.open_reader("nothing-here")


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/", "../up", "a/../b", "wal/.partial", ".hidden", "nul\0"])
def test_invalid_names_are_refused(storage: Storage, bad: str) -> None:
    with pytest.raises(StorageError):
        storage.put_bytes(bad, b"x")


def test_list_by_prefix(storage: Storage) -> None:
    keys = ["sentinel_backup_app_1.sql.gz", "sentinel_backup_app_1.sql.gz.sha256",
            "sentinel_backup_app_2.sql.gz", "sentinel_backup_appx_1.sql.gz", "sentinel_backup_other_1.sql.gz"]
    for key in keys:
        storage.put_bytes(key, key.encode())
    assert names(storage, "sentinel_backup_app_") == set(keys[:3])
    assert names(storage, "sentinel_backup_app") == set(keys[:4])
    assert names(storage, "sentinel_backup_") == set(keys)
    assert names(storage, "nothing") == set()
    assert {i.key: i.size for i in storage.list("sentinel_backup_other")} == {keys[4]: len(keys[4])}


def test_folders(storage: Storage) -> None:
    """Keys may hold folders (the layout's namespaces): a root listing never shows what is
    below it; a folder listing shows its objects; ``deep`` shows everything below."""
    keys = ["root.sql.gz", "basebackups/b1.tar.zst", "wal/a/000000010000000000000001",
            "wal/a/000000010000000000000002", "wal/b/00000002.history"]
    for key in keys:
        assert storage.put_bytes(key, key.encode()).key == key
    assert names(storage) == {"root.sql.gz"}
    assert names(storage, "wal/") == set()
    assert names(storage, "wal/", deep=True) == set(keys[2:])
    assert names(storage, "wal/a/") == set(keys[2:4])
    assert names(storage, "wal/a/00000001000000000000000") == set(keys[2:4])
    assert names(storage, "wal/a/000000010000000000000002") == {keys[3]}
    assert names(storage, "", deep=True) == set(keys)
    assert storage.read_bytes(keys[1]) == keys[1].encode()
    info = storage.stat(keys[2])
    assert info is not None and info.key == keys[2]
    assert storage.stat("wal/a") is None and storage.stat("wal/nothing/x") is None
    writer = storage.open_writer("wal/c/deep/stream")
    writer.write(b"x" * 1000)
    assert names(storage, "wal/c/", deep=True) == set()  # invisible until commit, in a new folder too
    writer.commit()
    assert names(storage, "wal/c/", deep=True) == {"wal/c/deep/stream"}
    for key in [*keys, "wal/c/deep/stream"]:
        storage.delete(key)
    assert names(storage, "", deep=True) == set()
    assert list(storage.list_partials()) == []


# --- streams -------------------------------------------------------------------------
def test_stream_is_invisible_until_commit(storage: Storage) -> None:
    writer = storage.open_writer("stream.bin")
    data = [os.urandom(64 * 1024) for _ in range(40)]
    for chunk in data:
        writer.write(chunk)
    assert storage.stat("stream.bin") is None
    assert names(storage) == set()
    info = writer.commit()
    assert (info.key, info.size) == ("stream.bin", sum(map(len, data)))
    assert storage.read_bytes("stream.bin") == b"".join(data)


def test_sidecar_writer(storage: Storage) -> None:
    writer = storage.open_writer("x.sha256", artifact=False)
    writer.write(b"abc  x\n")
    assert writer.commit().size == 7
    assert storage.read_bytes("x.sha256") == b"abc  x\n"


@pytest.mark.parametrize("size", [100, 20 * MiB], ids=["small", "multipart"])
def test_abort_leaves_nothing(storage: Storage, size: int) -> None:
    writer = storage.open_writer("aborted.bin")
    try:
        for chunk in random_stream(size, MiB):
            writer.write(chunk)
        raise RuntimeError("the dump failed")
    except RuntimeError:
        writer.abort()
    writer.abort()  # idempotent
    assert storage.stat("aborted.bin") is None
    assert names(storage) == set()
    if isinstance(storage, S3Storage):
        uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix)
        assert uploads.get("Uploads", []) == []


def test_reader_streams_in_chunks(storage: Storage) -> None:
    payload = os.urandom(3 * MiB + 17)
    storage.put_bytes("chunks.bin", payload)
    with storage.open_reader("chunks.bin") as reader:
        first = reader.read(1000)
        rest = b"".join(iter(lambda: reader.read(64 * 1024), b""))
    assert len(first) == 1000 and first + rest == payload


@pytest.mark.slow
def test_large_object_streamed(storage: Storage) -> None:
    """~256 MiB from a generator: multipart on S3, never held in memory, SHA-256 checked on read-back."""
    total, chunk = 256 * MiB + 12345, 4 * MiB
    digest = hashlib.sha256()
    writer = storage.open_writer("large.bin")
    for data in random_stream(total, chunk):
        digest.update(data)
        writer.write(data)
        if isinstance(storage, S3Storage):  # bounded memory: at most one part buffered here
            assert len(writer.buffer) < storage.part_size  # type: ignore[attr-defined]
    info = writer.commit()
    assert info.size == total
    if isinstance(storage, S3Storage):
        assert writer.verified_by_store  # type: ignore[attr-defined]  # the store checked every part's SHA-256
        assert len(writer.parts) == -(-total // storage.part_size)  # type: ignore[attr-defined]
    stat = storage.stat("large.bin")
    assert stat is not None and stat.size == total
    assert sha256_of(storage, "large.bin") == (digest.hexdigest(), total)


# --- many objects --------------------------------------------------------------------
def test_list_past_one_thousand(storage: Storage) -> None:
    keys = [f"obj_{i:05d}" for i in range(1150)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: storage.put_bytes(k, k.encode()), keys))
    listed = list(storage.list())
    assert sorted(i.key for i in listed) == keys
    assert all(i.size == 9 for i in listed)
    assert names(storage, "obj_011") == {f"obj_{i:05d}" for i in range(1100, 1150)}
