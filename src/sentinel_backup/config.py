"""The settings schema: every variable, its type, default and help, in one place.

Values come from the environment and a ``.env`` file (the environment wins). The names
are those of the original shell version where it had one. ``docs/configuration.md`` is
tested against this schema, so a variable added here must be documented there. Durations
and secret files are read by ``config_values``; unknown variables are found by ``config_env``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentinel_backup.choices import (
    BackupFormat,
    BackupMode,
    Checkpoint,
    Compression,
    EncryptionMethod,
    LogFormat,
    LogLevel,
    NotificationLevel,
    VerifyMode,
    WebhookFormat,
)
from sentinel_backup.config_derived import SettingsDerived
from sentinel_backup.config_lean import env_file_path, read_env_file
from sentinel_backup.config_values import parse_duration, parse_timeout, read_private_file, read_secret_file
from sentinel_backup.errors import ConfigError

__all__ = ["Settings", "load_settings", "parse_duration", "parse_timeout", "read_private_file", "read_secret_file",
           "settings_from"]


def _env(name: str, *more: str) -> Any:
    """Field alias: the environment variable name(s) a field is read from."""
    return AliasChoices(name, *more) if more else name


class Settings(SettingsDerived, BaseSettings):
    """Every setting Sentinel Backup reads. Field docs are the reference text. What the values imply
    (databases, password(), ...) is in config_derived, shared with the lean reader (config_lean)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        populate_by_name=False,
        use_enum_values=False,
        # Field docstrings are the reference's text (config_docs reads them from the source); pydantic's
        # use_attribute_docstrings would parse this file on every start (~60% of building the model).
        env_ignore_empty=True,  # `LOG_LEVEL=` means unset: the .env value or the default applies
    )
    # not settings: what load_settings found besides them (see there)
    _aws_env: dict[str, str] = PrivateAttr(default_factory=dict)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    # --- source -----------------------------------------------------------------
    postgres_user: str = Field(validation_alias=_env("POSTGRES_USER"))
    """Role that runs pg_dump (needs read access to everything dumped)."""
    postgres_db: str = Field(validation_alias=_env("POSTGRES_DB"))
    """One database, a comma-separated list, or `all` (every connectable non-template database, plus globals)."""
    postgres_container: str | None = Field(None, validation_alias=_env("POSTGRES_CONTAINER"))
    """When set, the PostgreSQL client tools run inside this container via `docker exec -i`."""
    postgres_host: str | None = Field(None, validation_alias=_env("POSTGRES_HOST"))
    """Server host or socket directory (libpq default when unset, or PGHOST)."""
    postgres_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("POSTGRES_PORT"))
    """Server port (libpq default 5432 when unset, or PGPORT)."""
    postgres_password: str | None = Field(None, repr=False, validation_alias=_env("POSTGRES_PASSWORD"))
    """Password; passed to child processes through the environment only. Prefer POSTGRES_PASSWORD_FILE or ~/.pgpass."""
    postgres_password_file: Path | None = Field(None, validation_alias=_env("POSTGRES_PASSWORD_FILE"))
    """File whose first line is the password."""
    docker_bin: str = Field("docker", validation_alias=_env("DOCKER_BIN"))
    """The container CLI used with POSTGRES_CONTAINER (docker, podman, nerdctl)."""
    pg_bin_dir: Path | None = Field(None, validation_alias=_env("PG_BIN_DIR"))
    """Folder of pg_dump/psql/pg_restore for direct mode, used or refused as it is. Default: the distribution folder
    for the server's major version (`/usr/lib/postgresql/<major>/bin`, `/usr/pgsql-<major>/bin`), then newer ones,
    then PATH; a pg_dump older than the server is refused (exit 2)."""

    server_name: str = Field("", validation_alias=_env("SERVER_NAME"))
    """Name of this server when several back up to one bucket or folder: its logical backups go to
    `servers/<name>/` (ids `<name>/<db>_<stamp>`), manifests, metrics (`server` label) and notifications
    name it, and `list`, `latest` and retention see only its own backups. Letters, digits, `_ . -` (up to 63,
    starting with a letter or digit; not `all`). Empty: the unnamed server (backups at the root, as before).
    With `--env-dir`, the default is the env file's name without `.env`."""

    # --- backup -----------------------------------------------------------------
    backup_dir: Path = Field(validation_alias=_env("BACKUP_DIR"))
    """Local destination folder (created with mode 0700)."""
    local_enabled: bool = Field(True, validation_alias=_env("LOCAL_ENABLED"))
    """Keep a copy in BACKUP_DIR (false: remote destinations only)."""
    backup_format: BackupFormat = Field(BackupFormat.PLAIN, validation_alias=_env("BACKUP_FORMAT"))
    """`plain` (SQL, restorable with `gunzip -c | psql`), `custom` (pg_restore, parallel restore) or `directory`
    (`pg_dump -Fd -j PG_DUMP_JOBS`: parallel dump and restore, stored as one tar; needs pg_dump on this host)."""
    pg_dump_jobs: int = Field(1, ge=1, le=64, validation_alias=_env("PG_DUMP_JOBS"))
    """Parallel pg_dump workers (`pg_dump -j`; each holds one more server connection). Only with
    BACKUP_FORMAT=directory; drills restore with as many pg_restore jobs."""
    temp_dir: Path | None = Field(None, validation_alias=_env("TEMP_DIR"))
    """Where BACKUP_FORMAT=directory dumps go before they are streamed (needs about the size of the compressed dump,
    removed after each database). Default: BACKUP_DIR."""
    compression: Compression = Field(Compression.GZIP, validation_alias=_env("COMPRESSION"))
    """`gzip` (ISA-L, readable by gunzip), `zstd` (multi-threaded) or `none`."""
    compression_level: int | None = Field(None, ge=0, le=22, validation_alias=_env("COMPRESSION_LEVEL"))
    """gzip: 1-9 (mapped onto ISA-L's 0-3; default 6); zstd: 1-22 (default 3)."""
    compression_threads: int = Field(1, ge=0, le=256, validation_alias=_env("COMPRESSION_THREADS"))
    """zstd worker threads (0: compress in the streaming thread). 1 is fastest on 2 cores; raise it on bigger hosts."""
    min_backup_size: int = Field(1024, ge=0, validation_alias=_env("MIN_BACKUP_SIZE"))
    """Smallest acceptable stored artifact in bytes for a database that has rows; 0 disables the check."""
    verify_after_backup: VerifyMode = Field(VerifyMode.INTEGRITY, validation_alias=_env("VERIFY_AFTER_BACKUP"))
    """`integrity` decodes the stream while it is stored, then checks each durable copy's SHA-256 before commit;
    `reread` also decodes each copy again in full; `restore` is `integrity` plus a restore drill; `none` only checks
    sizes."""
    pg_dump_options: str = Field("", validation_alias=_env("PG_DUMP_OPTIONS"))
    """Extra pg_dump arguments, split like a shell would (e.g. `--exclude-table=audit.*`)."""
    lock_wait_timeout: str = Field("5m", validation_alias=_env("LOCK_WAIT_TIMEOUT"))
    """Longest wait for a table lock another session holds (30s, 5m); then the backup fails naming both. 0: no limit."""
    globals_enabled: bool | None = Field(None, validation_alias=_env("BACKUP_GLOBALS"))
    """Dump roles and tablespaces (`pg_dumpall --globals-only`). Default: on when POSTGRES_DB is `all` or a list."""
    backup_mode: BackupMode = Field(BackupMode.LOGICAL, validation_alias=_env("BACKUP_MODE"))
    """`logical` (pg_dump per database) or `physical` (a pg_basebackup base backup of the whole cluster, for
    point-in-time recovery with the WAL archive). `backup --physical` chooses physical for one run."""
    physical_checkpoint: Checkpoint = Field(Checkpoint.FAST, validation_alias=_env("PHYSICAL_CHECKPOINT"))
    """Checkpoint at the start of a base backup: `fast` (start at once, a burst of writes) or `spread`
    (as the server's checkpoint_completion_target paces it; the backup starts later)."""
    physical_spool_dir: Path | None = Field(None, validation_alias=_env("PHYSICAL_SPOOL_DIR"))
    """Folder for the temporary copy of a cluster with tablespaces (pg_basebackup writes one tar per
    tablespace; needs the cluster's size free). Default: the system temporary folder."""
    physical_zstd_by_pg_basebackup: bool = Field(False, validation_alias=_env("PHYSICAL_ZSTD_BY_PG_BASEBACKUP"))
    """`true` with COMPRESSION=zstd: `pg_basebackup` (15+, built with zstd) compresses the base backup itself and
    the tool stores and decodes its stream (10-14% less CPU), but the compression is no longer checked against the
    raw tar; `false` (default): the tool compresses the raw tar and compares the decoded stream byte for byte with
    it (see docs/operations.md)."""
    physical_incremental: bool = Field(False, validation_alias=_env("PHYSICAL_INCREMENTAL"))
    """Physical backups are incremental (PostgreSQL 17+, `summarize_wal = on`): `pg_basebackup --incremental` against
    the newest backup of the current chain; a full one when the chain policy says so. As `backup --incremental`."""
    physical_full_every: str | None = Field(None, validation_alias=_env("PHYSICAL_FULL_EVERY"))
    """With incremental backups: take a full base backup when the chain's full one is older than this (7d, 26h)."""
    physical_max_incrementals: int | None = Field(None, ge=1, validation_alias=_env("PHYSICAL_MAX_INCREMENTALS"))
    """With incremental backups: take a full base backup after this many incrementals in a chain. With neither
    this nor PHYSICAL_FULL_EVERY a chain grows until a full backup is asked for (`backup --physical`)."""
    drill_pitr_marker: bool = Field(True, validation_alias=_env("DRILL_PITR_MARKER"))
    """Physical drills write two marker rows on the source (schema `sentinel_drill`) and a named restore point, and
    prove recovery reaches the point between them. `false` for servers where the tool may not write."""
    drill_amcheck: bool = Field(False, validation_alias=_env("DRILL_AMCHECK"))
    """Physical drills also run `pg_amcheck` (heap tables and B-tree indexes of every database) on the scratch server;
    corruption fails the drill. Needs PostgreSQL 14+ contrib (pg_amcheck, the amcheck extension) where drills run."""

    # --- encryption -------------------------------------------------------------
    encrypt_enabled: bool = Field(False, validation_alias=_env("ENCRYPT_ENABLED"))
    """Encrypt every artifact after compression."""
    encryption_method: EncryptionMethod = Field(EncryptionMethod.AES, validation_alias=_env("ENCRYPTION_METHOD"))
    """`aes-256-cbc` (openssl enc compatible, key file) or `age` (public keys; recommended)."""
    encryption_key_path: Path | None = Field(None, validation_alias=_env("ENCRYPTION_KEY_PATH"))
    """AES key file, e.g. made with `openssl rand -base64 32`; its first line is the password. Mode 0600."""
    age_recipients: str | None = Field(None, validation_alias=_env("AGE_RECIPIENTS"))
    """Comma-separated age public keys (`age1...`)."""
    age_recipients_file: Path | None = Field(None, validation_alias=_env("AGE_RECIPIENTS_FILE"))
    """File with one age public key per line."""
    age_identity_file: Path | None = Field(None, validation_alias=_env("AGE_IDENTITY_FILE"))
    """age secret key file (from age-keygen), needed by verify and restore only."""

    # --- S3 ---------------------------------------------------------------------
    s3_enabled: bool = Field(False, validation_alias=_env("S3_ENABLED"))
    """Upload every backup to S3."""
    s3_bucket: str | None = Field(None, validation_alias=_env("S3_BUCKET"))
    """`s3://bucket/optional/prefix`."""
    s3_storage_class: str | None = Field(None, validation_alias=_env("S3_STORAGE_CLASS"))
    """Storage class of the artifact, e.g. STANDARD_IA."""
    s3_region: str | None = Field(None, validation_alias=_env("S3_REGION"))
    """AWS region of the bucket."""
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL"))
    """Endpoint of an S3-compatible store (default: AWS)."""
    s3_object_lock_days: int | None = Field(None, ge=1, validation_alias=_env("S3_OBJECT_LOCK_DAYS"))
    """Object-lock retention in days for each artifact."""
    s3_object_lock_mode: str = Field("GOVERNANCE", validation_alias=_env("S3_OBJECT_LOCK_MODE"))
    """GOVERNANCE or COMPLIANCE."""
    s3_retention_days: int | None = Field(None, ge=0, validation_alias=_env("S3_RETENTION_DAYS"))
    """Overrides RETENTION_DAYS for S3."""

    # --- MinIO ------------------------------------------------------------------
    minio_enabled: bool = Field(False, validation_alias=_env("MINIO_ENABLED"))
    """Upload every backup to a MinIO (or other S3-compatible) server."""
    minio_endpoint: str | None = Field(None, validation_alias=_env("MINIO_ENDPOINT"))
    """http(s) URL of the server."""
    minio_bucket: str | None = Field(None, validation_alias=_env("MINIO_BUCKET"))
    """`bucket/optional/prefix`."""
    minio_access_key: str | None = Field(None, repr=False, validation_alias=_env("MINIO_ACCESS_KEY"))
    """Access key id."""
    minio_secret_key: str | None = Field(None, repr=False, validation_alias=_env("MINIO_SECRET_KEY"))
    """Secret key (prefer MINIO_SECRET_KEY_FILE)."""
    minio_secret_key_file: Path | None = Field(None, validation_alias=_env("MINIO_SECRET_KEY_FILE"))
    """File whose first line is the secret key."""
    minio_region: str = Field("us-east-1", validation_alias=_env("MINIO_REGION"))
    """Region name used for signing."""
    minio_object_lock_days: int | None = Field(None, ge=1, validation_alias=_env("MINIO_OBJECT_LOCK_DAYS"))
    """Object-lock retention in days for each artifact."""
    minio_object_lock_mode: str = Field("GOVERNANCE", validation_alias=_env("MINIO_OBJECT_LOCK_MODE"))
    """GOVERNANCE or COMPLIANCE."""
    minio_retention_days: int | None = Field(None, ge=0, validation_alias=_env("MINIO_RETENTION_DAYS"))
    """Overrides RETENTION_DAYS for MinIO."""

    # --- retention --------------------------------------------------------------
    retention_days: int | None = Field(None, ge=0, validation_alias=_env("RETENTION_DAYS"))
    """Remove backups older than N days (the newest good backup is always kept)."""
    retention_keep_last: int | None = Field(None, ge=0, validation_alias=_env("RETENTION_KEEP_LAST"))
    """Keep the N newest backups of each database."""
    retention_keep_daily: int | None = Field(None, ge=0, validation_alias=_env("RETENTION_KEEP_DAILY"))
    """Keep the newest backup of each of the last N days."""
    retention_keep_weekly: int | None = Field(None, ge=0, validation_alias=_env("RETENTION_KEEP_WEEKLY"))
    """Keep the newest backup of each of the last N ISO weeks."""
    retention_keep_monthly: int | None = Field(None, ge=0, validation_alias=_env("RETENTION_KEEP_MONTHLY"))
    """Keep the newest backup of each of the last N months."""
    retention_keep_yearly: int | None = Field(None, ge=0, validation_alias=_env("RETENTION_KEEP_YEARLY"))
    """Keep the newest backup of each of the last N years."""
    retention_timezone: str = Field("UTC", validation_alias=_env("RETENTION_TIMEZONE"))
    """Time zone that decides where a day, week, month and year start."""
    retention_after_backup: bool = Field(True, validation_alias=_env("RETENTION_AFTER_BACKUP"))
    """Apply retention after every successful backup run."""

    # --- notifications ----------------------------------------------------------
    webhook_enabled: bool = Field(False, validation_alias=_env("WEBHOOK_ENABLED"))
    """Send run results to WEBHOOK_URL."""
    webhook_url: str | None = Field(None, repr=False, validation_alias=_env("WEBHOOK_URL", "WEBHOOK_URLS"))
    """One or more (comma-separated) Slack, Discord or JSON webhook URLs; `FORMAT:URL` sets one URL's format."""
    webhook_format: WebhookFormat = Field(WebhookFormat.AUTO, validation_alias=_env("WEBHOOK_FORMAT"))
    """auto, slack, discord or json."""
    notification_level: NotificationLevel = Field(NotificationLevel.ALL, validation_alias=_env("NOTIFICATION_LEVEL"))
    """all: every result; error: failures and partial successes only; none."""
    healthcheck_url: str | None = Field(None, repr=False, validation_alias=_env("HEALTHCHECK_URL"))
    """Dead-man's-switch ping URL (healthchecks.io style: /start, success, /fail)."""

    # --- drills, health, metrics, schedule ---------------------------------------
    drill_host: str | None = Field(None, validation_alias=_env("DRILL_HOST"))
    """Restore drills on this server instead of the source server (scratch databases only)."""
    drill_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("DRILL_PORT"))
    """Port of the drill server."""
    drill_user: str | None = Field(None, validation_alias=_env("DRILL_USER"))
    """Role on the drill server (needs CREATEDB). Default: POSTGRES_USER."""
    drill_password: str | None = Field(None, repr=False, validation_alias=_env("DRILL_PASSWORD"))
    """Password on the drill server (prefer DRILL_PASSWORD_FILE or ~/.pgpass)."""
    drill_password_file: Path | None = Field(None, validation_alias=_env("DRILL_PASSWORD_FILE"))
    """File whose first line is the drill server's password."""
    drill_container: str | None = Field(None, validation_alias=_env("DRILL_CONTAINER"))
    """Run drill client tools in this container instead of POSTGRES_CONTAINER."""
    drill_sql_file: Path | None = Field(None, validation_alias=_env("DRILL_SQL_FILE"))
    """SQL checks for drills: one query per statement (separated by `;`), each must return true."""
    manifest_table_hashes: bool = Field(False, validation_alias=_env("MANIFEST_TABLE_HASHES"))
    """Record a content hash per table at dump time; drills then compare content, not only row counts."""
    max_backup_age: str = Field("26h", validation_alias=_env("MAX_BACKUP_AGE"))
    """`check` is critical when the newest good backup of a database is older than this (e.g. 26h, 7d)."""
    metrics_file: Path | None = Field(None, validation_alias=_env("METRICS_FILE"))
    """Prometheus metrics after every run (node_exporter textfile, *.prom); created 0600: `chmod 644` it once."""
    backup_schedule: str = Field("0 3 * * *", validation_alias=_env("BACKUP_SCHEDULE"))
    """Cron expression for `schedule`: when to run backup (then retention)."""
    prune_schedule: str | None = Field(None, validation_alias=_env("PRUNE_SCHEDULE"))
    """Cron expression for an extra retention run (default: only after each backup)."""
    drill_schedule: str | None = Field(None, validation_alias=_env("DRILL_SCHEDULE"))
    """Cron expression for restore drills of the newest backup of each database."""
    schedule_timezone: str = Field("UTC", validation_alias=_env("SCHEDULE_TIMEZONE"))
    """Time zone of the cron expressions."""

    # --- WAL archive (physical backups, point-in-time recovery) -------------------
    wal_push_async: bool = Field(False, validation_alias=_env("WAL_PUSH_ASYNC"))
    """`wal-push` copies the segment durably into WAL_SPOOL_DIR and returns; a background shipper stores it on every
    destination (for busy servers and slow remote stores)."""
    wal_spool_dir: Path | None = Field(None, validation_alias=_env("WAL_SPOOL_DIR"))
    """Local spool of asynchronous `wal-push` and of `wal-fetch` prefetch (created 0700). Put it on another disk
    than pg_wal: a segment in the spool is acknowledged to PostgreSQL before it reaches the destinations."""
    wal_fetch_prefetch: int = Field(0, ge=0, le=64, validation_alias=_env("WAL_FETCH_PREFETCH"))
    """`wal-fetch` also fetches the next N segments into WAL_SPOOL_DIR, so recovery waits less for a remote store."""
    max_wal_age: str | None = Field(None, validation_alias=_env("MAX_WAL_AGE"))
    """`check` warns when the last WAL file archived is older than this (e.g. 15m, 1h); unset: not checked (an idle
    server archives nothing unless `archive_timeout` is set)."""
    wal_receive_enabled: bool = Field(False, validation_alias=_env("WAL_RECEIVE_ENABLED"))
    """`schedule` also runs `wal-receive` (streaming the WAL into the archive) beside the scheduled jobs."""
    wal_receive_slot: str = Field("sentinel_backup", validation_alias=_env("WAL_RECEIVE_SLOT"))
    """Replication slot of `wal-receive` (created when missing): the server keeps WAL until it is received."""
    wal_receive_dir: Path | None = Field(None, validation_alias=_env("WAL_RECEIVE_DIR"))
    """Staging folder of `wal-receive` (pg_receivewal writes here; each completed segment is pushed, then removed).
    Default: `wal-receive` under WAL_SPOOL_DIR, else `.wal-receive` in BACKUP_DIR."""

    # --- logging ----------------------------------------------------------------
    log_level: LogLevel = Field(LogLevel.INFO, validation_alias=_env("LOG_LEVEL"))
    """DEBUG, INFO, WARN or ERROR."""
    log_file: Path | None = Field(None, validation_alias=_env("LOG_FILE"))
    """Also append every log record to this file (created 0600, a missing folder 0700)."""
    log_format: LogFormat = Field(LogFormat.TEXT, validation_alias=_env("LOG_FORMAT"))
    """text or json (one JSON object per line)."""

    # --- validators -------------------------------------------------------------
    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().upper()
            return "WARN" if value == "WARNING" else value
        return value

    @field_validator(
        "backup_format", "compression", "encryption_method", "notification_level",
        "webhook_format", "verify_after_backup", "log_format", mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("postgres_container", "postgres_host", "postgres_password", "s3_bucket", "drill_host",
                     "drill_user", "drill_password", "drill_container", "prune_schedule", "drill_schedule",
                     "s3_storage_class", "s3_region", "s3_endpoint_url", "minio_endpoint",
                     "minio_bucket", "age_recipients", "webhook_url", "healthcheck_url",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("postgres_port", "compression_level", "postgres_password_file",
                     "encryption_key_path", "age_recipients_file", "age_identity_file",
                     "minio_secret_key_file", "log_file", "pg_bin_dir", "s3_object_lock_days",
                     "minio_object_lock_days", "s3_retention_days", "minio_retention_days",
                     "retention_days", "retention_keep_last", "retention_keep_daily",
                     "retention_keep_weekly", "retention_keep_monthly", "retention_keep_yearly",
                     "globals_enabled", "temp_dir", "drill_port", "drill_password_file", "drill_sql_file",
                     "metrics_file",
                     "wal_spool_dir", "max_wal_age", "wal_receive_dir", "physical_full_every",
                     "physical_max_incrementals", mode="before")
    @classmethod
    def _empty_optional(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhooks(cls, value: str | None) -> str | None:
        if not value:
            return value
        from sentinel_backup.notify import split_target  # http.client, email: only when a webhook is set

        for item in (value or "").split(","):
            if item.strip():
                split_target(item)
        return value

    @field_validator("max_backup_age")
    @classmethod
    def _age(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("physical_full_every")
    @classmethod
    def _full_every(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("max_wal_age")
    @classmethod
    def _wal_age(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("wal_receive_slot")
    @classmethod
    def _slot(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,63}", value.strip()):
            raise ValueError("must be 1-63 lowercase letters, digits or underscores (a replication slot name)")
        return value.strip()

    @field_validator("lock_wait_timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        parse_timeout(value)
        return value

    @field_validator("retention_timezone", "schedule_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a known time zone (use a name like UTC or Europe/Paris)") from None
        return value

    @field_validator("server_name", mode="before")
    @classmethod
    def _server(cls, value: Any) -> Any:
        from sentinel_backup.model.layout import server_setting  # the lean reader's twin is the same function

        return server_setting(value)

    @field_validator("postgres_db")
    @classmethod
    def _dbs(cls, value: str) -> str:
        if not [d for d in value.split(",") if d.strip()]:
            raise ValueError("names no database")
        return value

    @model_validator(mode="after")
    def _directory_format(self) -> Settings:
        if self.pg_dump_jobs > 1 and self.backup_format is not BackupFormat.DIRECTORY:
            raise ValueError(f"PG_DUMP_JOBS={self.pg_dump_jobs} needs BACKUP_FORMAT=directory"
                             " (pg_dump runs parallel only for the directory format); set PG_DUMP_JOBS=1 or"
                             " BACKUP_FORMAT=directory")
        if self.backup_format is BackupFormat.DIRECTORY and self.postgres_container:
            raise ValueError("BACKUP_FORMAT=directory needs pg_dump on this host (it writes a folder), not in"
                             " POSTGRES_CONTAINER; use BACKUP_FORMAT=custom in container mode, or connect directly"
                             " (POSTGRES_HOST/POSTGRES_PORT) with matching client tools")
        return self

    @model_validator(mode="after")
    def _levels_per_algorithm(self) -> Settings:
        level = self.compression_level
        if level is not None:
            if self.compression is Compression.GZIP and not 1 <= level <= 9:
                raise ValueError("COMPRESSION_LEVEL for gzip must be 1-9")
            if self.compression is Compression.ZSTD and not 1 <= level <= 22:
                raise ValueError("COMPRESSION_LEVEL for zstd must be 1-22")
        return self

    @model_validator(mode="after")
    def _spool(self) -> Settings:
        if self.wal_push_async and self.wal_spool_dir is None:
            raise ValueError("WAL_PUSH_ASYNC=true needs WAL_SPOOL_DIR (a local folder on another disk than pg_wal)")
        if self.wal_fetch_prefetch and self.wal_spool_dir is None:
            raise ValueError("WAL_FETCH_PREFETCH needs WAL_SPOOL_DIR (where prefetched segments wait)")
        return self


def settings_from(values: dict[str, str]) -> Settings:
    """Settings from these values only: no environment, no .env (the demo, tests)."""
    from sentinel_backup.config_env import describe_error

    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError("invalid configuration: " + "; ".join(describe_error(dict(e)) for e in exc.errors()),
                          "fix the values given") from None


def load_settings(env_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; turn every validation problem into one ConfigError."""
    path = env_file_path(env_file)
    file_values = read_env_file(path)
    from sentinel_backup.config_env import describe_error, unknown_variables  # the names come from this schema

    try:
        settings = Settings(_env_file=path if path.is_file() else None, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = [describe_error(dict(e)) for e in exc.errors()]
        raise ConfigError(
            "invalid configuration: " + "; ".join(problems),
            "fix the variables above in the environment or .env (see docs/configuration.md)",
        ) from None
    settings._warnings = unknown_variables(file_values, os.environ)
    if any(k.startswith("AWS_") for k in file_values):
        from sentinel_backup.storage.aws_env import from_env_file

        settings._aws_env = from_env_file(file_values, os.environ)
    return settings
