"""The settings schema: parsing, validation messages, and the generated reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel_backup import config_docs
from sentinel_backup.choices import Compression, LogLevel
from sentinel_backup.config import load_settings, parse_duration, settings_from
from sentinel_backup.config_env import tool_prefixes, tool_variables, unknown_variables
from sentinel_backup.errors import ConfigError
from sentinel_backup.storage import aws_env

ROOT = Path(__file__).resolve().parents[2]
BASE = {"POSTGRES_USER": "u", "POSTGRES_DB": "db", "BACKUP_DIR": "/tmp/x"}


def test_defaults_match_the_original_shell_version() -> None:
    s = settings_from(BASE)
    assert s.compression is Compression.GZIP and s.log_level is LogLevel.INFO
    assert s.local_enabled and not s.s3_enabled and not s.encrypt_enabled and not s.webhook_enabled
    assert s.databases == ["db"] and not s.dump_globals


def test_database_lists_and_all() -> None:
    assert settings_from({**BASE, "POSTGRES_DB": " a, b ,c"}).databases == ["a", "b", "c"]
    assert settings_from({**BASE, "POSTGRES_DB": "a,b"}).dump_globals
    assert settings_from({**BASE, "POSTGRES_DB": "ALL"}).all_databases
    assert not settings_from({**BASE, "POSTGRES_DB": "a,b", "BACKUP_GLOBALS": "false"}).dump_globals


@pytest.mark.parametrize(("values", "needle"), [
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"POSTGRES_PORT": "abc"}, "POSTGRES_PORT"),
    ({"POSTGRES_PORT": "70000"}, "POSTGRES_PORT"),
    ({"COMPRESSION": "zstd", "COMPRESSION_LEVEL": "30"}, "COMPRESSION_LEVEL"),
    ({"COMPRESSION_LEVEL": "12"}, "COMPRESSION_LEVEL for gzip"),
    ({"RETENTION_TIMEZONE": "Mars/Olympus"}, "RETENTION_TIMEZONE"),
    ({"MAX_BACKUP_AGE": "soon"}, "MAX_BACKUP_AGE"),
    ({"POSTGRES_DB": " , "}, "POSTGRES_DB"),
    ({"SERVER_NAME": "db/1"}, "SERVER_NAME: must be one safe path segment"),
    ({"SERVER_NAME": "all"}, "SERVER_NAME"),
    ({"SERVER_NAME": ".."}, "SERVER_NAME"),
])
def test_bad_values_name_the_variable(values: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from({**BASE, **values})
    assert needle in info.value.message


def test_missing_required_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from({"POSTGRES_DB": "db"})
    assert "POSTGRES_USER is required" in info.value.message and "BACKUP_DIR is required" in info.value.message


def test_secrets_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from({**BASE, "WEBHOOK_URL": ["https://hooks.slack.com/services/SECRET"]})  # type: ignore[dict-item]
    assert "SECRET" not in info.value.message


def test_warning_is_warn_and_case_does_not_matter() -> None:
    assert settings_from({**BASE, "LOG_LEVEL": "warning"}).log_level is LogLevel.WARN
    assert settings_from({**BASE, "COMPRESSION": "ZSTD"}).compression is Compression.ZSTD


def test_environment_wins_over_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("POSTGRES_USER=from_file\nPOSTGRES_DB=filedb\nBACKUP_DIR=/tmp/f\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("POSTGRES_USER", "from_env")
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    s = load_settings(env_file)
    assert s.postgres_user == "from_env" and s.postgres_db == "filedb" and s.log_level is LogLevel.DEBUG


def test_missing_env_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.env")
    assert "--env-file" in info.value.message


def test_password_file_first_line(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    secret.chmod(0o600)
    assert settings_from({**BASE, "POSTGRES_PASSWORD_FILE": str(secret)}).password() == "s3cret"
    with pytest.raises(ConfigError):
        settings_from({**BASE, "POSTGRES_PASSWORD_FILE": str(tmp_path / "missing")}).password()


@pytest.mark.parametrize(("text", "seconds"), [("26h", 93600), ("90m", 5400), ("7d", 604800), ("120", 120)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_reference_and_env_example_are_up_to_date() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert config_docs.render_doc(doc) == doc, "run: python -m sentinel_backup.config_docs"
    assert (ROOT / ".env.example").read_text() == config_docs.env_example()
    for name in config_docs.Settings.model_fields:
        assert f"`{config_docs.variables(name)[0]}`" in doc


@pytest.mark.parametrize("variable", ["POSTGRES_PASSWORD_FILE", "DRILL_PASSWORD_FILE"])
def test_password_files_readable_by_others_are_refused(tmp_path: Path, variable: str) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o640)
    settings = settings_from({**BASE, variable: str(secret)})
    if variable == "DRILL_PASSWORD_FILE":  # the drill reads it through the same settings
        settings = settings.model_copy(update={"postgres_password_file": secret})
    with pytest.raises(ConfigError) as info:
        settings.password()
    assert info.value.exit_code == 2 and f"chmod 600 {secret}" in (info.value.hint or "")
    assert "s3cret" not in info.value.message


def test_empty_values_mean_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("POSTGRES_USER=u\nPOSTGRES_DB=d\nBACKUP_DIR=/tmp/f\nLOG_LEVEL=\nCOMPRESSION=\n"
                        "MINIO_REGION=\nRETENTION_DAYS=\n")
    for name in ("LOG_LEVEL", "COMPRESSION", "MINIO_REGION", "RETENTION_DAYS", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOG_FORMAT", "")
    s = load_settings(env_file)
    assert s.log_level is LogLevel.INFO and s.compression is Compression.GZIP
    assert s.minio_region == "us-east-1" and s.retention_days is None and s.log_format.value == "text"


def test_unknown_variables_are_named_with_the_nearest_known_one() -> None:
    file_values = {"POSTGRES_USER": "u", "RETENTON_DAYS": "3", "BACKUP_FROMAT": "custom", "POSTGRES_PASWORD": "x",
                   "AWS_ACCESS_KEY_ID": "k", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_SECRET_ACESS_KEY": "s",
                   "TZ": "UTC", "SOMETHING_ELSE": "1"}
    environ = {"LOG_LEVL": "DEBUG", "DOCKER_HOST": "unix:///x", "PG_VERSION": "16", "HOME": "/root",
               "S3_BUCKET": "s3://b", "WEBHOOK_URLS": "https://x"}
    warnings = unknown_variables(file_values, environ)
    text = "\n".join(warnings)
    assert "RETENTON_DAYS in the .env file (did you mean RETENTION_DAYS?)" in text
    assert "BACKUP_FROMAT in the .env file (did you mean BACKUP_FORMAT?)" in text
    assert "POSTGRES_PASWORD in the .env file (did you mean POSTGRES_PASSWORD?)" in text
    assert "AWS_SECRET_ACESS_KEY" in text and "did you mean AWS_SECRET_ACCESS_KEY?" in text
    assert "LOG_LEVL in the environment (did you mean LOG_LEVEL?)" in text
    assert "unknown variable SOMETHING_ELSE in the .env file: it is ignored" in text
    assert len(warnings) == 6, warnings  # nothing about known, AWS SDK, system or foreign-prefix names
    assert "s3://b" not in text and "custom" not in text  # names only, never values


def test_prefixes_and_aws_variables_come_from_their_sources() -> None:
    prefixes = tool_prefixes()
    for prefix in ("POSTGRES_", "BACKUP_", "S3_", "MINIO_", "RETENTION_", "ENCRYPT_", "ENCRYPTION_", "AGE_",
                   "WEBHOOK_", "NOTIFICATION_", "LOG_", "VERIFY_", "DRILL_", "METRICS_", "HEALTHCHECK_"):
        assert prefix in prefixes
    assert all(any(name.startswith(p) for name in tool_variables()) for p in prefixes if p != "SENTINEL_")
    assert "DOCKER_" not in prefixes and "PG_" not in prefixes
    known = aws_env.variables()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        assert name in known


def test_environment_wins_over_aws_variables_of_the_env_file() -> None:
    file_values = {"AWS_ACCESS_KEY_ID": "file", "AWS_SECRET_ACCESS_KEY": "file-secret", "AWS_CA_BUNDLE": "/ca",
                   "AWS_DEFAULT_REGION": "eu-west-1", "AWS_TYPO": "x", "AWS_SESSION_TOKEN": ""}
    assert aws_env.from_env_file(file_values, {}) == {"AWS_ACCESS_KEY_ID": "file", "AWS_SECRET_ACCESS_KEY":
                                                      "file-secret", "AWS_CA_BUNDLE": "/ca",
                                                      "AWS_DEFAULT_REGION": "eu-west-1"}
    # the environment chose its credentials (keys or a profile): none of the file's are mixed in
    for environ in ({"AWS_ACCESS_KEY_ID": "env"}, {"AWS_PROFILE": "prod"}):
        chosen = aws_env.from_env_file(file_values, environ)
        assert "AWS_ACCESS_KEY_ID" not in chosen and "AWS_SECRET_ACCESS_KEY" not in chosen
        assert chosen["AWS_CA_BUNDLE"] == "/ca"
    assert "AWS_DEFAULT_REGION" not in aws_env.from_env_file(file_values, {"AWS_DEFAULT_REGION": "us-east-2"})


def test_botocore_session_sees_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    session = aws_env.botocore_session({"AWS_ACCESS_KEY_ID": "AKIAFILE", "AWS_SECRET_ACCESS_KEY": "secret",
                                        "AWS_REGION": "eu-north-1", "AWS_MAX_ATTEMPTS": "7"})
    credentials = session.get_credentials()
    assert credentials is not None and credentials.access_key == "AKIAFILE"
    assert session.get_config_variable("region") == "eu-north-1"
    assert session.get_config_variable("max_attempts") == 7
