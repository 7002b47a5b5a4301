"""The settings schema: parsing, validation messages, and the generated reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel_backup import config_docs
from sentinel_backup.config import Compression, LogLevel, load_settings, parse_duration, settings_from
from sentinel_backup.errors import ConfigError

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
