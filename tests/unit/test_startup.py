"""Start-up: what a command imports before it works (docs/performance.md, "Start-up").

Each case runs a fresh interpreter (imports are per process) and lists which heavy
modules ended up loaded; no timings are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sentinel_backup import config_docs
from sentinel_backup.config import Settings

PROBE = """
import json, sys
from sentinel_backup.cli import main
code = main(sys.argv[1:])
heavy = ["typer._adapters", "pydantic", "pydantic_settings", "typer", "cryptography",
         "sentinel_backup.notify", "sentinel_backup.logical.restore",
         "sentinel_backup.logical.drill", "boto3", "rich"]
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def loaded_by(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=cwd, capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return int(result["code"]), list(result["loaded"])


def base_env(tmp_path: Path) -> dict[str, str]:
    import os
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "HOME": str(tmp_path), "SENTINEL_ENV_FILE": str(tmp_path / "none.env")}


def test_version_and_help_load_neither_pydantic_nor_typers_adapters(tmp_path: Path) -> None:
    for args in (["--version"], ["--help"], ["check", "--help"]):
        code, loaded = loaded_by(args, base_env(tmp_path), tmp_path)
        assert code == 0 and loaded == ["typer"], (args, loaded)


def test_check_of_a_local_only_configuration_loads_only_what_it_uses(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    env = {**base_env(tmp_path), "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1", "POSTGRES_USER": "u",
           "POSTGRES_DB": "app", "BACKUP_DIR": str(backups), "LOG_LEVEL": "ERROR"}
    code, loaded = loaded_by(["check", "--no-progress"], env, tmp_path)
    assert code == 1  # no server on port 1: the source check is critical, the command still ran every check
    # the settings through the lean reader (no pydantic-settings, no settings model), no manifest model while
    # there is no manifest to read; no encryption, webhook, drill, restore or S3 machinery, no Typer adapters
    assert loaded == ["typer"], loaded


def test_wal_push_and_wal_fetch_load_neither_pydantic_nor_typer(tmp_path: Path) -> None:
    from tests.unit.test_wal_push import SYSID, segment

    backups = tmp_path / "backups"
    wal = tmp_path / "pg_wal"
    wal.mkdir()
    name = segment(wal).name
    env = {**base_env(tmp_path), "POSTGRES_USER": "u", "POSTGRES_DB": "app", "BACKUP_DIR": str(backups),
           "LOG_LEVEL": "ERROR", "COMPRESSION": "zstd"}
    for extra in ({}, {"WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": str(tmp_path / "spool")}):
        code, loaded = loaded_by(["wal-push", str(wal / name)], {**env, **extra}, tmp_path)
        assert code == 0 and loaded == [], (extra, loaded)
    code, loaded = loaded_by(["wal-fetch", name, str(tmp_path / "restored"), "--system-id", str(SYSID)], env, tmp_path)
    assert code == 0 and loaded == [], loaded
    assert (tmp_path / "restored").read_bytes() == (wal / name).read_bytes()
    code, loaded = loaded_by(["wal-fetch", "000000010000000000000009", str(tmp_path / "absent"),
                                   "--system-id", str(SYSID)], env, tmp_path)
    assert code == 1 and loaded == [], loaded


def test_every_setting_has_its_description_for_the_reference() -> None:
    texts = config_docs.descriptions()
    assert set(texts) == set(Settings.model_fields)
    assert all(texts.values())
    assert texts["compression_threads"].startswith("zstd worker threads")
