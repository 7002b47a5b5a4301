"""How physical base backups compress: two zstd workers on 1 MiB jobs unless COMPRESSION_THREADS is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel_backup.config import load_settings
from sentinel_backup.physical.run import PHYSICAL_ZSTD_JOB, PHYSICAL_ZSTD_WORKERS, PhysicalRun
from sentinel_backup.pipeline.write import Encoding
from sentinel_backup.storage.local import LocalStorage
from sentinel_backup.streams.compress import ZSTD_JOB_SIZE


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("COMPRESSION_THREADS", "COMPRESSION", "ENCRYPT_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SENTINEL_ENV_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("POSTGRES_USER", "postgres")
    monkeypatch.setenv("POSTGRES_DB", "postgres")
    monkeypatch.setenv("COMPRESSION", "zstd")
    return tmp_path


def encoding(tmp_path: Path) -> tuple[Encoding, Encoding]:
    settings = load_settings()
    run = PhysicalRun(settings, [LocalStorage(tmp_path / "backups")], cipher=None)
    return run.encoding(), Encoding.from_settings(settings, None)


def test_two_workers_on_small_jobs_by_default(settings_env: Path) -> None:
    physical, logical = encoding(settings_env)
    assert (physical.threads, physical.job_size) == (PHYSICAL_ZSTD_WORKERS, PHYSICAL_ZSTD_JOB) == (2, 1 << 20)
    assert (logical.threads, logical.job_size) == (1, ZSTD_JOB_SIZE)  # logical backups keep their default


@pytest.mark.parametrize("threads", ["0", "1", "3"])
def test_compression_threads_when_set_is_obeyed(settings_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                threads: str) -> None:
    monkeypatch.setenv("COMPRESSION_THREADS", threads)
    physical, _ = encoding(settings_env)
    assert physical.threads == int(threads) and physical.job_size == PHYSICAL_ZSTD_JOB
