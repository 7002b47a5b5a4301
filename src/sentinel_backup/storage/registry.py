"""From settings to destinations: which are enabled, each validated, named `local`, `s3`, `minio`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sentinel_backup.config_values import read_secret_file
from sentinel_backup.errors import ConfigError
from sentinel_backup.storage.base import Storage
from sentinel_backup.storage.local import LocalStorage

if TYPE_CHECKING:  # boto3 takes a second to import: only when S3 or MinIO is used
    from sentinel_backup.config import Settings
    from sentinel_backup.storage.s3 import S3Config, S3Storage

NAMES = ("local", "s3", "minio")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


def build_destinations(settings: Settings) -> list[Storage]:
    """Every enabled destination, in the order local, s3, minio; ConfigError when none is."""
    destinations: list[Storage] = []
    if settings.local_enabled:
        destinations.append(LocalStorage(settings.backup_dir))
    if settings.s3_enabled:
        destinations.append(_s3_storage(s3_config(settings)))
    if settings.minio_enabled:
        destinations.append(_s3_storage(minio_config(settings)))
    if not destinations:
        raise ConfigError("no destination is enabled (LOCAL_ENABLED=false, S3_ENABLED and MINIO_ENABLED off)",
                          "set LOCAL_ENABLED=true, or enable S3 (S3_ENABLED, S3_BUCKET) or MinIO (MINIO_ENABLED, ...)")
    return destinations


def destination_by_name(settings: Settings, name: str) -> Storage:
    """One destination by name, for `--destination`/`--from`. A remote one needs its settings
    (bucket, endpoint, keys) but not its *_ENABLED flag, so a new machine can read a bucket."""
    name = name.strip().lower()
    if name == "local":
        return LocalStorage(settings.backup_dir)
    if name == "s3":
        if not settings.s3_enabled and not settings.s3_bucket:
            raise ConfigError("destination s3 is not configured", "set S3_ENABLED=true and S3_BUCKET=s3://bucket/prefix")
        return _s3_storage(s3_config(settings))
    if name == "minio":
        if not settings.minio_enabled and not settings.minio_bucket:
            raise ConfigError("destination minio is not configured",
                              "set MINIO_ENABLED=true, MINIO_ENDPOINT, MINIO_BUCKET, MINIO_ACCESS_KEY"
                              " and MINIO_SECRET_KEY")
        return _s3_storage(minio_config(settings))
    raise ConfigError(f"unknown destination {name!r}", f"use one of: {', '.join(NAMES)}")


def _s3_storage(config: S3Config) -> S3Storage:
    from sentinel_backup.storage.s3 import S3Storage

    return S3Storage(config)


def s3_config(settings: Settings) -> S3Config:
    if not settings.s3_bucket:
        raise ConfigError("S3_ENABLED is true but S3_BUCKET is not set",
                          "set S3_BUCKET=s3://bucket/optional/prefix, or S3_ENABLED=false")
    url = settings.s3_bucket
    if not url.startswith("s3://"):
        raise ConfigError(f"S3_BUCKET must be an s3:// URL (got {url!r})", f"write it as s3://{url.lstrip('/')}")
    bucket, prefix = split_bucket(url.removeprefix("s3://"), "S3_BUCKET", "s3://")
    endpoint = check_endpoint(settings.s3_endpoint_url, "S3_ENDPOINT_URL") if settings.s3_endpoint_url else None
    from sentinel_backup.storage.aws_env import endpoint_url
    from sentinel_backup.storage.s3 import S3Config

    if endpoint is None and (from_file := endpoint_url(settings.aws_env)) is not None:
        endpoint = check_endpoint(from_file, "AWS_ENDPOINT_URL")

    return S3Config(
        name="s3", bucket=bucket, prefix=prefix, region=settings.s3_region, endpoint_url=endpoint,
        storage_class=check_storage_class(settings.s3_storage_class),
        lock_days=settings.s3_object_lock_days,
        lock_mode=check_lock_mode(settings.s3_object_lock_mode, "S3_OBJECT_LOCK_MODE"),
        path_style=endpoint is not None, variable="S3_BUCKET", aws_env=settings.aws_env,
    )


def minio_config(settings: Settings) -> S3Config:
    missing = [var for var, value in (("MINIO_ENDPOINT", settings.minio_endpoint),
                                      ("MINIO_BUCKET", settings.minio_bucket),
                                      ("MINIO_ACCESS_KEY", settings.minio_access_key)) if not value]
    secret = settings.minio_secret_key or None  # empty is unset
    if secret is None and settings.minio_secret_key_file is None:
        missing.append("MINIO_SECRET_KEY (or MINIO_SECRET_KEY_FILE)")
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"MINIO_ENABLED is true but {', '.join(missing)} {verb} not set",
                          "set them, or MINIO_ENABLED=false")
    if secret is not None and settings.minio_secret_key_file is not None:
        raise ConfigError("both MINIO_SECRET_KEY and MINIO_SECRET_KEY_FILE are set", "keep only one of them")
    assert settings.minio_endpoint and settings.minio_bucket
    if secret is None:
        assert settings.minio_secret_key_file is not None
        secret = read_secret_file(settings.minio_secret_key_file, "MINIO_SECRET_KEY_FILE")
    bucket, prefix = split_bucket(settings.minio_bucket.removeprefix("s3://"), "MINIO_BUCKET", "")
    from sentinel_backup.storage.s3 import S3Config

    return S3Config(
        name="minio", bucket=bucket, prefix=prefix, region=settings.minio_region or "us-east-1",
        endpoint_url=check_endpoint(settings.minio_endpoint, "MINIO_ENDPOINT"),
        access_key=settings.minio_access_key, secret_key=secret,
        lock_days=settings.minio_object_lock_days,
        lock_mode=check_lock_mode(settings.minio_object_lock_mode, "MINIO_OBJECT_LOCK_MODE"),
        path_style=True, variable="MINIO_BUCKET", aws_env=settings.aws_env,
    )


def split_bucket(text: str, variable: str, scheme: str) -> tuple[str, str]:
    """``bucket/some/prefix`` -> ("bucket", "some/prefix/"); the prefix is "" or ends with /."""
    bucket, _, rest = text.strip().partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{variable}: {bucket!r} is not a valid bucket name",
                          f"use 3-63 lowercase letters, digits, dots or hyphens, e.g. {variable}={scheme}backups/prod")
    parts = [p for p in rest.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"{variable}: the prefix {rest!r} contains . or ..",
                          f"use a plain path like {scheme}{bucket}/pg")
    return bucket, "".join(f"{p}/" for p in parts)


def check_endpoint(url: str, variable: str) -> str:
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        shown = f" (got {url!r})" if "@" not in url else ""
        raise ConfigError(f"{variable} must be an http:// or https:// URL with a host{shown}",
                          f"e.g. {variable}=https://minio.example.com:9000")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{variable} must be just scheme, host and port (got a path, query or user info)",
                          f"e.g. {variable}={parts.scheme}://{parts.hostname}"
                          + (f":{parts.port}" if parts.port else ""))
    return url.rstrip("/")


def check_lock_mode(mode: str, variable: str) -> str:
    value = mode.strip().upper()
    if value not in LOCK_MODES:
        raise ConfigError(f"{variable} must be GOVERNANCE or COMPLIANCE (got {mode!r})",
                          "GOVERNANCE lets privileged users lift the lock; COMPLIANCE lets no one")
    return value


def check_storage_class(value: str | None) -> str | None:
    if value is None:
        return None
    upper = value.strip().upper()
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", upper):
        raise ConfigError(f"S3_STORAGE_CLASS: {value!r} is not a storage class name",
                          "e.g. STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR")
    return upper
