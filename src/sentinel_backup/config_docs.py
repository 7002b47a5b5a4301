"""The configuration reference and ``.env.example``, generated from the settings schema.

``python -m sentinel_backup.config_docs`` rewrites the table in docs/configuration.md
(between the markers) and .env.example; a test fails when either is out of date.
"""

from __future__ import annotations

import ast
import inspect
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_core import PydanticUndefined

from sentinel_backup.config import Settings

BEGIN = "<!-- BEGIN GENERATED REFERENCE -->"
END = "<!-- END GENERATED REFERENCE -->"

def one_line(text: str | None) -> str:
    """A field's doc on one line (a multi-line docstring would break the table and .env.example)."""
    return " ".join((text or "").split())


SECTIONS = [
    ("Source", "postgres_user"), ("Backup", "backup_dir"), ("Encryption", "encrypt_enabled"),
    ("S3", "s3_enabled"), ("MinIO", "minio_enabled"), ("Retention", "retention_days"),
    ("Notifications", "webhook_enabled"), ("Drills, health, metrics, schedule", "drill_host"),
    ("WAL archive", "wal_push_async"), ("Logging", "log_level"),
]

EXAMPLES: dict[str, str] = {
    "POSTGRES_USER": "sentinel_user", "POSTGRES_DB": "sentinel_db", "POSTGRES_CONTAINER": "sentinel-postgres",
    "SERVER_NAME": "db1", "POSTGRES_HOST": "db.internal", "POSTGRES_PORT": "5432",
    "POSTGRES_PASSWORD": "(use the _FILE variant)",
    "POSTGRES_PASSWORD_FILE": "/etc/sentinel/pgpass.txt", "DOCKER_BIN": "podman",
    "PG_BIN_DIR": "/usr/lib/postgresql/16/bin", "BACKUP_DIR": "/var/backups/sentinel/postgres",
    "LOCAL_ENABLED": "false", "BACKUP_FORMAT": "custom", "COMPRESSION": "zstd", "COMPRESSION_LEVEL": "9",
    "COMPRESSION_THREADS": "2", "MIN_BACKUP_SIZE": "4096", "VERIFY_AFTER_BACKUP": "restore",
    "PG_DUMP_OPTIONS": "--exclude-table-data=audit.*", "PG_DUMP_JOBS": "4", "TEMP_DIR": "/var/tmp/sentinel",
    "LOCK_WAIT_TIMEOUT": "5m", "BACKUP_GLOBALS": "true",
    "BACKUP_MODE": "physical", "PHYSICAL_CHECKPOINT": "spread", "PHYSICAL_SPOOL_DIR": "/var/tmp/sentinel-spool",
    "PHYSICAL_ZSTD_BY_PG_BASEBACKUP": "true",
    "PHYSICAL_INCREMENTAL": "true", "PHYSICAL_FULL_EVERY": "7d", "PHYSICAL_MAX_INCREMENTALS": "6",
    "DRILL_PITR_MARKER": "false",
    "DRILL_AMCHECK": "true",
    "ENCRYPT_ENABLED": "true",
    "ENCRYPTION_METHOD": "age", "ENCRYPTION_KEY_PATH": "/etc/sentinel/backup.key",
    "AGE_RECIPIENTS": "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
    "AGE_RECIPIENTS_FILE": "/etc/sentinel/recipients.txt", "AGE_IDENTITY_FILE": "/root/sentinel-identity.txt",
    "S3_ENABLED": "true", "S3_BUCKET": "s3://sentinel-backups/postgres", "S3_STORAGE_CLASS": "STANDARD_IA",
    "S3_REGION": "us-east-1", "S3_ENDPOINT_URL": "https://s3.eu-central-003.backblazeb2.com",
    "S3_OBJECT_LOCK_DAYS": "30", "S3_OBJECT_LOCK_MODE": "COMPLIANCE", "S3_RETENTION_DAYS": "90",
    "MINIO_ENABLED": "true", "MINIO_ENDPOINT": "https://minio.internal:9000", "MINIO_BUCKET": "backups/postgres",
    "MINIO_ACCESS_KEY": "sentinel", "MINIO_SECRET_KEY": "(use the _FILE variant)",
    "MINIO_SECRET_KEY_FILE": "/etc/sentinel/minio-secret", "MINIO_REGION": "us-east-1",
    "MINIO_OBJECT_LOCK_DAYS": "14", "MINIO_OBJECT_LOCK_MODE": "GOVERNANCE", "MINIO_RETENTION_DAYS": "14",
    "RETENTION_DAYS": "30", "RETENTION_KEEP_LAST": "7", "RETENTION_KEEP_DAILY": "7", "RETENTION_KEEP_WEEKLY": "4",
    "RETENTION_KEEP_MONTHLY": "12", "RETENTION_KEEP_YEARLY": "3", "RETENTION_TIMEZONE": "Europe/Paris",
    "RETENTION_AFTER_BACKUP": "false", "WEBHOOK_ENABLED": "true",
    "WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX", "WEBHOOK_FORMAT": "discord",
    "NOTIFICATION_LEVEL": "error", "HEALTHCHECK_URL": "https://hc-ping.com/your-uuid",
    "DRILL_HOST": "drill-db.internal", "DRILL_PORT": "5433", "DRILL_USER": "sentinel_drill",
    "DRILL_PASSWORD": "(use the _FILE variant)", "DRILL_PASSWORD_FILE": "/etc/sentinel/drill-password",
    "DRILL_CONTAINER": "sentinel-drill-postgres", "DRILL_SQL_FILE": "/etc/sentinel/drill-checks.sql",
    "MANIFEST_TABLE_HASHES": "true", "MAX_BACKUP_AGE": "26h",
    "METRICS_FILE": "/var/lib/node_exporter/textfile/sentinel_backup.prom", "BACKUP_SCHEDULE": "0 */6 * * *",
    "PRUNE_SCHEDULE": "30 4 * * *", "DRILL_SCHEDULE": "0 5 * * 0", "SCHEDULE_TIMEZONE": "Europe/Paris",
    "WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": "/var/spool/sentinel-wal", "WAL_FETCH_PREFETCH": "4",
    "MAX_WAL_AGE": "1h", "WAL_RECEIVE_ENABLED": "true", "WAL_RECEIVE_SLOT": "sentinel_backup",
    "WAL_RECEIVE_DIR": "/var/lib/sentinel-backup/wal-receive",
    "LOG_LEVEL": "DEBUG", "LOG_FILE": "/var/log/sentinel-backup/sentinel-backup.log", "LOG_FORMAT": "json",
}


def descriptions() -> dict[str, str]:
    """Each setting's docstring (the string below its field in the Settings class), read from the source
    here rather than by pydantic at every start (``use_attribute_docstrings`` parses the source each time)."""
    tree = ast.parse(inspect.getsource(sys.modules[Settings.__module__]))
    [cls] = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == Settings.__name__]
    found: dict[str, str] = {}
    for field, doc in zip(cls.body, cls.body[1:], strict=False):
        if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            found[field.target.id] = inspect.cleandoc(doc.value.value)
    return found


def variables(name: str) -> list[str]:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    return [str(alias)]


def default_text(value: Any) -> str:
    if value is PydanticUndefined:
        return "**required**"
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if value != "" else "empty"


def rows() -> list[tuple[str, str, str, str, str]]:
    """(section, variable(s), default, example, description) for every setting."""
    starts = {field: title for title, field in SECTIONS}
    section = SECTIONS[0][0]
    out = []
    texts = descriptions()
    for name, field in Settings.model_fields.items():
        section = starts.get(name, section)
        names = variables(name)
        out.append((section, " or ".join(f"`{n}`" for n in names), default_text(field.default),
                    f"`{EXAMPLES[names[0]]}`", one_line(texts.get(name)).replace("|", "\\|")))
    return out


def reference_markdown() -> str:
    lines: list[str] = []
    current = None
    for section, names, default, example, text in rows():
        if section != current:
            lines += ["", f"### {section}", "", "| Variable | Default | Example | Meaning |", "|---|---|---|---|"]
            current = section
        lines.append(f"| {names} | {default} | {example} | {text} |")
    return "\n".join(lines).strip() + "\n"


def env_example() -> str:
    lines = ["# Sentinel Backup settings: every variable with its default (commented out where it has one).",
             "# The environment wins over this file. Reference: docs/configuration.md", ""]
    current = None
    texts = descriptions()
    for name, field in Settings.model_fields.items():
        section = next((t for t, f in SECTIONS if f == name), None)
        if section and section != current:
            lines += ["", f"# --- {section} ---"]
            current = section
        variable = variables(name)[0]
        lines.append(f"# {one_line(texts.get(name))}")
        if field.default is PydanticUndefined:
            lines.append(f"{variable}={EXAMPLES[variable]}")
        else:
            text = default_text(field.default).strip("`")
            lines.append(f"# {variable}={'' if text in ('unset', 'empty') else text}")
    return "\n".join(lines).strip() + "\n"


def render_doc(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{reference_markdown()}{END}{tail}"


def main(root: Path) -> int:
    doc = root / "docs" / "configuration.md"
    doc.write_text(render_doc(doc.read_text()))
    (root / ".env.example").write_text(env_example())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()))
