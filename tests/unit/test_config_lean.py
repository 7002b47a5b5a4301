"""The lean settings reader (config_lean, no pydantic) against the schema (config.Settings):
the generated table is the schema's, and both readers give the same values, defaults and
error messages for every field, from the environment and from the .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sentinel_backup import config_fields
from sentinel_backup.config import Settings, load_settings
from sentinel_backup.config_fields import FIELDS
from sentinel_backup.config_lean import LeanSettings, load_lean
from sentinel_backup.config_spec import FieldSpec
from sentinel_backup.config_table import table_source
from sentinel_backup.errors import ConfigError

BASE = {"POSTGRES_USER": "u", "POSTGRES_DB": "app", "BACKUP_DIR": "/var/backups/x"}
TOOL = tuple({a for spec in FIELDS for a in spec.aliases} | {"SENTINEL_ENV_FILE"})

SAMPLES: dict[str, list[str]] = {
    "str": ["x", " padded ", "  ", "a,b", "ünïcode"],
    "path": ["/tmp/p", "relative/p", "  ", " /tmp/sp "],
    "bool": ["true", "TRUE", "yes", "On", "1", "0", "off", "F", "n", "No", " yes ", "maybe", "1.0", "2", "  "],
    "int": ["1", "0", "5", " 12 ", "12.0", "12.", "1.5", "1_000", "+5", "-1", "0x10", "\uff11\uff12", "abc", "65536",
            "1e3", "__1", "1__0", "  ", "99999999999999999999"],
    "enum": ["  ", "nope", "x y"],
}
EXTRA: dict[str, list[str]] = {  # values the schema's validators care about
    "log_level": ["debug", " warning ", "Warn", "info"], "log_format": ["JSON", " text"],
    "compression": ["ZSTD", "none", " gzip "], "backup_format": ["Directory", "custom"],
    "encryption_method": ["AGE", "aes-256-cbc"], "verify_after_backup": ["reread", "RESTORE"],
    "backup_mode": ["physical", "PHYSICAL"], "physical_checkpoint": ["spread"],
    "notification_level": ["error"], "webhook_format": ["slack"],
    "max_backup_age": ["26h", "0", "7d", "soon", " 5m "], "max_wal_age": ["1h", "0h", "x"],
    "physical_full_every": ["7d", "-1d"], "lock_wait_timeout": ["0", "30s", "00m", "never"],
    "wal_receive_slot": ["ok_slot", " ok ", "Bad-Slot", "x" * 64],
    "retention_timezone": ["Europe/Paris", "Mars/Base", "../etc"], "schedule_timezone": ["UTC", ""],
    "postgres_db": ["a,b", " , ", "all"], "webhook_url": ["https://hooks.example/x", "slack:https://h/x"],
    "server_name": ["db1", " pg-eu.prod ", "all", "db/1", "-x", "x" * 64],
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import os

    for name in list(os.environ):
        if name in TOOL or name.startswith(("AWS_", "POSTGRES_", "S3_", "MINIO_", "WAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SENTINEL_ENV_FILE", str(tmp_path / "absent.env"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def values_of(settings: Any) -> dict[str, Any]:
    return {spec.name: getattr(settings, spec.name) for spec in FIELDS}


def outcome(loader: Any, env_file: Path | None = None) -> Any:
    try:
        settings = loader(env_file)
    except ConfigError as exc:
        return ("error", exc.message, exc.hint)
    derived = (settings.databases, settings.all_databases, settings.dump_globals, settings.lock_wait,
               settings.effective_compression_level(), settings.warnings, settings.aws_env)
    return ("ok", values_of(settings), derived)


def assert_agree(env_file: Path | None = None) -> Any:
    full, lean = outcome(load_settings, env_file), outcome(load_lean, env_file)
    if lean[0] == full[0] == "ok":
        assert {k: v for k, v in lean[1].items() if full[1][k] != v} == {k: v for k, v in full[1].items()
                                                                          if lean[1][k] != v}
    assert lean == full
    return full


def test_the_generated_table_is_the_schemas() -> None:
    assert Path(config_fields.__file__).read_text() == table_source(), \
        "run: python -m sentinel_backup.config_table (config_fields.py is generated from config.Settings)"
    assert [s.name for s in FIELDS] == list(Settings.model_fields)


def test_defaults_agree(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    result = assert_agree()
    assert result[0] == "ok" and result[1]["compression"].value == "gzip"


def test_missing_required_variables_agree(clean_env: Path) -> None:
    result = assert_agree()
    assert result[0] == "error" and "POSTGRES_USER is required but not set" in result[1]


def _cases(spec: FieldSpec) -> list[str]:
    kind = "enum" if spec.kind.startswith("enum:") else spec.kind
    return [*SAMPLES[kind], *EXTRA.get(spec.name, [])]


@pytest.mark.parametrize("spec", FIELDS, ids=[s.name for s in FIELDS])
def test_every_field_agrees_from_the_environment_and_the_env_file(
        spec: FieldSpec, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = clean_env / "test.env"
    for raw in _cases(spec):
        for variable in spec.aliases:
            for name, value in BASE.items():
                monkeypatch.setenv(name, value)
            monkeypatch.setenv(variable, raw)  # the environment
            assert_agree(), (variable, raw)
            monkeypatch.delenv(variable)
            quoted = raw.replace("'", "")
            env_file.write_text(f"{variable}='{quoted}'\n")  # the .env file
            assert_agree(env_file), (variable, raw)
    env_file.write_text(f"{spec.aliases[0]}\n")  # a bare name: None from python-dotenv
    assert_agree(env_file)


def test_precedence_empty_values_and_aliases_agree(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = clean_env / "p.env"
    env_file.write_text("POSTGRES_USER=from_file\nPOSTGRES_DB=filedb\nBACKUP_DIR=/b\nLOG_LEVEL=debug\n"
                        "WEBHOOK_URL=https://file.example/a\nCOMPRESSION=zstd\nUNKNOWN_THING=1\nPGHOST=x\n")
    monkeypatch.setenv("POSTGRES_USER", "from_env")  # the environment wins
    monkeypatch.setenv("LOG_LEVEL", "")  # empty is unset: the file's value applies
    monkeypatch.setenv("WEBHOOK_URLS", "https://env.example/b")  # the other name, in the other source
    monkeypatch.setenv("S3_BUKET", "typo")
    result = assert_agree(env_file)
    assert result[1]["postgres_user"] == "from_env" and result[1]["log_level"].value == "DEBUG"
    assert any("UNKNOWN_THING" in w for w in result[2][5]) and any("S3_BUKET" in w for w in result[2][5])
    monkeypatch.setenv("SENTINEL_ENV_FILE", str(env_file))  # found through SENTINEL_ENV_FILE
    assert assert_agree()[1]["compression"].value == "zstd"
    monkeypatch.setenv("SENTINEL_ENV_FILE", str(clean_env / "nowhere.env"))
    assert assert_agree(clean_env / "nowhere.env")[1].startswith("--env-file")


@pytest.mark.parametrize("extra", [
    {"PG_DUMP_JOBS": "3"}, {"BACKUP_FORMAT": "directory", "POSTGRES_CONTAINER": "pg"},
    {"COMPRESSION_LEVEL": "12"}, {"COMPRESSION": "zstd", "COMPRESSION_LEVEL": "12"},
    {"COMPRESSION": "zstd", "COMPRESSION_LEVEL": "0"}, {"WAL_PUSH_ASYNC": "true"}, {"WAL_FETCH_PREFETCH": "2"},
    {"WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": "/s", "PG_DUMP_JOBS": "2", "COMPRESSION_LEVEL": "30"},
    {"POSTGRES_PASSWORD": "  secret  ", "DRILL_PASSWORD": "x", "POSTGRES_PORT": "x", "DRILL_PORT": "0"},
    {"AWS_REGION": "eu-west-1"},
])
def test_model_checks_and_combinations_agree(extra: dict[str, str], clean_env: Path) -> None:
    env_file = clean_env / "m.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {**BASE, **extra}.items()))
    assert_agree(env_file)


def test_model_copy_and_repr_hide_nothing_they_should_not(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**BASE, "POSTGRES_PASSWORD": "hunter2"}.items():
        monkeypatch.setenv(name, value)
    lean = load_lean()
    assert isinstance(lean, LeanSettings) and "hunter2" not in repr(lean) and lean.password() == "hunter2"
    copy = lean.model_copy(update={"postgres_db": "a,b"})
    assert copy.databases == ["a", "b"] and lean.databases == ["app"] and copy.dump_globals
