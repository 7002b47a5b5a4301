# ruff: noqa: E501
"""GENERATED from config.Settings by ``python -m sentinel_backup.config_table``: do not edit.

The settings as data, for readers that must not import pydantic (config_lean, config_env).
tests/unit/test_config_lean.py fails when this drifts from the schema.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class FieldSpec(NamedTuple):
    name: str
    aliases: tuple[str, ...]
    kind: str  # str, int, bool, path, enum:<choices class>
    optional: bool = False
    required: bool = False
    default: Any = None
    ge: int | None = None
    le: int | None = None
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    secret: bool = False


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec('postgres_user', ('POSTGRES_USER',), 'str', required=True),
    FieldSpec('postgres_db', ('POSTGRES_DB',), 'str', required=True, after=('_dbs',)),
    FieldSpec('postgres_container', ('POSTGRES_CONTAINER',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('postgres_host', ('POSTGRES_HOST',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('postgres_port', ('POSTGRES_PORT',), 'int', optional=True, ge=1, le=65535, before=('_empty_optional',)),
    FieldSpec('postgres_password', ('POSTGRES_PASSWORD',), 'str', optional=True, before=('_empty_is_unset',), secret=True),
    FieldSpec('postgres_password_file', ('POSTGRES_PASSWORD_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('docker_bin', ('DOCKER_BIN',), 'str', default='docker'),
    FieldSpec('pg_bin_dir', ('PG_BIN_DIR',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('server_name', ('SERVER_NAME',), 'str', default='', before=('_server',)),
    FieldSpec('backup_dir', ('BACKUP_DIR',), 'path', required=True),
    FieldSpec('local_enabled', ('LOCAL_ENABLED',), 'bool', default=True),
    FieldSpec('backup_format', ('BACKUP_FORMAT',), 'enum:BackupFormat', default='plain', before=('_lower',)),
    FieldSpec('pg_dump_jobs', ('PG_DUMP_JOBS',), 'int', default=1, ge=1, le=64),
    FieldSpec('temp_dir', ('TEMP_DIR',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('compression', ('COMPRESSION',), 'enum:Compression', default='gzip', before=('_lower',)),
    FieldSpec('compression_level', ('COMPRESSION_LEVEL',), 'int', optional=True, ge=0, le=22, before=('_empty_optional',)),
    FieldSpec('compression_threads', ('COMPRESSION_THREADS',), 'int', default=1, ge=0, le=256),
    FieldSpec('min_backup_size', ('MIN_BACKUP_SIZE',), 'int', default=1024, ge=0),
    FieldSpec('verify_after_backup', ('VERIFY_AFTER_BACKUP',), 'enum:VerifyMode', default='integrity', before=('_lower',)),
    FieldSpec('pg_dump_options', ('PG_DUMP_OPTIONS',), 'str', default=''),
    FieldSpec('lock_wait_timeout', ('LOCK_WAIT_TIMEOUT',), 'str', default='5m', after=('_timeout',)),
    FieldSpec('globals_enabled', ('BACKUP_GLOBALS',), 'bool', optional=True, before=('_empty_optional',)),
    FieldSpec('backup_mode', ('BACKUP_MODE',), 'enum:BackupMode', default='logical'),
    FieldSpec('physical_checkpoint', ('PHYSICAL_CHECKPOINT',), 'enum:Checkpoint', default='fast'),
    FieldSpec('physical_spool_dir', ('PHYSICAL_SPOOL_DIR',), 'path', optional=True),
    FieldSpec('physical_incremental', ('PHYSICAL_INCREMENTAL',), 'bool', default=False),
    FieldSpec('physical_full_every', ('PHYSICAL_FULL_EVERY',), 'str', optional=True, before=('_empty_optional',), after=('_full_every',)),
    FieldSpec('physical_max_incrementals', ('PHYSICAL_MAX_INCREMENTALS',), 'int', optional=True, ge=1, before=('_empty_optional',)),
    FieldSpec('drill_pitr_marker', ('DRILL_PITR_MARKER',), 'bool', default=True),
    FieldSpec('drill_amcheck', ('DRILL_AMCHECK',), 'bool', default=False),
    FieldSpec('encrypt_enabled', ('ENCRYPT_ENABLED',), 'bool', default=False),
    FieldSpec('encryption_method', ('ENCRYPTION_METHOD',), 'enum:EncryptionMethod', default='aes-256-cbc', before=('_lower',)),
    FieldSpec('encryption_key_path', ('ENCRYPTION_KEY_PATH',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('age_recipients', ('AGE_RECIPIENTS',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('age_recipients_file', ('AGE_RECIPIENTS_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('age_identity_file', ('AGE_IDENTITY_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('s3_enabled', ('S3_ENABLED',), 'bool', default=False),
    FieldSpec('s3_bucket', ('S3_BUCKET',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('s3_storage_class', ('S3_STORAGE_CLASS',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('s3_region', ('S3_REGION',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('s3_endpoint_url', ('S3_ENDPOINT_URL',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('s3_object_lock_days', ('S3_OBJECT_LOCK_DAYS',), 'int', optional=True, ge=1, before=('_empty_optional',)),
    FieldSpec('s3_object_lock_mode', ('S3_OBJECT_LOCK_MODE',), 'str', default='GOVERNANCE'),
    FieldSpec('s3_retention_days', ('S3_RETENTION_DAYS',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('minio_enabled', ('MINIO_ENABLED',), 'bool', default=False),
    FieldSpec('minio_endpoint', ('MINIO_ENDPOINT',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('minio_bucket', ('MINIO_BUCKET',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('minio_access_key', ('MINIO_ACCESS_KEY',), 'str', optional=True, secret=True),
    FieldSpec('minio_secret_key', ('MINIO_SECRET_KEY',), 'str', optional=True, secret=True),
    FieldSpec('minio_secret_key_file', ('MINIO_SECRET_KEY_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('minio_region', ('MINIO_REGION',), 'str', default='us-east-1'),
    FieldSpec('minio_object_lock_days', ('MINIO_OBJECT_LOCK_DAYS',), 'int', optional=True, ge=1, before=('_empty_optional',)),
    FieldSpec('minio_object_lock_mode', ('MINIO_OBJECT_LOCK_MODE',), 'str', default='GOVERNANCE'),
    FieldSpec('minio_retention_days', ('MINIO_RETENTION_DAYS',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('retention_days', ('RETENTION_DAYS',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('retention_keep_last', ('RETENTION_KEEP_LAST',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('retention_keep_daily', ('RETENTION_KEEP_DAILY',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('retention_keep_weekly', ('RETENTION_KEEP_WEEKLY',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('retention_keep_monthly', ('RETENTION_KEEP_MONTHLY',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('retention_keep_yearly', ('RETENTION_KEEP_YEARLY',), 'int', optional=True, ge=0, before=('_empty_optional',)),
    FieldSpec('retention_timezone', ('RETENTION_TIMEZONE',), 'str', default='UTC', after=('_zone',)),
    FieldSpec('retention_after_backup', ('RETENTION_AFTER_BACKUP',), 'bool', default=True),
    FieldSpec('webhook_enabled', ('WEBHOOK_ENABLED',), 'bool', default=False),
    FieldSpec('webhook_url', ('WEBHOOK_URL', 'WEBHOOK_URLS'), 'str', optional=True, before=('_empty_is_unset',), after=('_webhooks',), secret=True),
    FieldSpec('webhook_format', ('WEBHOOK_FORMAT',), 'enum:WebhookFormat', default='auto', before=('_lower',)),
    FieldSpec('notification_level', ('NOTIFICATION_LEVEL',), 'enum:NotificationLevel', default='all', before=('_lower',)),
    FieldSpec('healthcheck_url', ('HEALTHCHECK_URL',), 'str', optional=True, before=('_empty_is_unset',), secret=True),
    FieldSpec('drill_host', ('DRILL_HOST',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('drill_port', ('DRILL_PORT',), 'int', optional=True, ge=1, le=65535, before=('_empty_optional',)),
    FieldSpec('drill_user', ('DRILL_USER',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('drill_password', ('DRILL_PASSWORD',), 'str', optional=True, before=('_empty_is_unset',), secret=True),
    FieldSpec('drill_password_file', ('DRILL_PASSWORD_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('drill_container', ('DRILL_CONTAINER',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('drill_sql_file', ('DRILL_SQL_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('manifest_table_hashes', ('MANIFEST_TABLE_HASHES',), 'bool', default=False),
    FieldSpec('max_backup_age', ('MAX_BACKUP_AGE',), 'str', default='26h', after=('_age',)),
    FieldSpec('metrics_file', ('METRICS_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('backup_schedule', ('BACKUP_SCHEDULE',), 'str', default='0 3 * * *'),
    FieldSpec('prune_schedule', ('PRUNE_SCHEDULE',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('drill_schedule', ('DRILL_SCHEDULE',), 'str', optional=True, before=('_empty_is_unset',)),
    FieldSpec('schedule_timezone', ('SCHEDULE_TIMEZONE',), 'str', default='UTC', after=('_zone',)),
    FieldSpec('wal_push_async', ('WAL_PUSH_ASYNC',), 'bool', default=False),
    FieldSpec('wal_spool_dir', ('WAL_SPOOL_DIR',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('wal_fetch_prefetch', ('WAL_FETCH_PREFETCH',), 'int', default=0, ge=0, le=64),
    FieldSpec('max_wal_age', ('MAX_WAL_AGE',), 'str', optional=True, before=('_empty_optional',), after=('_wal_age',)),
    FieldSpec('wal_receive_enabled', ('WAL_RECEIVE_ENABLED',), 'bool', default=False),
    FieldSpec('wal_receive_slot', ('WAL_RECEIVE_SLOT',), 'str', default='sentinel_backup', after=('_slot',)),
    FieldSpec('wal_receive_dir', ('WAL_RECEIVE_DIR',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('log_level', ('LOG_LEVEL',), 'enum:LogLevel', default='INFO', before=('_level',)),
    FieldSpec('log_file', ('LOG_FILE',), 'path', optional=True, before=('_empty_optional',)),
    FieldSpec('log_format', ('LOG_FORMAT',), 'enum:LogFormat', default='text', before=('_lower',)),
)
MODEL_CHECKS = ('_directory_format', '_levels_per_algorithm', '_spool')
