"""Destination settings: validation and hints (no server needed)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sentinel_backup.config import Settings, load_settings
from sentinel_backup.errors import ConfigError
from sentinel_backup.storage.local import LocalStorage
from sentinel_backup.storage.registry import build_destinations, destination_by_name
from sentinel_backup.storage.s3 import MAX_PART_SIZE, PART_SIZE, S3Storage, part_size_for

MINIO = {"MINIO_ENABLED": "true", "MINIO_ENDPOINT": "http://127.0.0.1:9000", "MINIO_BUCKET": "backups/pg/prod",
         "MINIO_ACCESS_KEY": "access", "MINIO_SECRET_KEY": "very-secret"}


Load = Callable[..., Settings]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Load]:
    for key in list(os.environ):
        if key.startswith(("POSTGRES_", "S3_", "MINIO_", "LOCAL_", "BACKUP_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)

    def load(**env: str) -> Settings:
        base = {"POSTGRES_USER": "postgres", "POSTGRES_DB": "app", "BACKUP_DIR": str(tmp_path / "b"),
                "AWS_EC2_METADATA_DISABLED": "true"}
        for key, value in {**base, **env}.items():
            monkeypatch.setenv(key, value)
        return load_settings()

    yield load


def config_error(settings: Load, **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_destinations(settings(**env))
    return info.value


def test_local_only_by_default(settings: Load) -> None:
    [local] = build_destinations(settings())
    assert isinstance(local, LocalStorage) and local.name == "local"


def test_all_three(settings: Load) -> None:
    found = build_destinations(settings(S3_ENABLED="true", S3_BUCKET="s3://my-backups//pg/nightly/",
                                        S3_STORAGE_CLASS="standard_ia", **MINIO))
    assert [d.name for d in found] == ["local", "s3", "minio"]
    s3, minio = found[1], found[2]
    assert isinstance(s3, S3Storage) and isinstance(minio, S3Storage)
    assert (s3.bucket, s3.prefix, s3.config.storage_class) == ("my-backups", "pg/nightly/", "STANDARD_IA")
    assert not s3.config.path_style and s3.config.access_key is None  # the AWS chain
    assert (minio.bucket, minio.prefix, minio.config.region) == ("backups", "pg/prod/", "us-east-1")
    assert minio.config.path_style and minio.config.secret_key == "very-secret"
    assert "very-secret" not in repr(minio.config) + minio.describe()


def test_endpoint_means_path_style(settings: Load) -> None:
    [s3] = build_destinations(settings(LOCAL_ENABLED="false", S3_ENABLED="true", S3_BUCKET="s3://bkt",
                                       S3_ENDPOINT_URL="https://store.example.com:9000/"))
    assert isinstance(s3, S3Storage)
    assert (s3.config.endpoint_url, s3.config.path_style, s3.prefix) == ("https://store.example.com:9000", True, "")


@pytest.mark.parametrize(("env", "words"), [
    ({"S3_ENABLED": "true"}, ["S3_BUCKET", "not set"]),
    ({"S3_ENABLED": "true", "S3_BUCKET": "my-backups/pg"}, ["S3_BUCKET", "s3://"]),
    ({"S3_ENABLED": "true", "S3_BUCKET": "s3://My_Bucket!"}, ["S3_BUCKET", "bucket name"]),
    ({"S3_ENABLED": "true", "S3_BUCKET": "s3://ok-bucket/../x"}, ["S3_BUCKET", ".."]),
    ({"S3_ENABLED": "true", "S3_BUCKET": "s3://bkt", "S3_ENDPOINT_URL": "store:9000"}, ["S3_ENDPOINT_URL"]),
    ({"S3_ENABLED": "true", "S3_BUCKET": "s3://bkt", "S3_ENDPOINT_URL": "http://h:99999"}, ["S3_ENDPOINT_URL"]),
    ({"S3_ENABLED": "true", "S3_BUCKET": "s3://bkt", "S3_OBJECT_LOCK_MODE": "forever"}, ["S3_OBJECT_LOCK_MODE"]),
    ({"S3_ENABLED": "true", "S3_BUCKET": "s3://bkt", "S3_STORAGE_CLASS": "cold storage"}, ["S3_STORAGE_CLASS"]),
    ({"MINIO_ENABLED": "true"}, ["MINIO_ENDPOINT", "MINIO_BUCKET", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"]),
    ({**MINIO, "MINIO_ENDPOINT": "minio:9000"}, ["MINIO_ENDPOINT", "http"]),
    ({**MINIO, "MINIO_ENDPOINT": "http://minio:9000/path"}, ["MINIO_ENDPOINT", "path"]),
    ({**MINIO, "MINIO_SECRET_KEY_FILE": "/nonexistent"}, ["MINIO_SECRET_KEY_FILE", "only one"]),
    ({**MINIO, "MINIO_SECRET_KEY": ""}, ["MINIO_SECRET_KEY"]),
    ({"LOCAL_ENABLED": "false"}, ["no destination"]),
])
def test_invalid_settings_name_the_variable(settings: Load, env: dict[str, str], words: list[str]) -> None:
    error = config_error(settings, **env)
    text = f"{error} {error.hint}"
    for word in words:
        assert word in text, (word, text)
    assert "very-secret" not in text


def test_secret_in_endpoint_url_is_not_echoed(settings: Load) -> None:
    error = config_error(settings, **{**MINIO, "MINIO_ENDPOINT": "ftp://user:hunter2@minio:9000"})
    assert "hunter2" not in f"{error} {error.hint}"


def test_secret_key_file(settings: Load, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\nignored\n")
    env = {**MINIO, "MINIO_SECRET_KEY_FILE": str(secret)}
    del env["MINIO_SECRET_KEY"]
    assert "chmod 600" in str(config_error(settings, **env).hint)  # readable by others: refused
    secret.chmod(0o600)
    minio = build_destinations(settings(**env))[1]
    assert isinstance(minio, S3Storage) and minio.config.secret_key == "from-file"
    assert "MINIO_SECRET_KEY_FILE" in str(config_error(settings, **{**env, "MINIO_SECRET_KEY_FILE": "/nope"}))


def test_destination_by_name(settings: Load) -> None:
    loaded = settings(S3_BUCKET="s3://bkt/p")  # S3_ENABLED off: still readable by name
    assert destination_by_name(loaded, "local").name == "local"
    assert destination_by_name(loaded, "S3").name == "s3"
    with pytest.raises(ConfigError, match="minio is not configured"):
        destination_by_name(loaded, "minio")
    with pytest.raises(ConfigError, match="unknown destination"):
        destination_by_name(loaded, "ftp")


def test_part_sizes_cover_five_tib_in_ten_thousand_parts() -> None:
    sizes = [part_size_for(n) for n in range(1, 10_001)]
    assert sizes[0] == PART_SIZE == 16 * 1024 * 1024
    assert sizes[1249] == PART_SIZE and sizes[1250] == 2 * PART_SIZE
    assert max(sizes) <= MAX_PART_SIZE
    assert sum(sizes) >= 4980 * 1024**3  # 5.3 TB
    assert sum(sizes[:1250]) == 1250 * PART_SIZE  # a dump under 19 GiB buffers 16 MiB parts
