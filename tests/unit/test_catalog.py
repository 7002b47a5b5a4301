"""The catalog's legacy entries: recognised by name as retention does, never `latest`."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sentinel_backup.errors import NotFound
from sentinel_backup.model.catalog import scan
from sentinel_backup.model.manifest import CompressionInfo, Manifest
from sentinel_backup.storage.local import LocalStorage


def real_backup(storage: LocalStorage, name: str, created: datetime) -> None:
    storage.put_bytes(name, b"data")
    manifest = Manifest(id=name.removeprefix("sentinel_backup_").removesuffix(".sql.gz"), database="app",
                        artifact=name, created_at=created, finished_at=created, duration_seconds=1,
                        tool_version="t", hostname="h", compression=CompressionInfo(algorithm="gzip", level=6),
                        raw_size_bytes=4, raw_sha256="0" * 64, size_bytes=4, sha256="0" * 64, tables={})
    storage.put_bytes(manifest.manifest_key, manifest.to_json())


def test_legacy_files_are_listed_only_on_request(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("sentinel_backup_app_20241103_030000.sql.gz", gzip.compress(b"-- dump\n"))
    storage.put_bytes("sentinel_backup_20241104_030000.sql.gz.enc", b"Salted__12345678")
    storage.put_bytes("sentinel_backup_notes.txt", b"a stranger's file")
    assert scan([storage]).entries == []  # backup jobs, checks and drills see manifests only
    entries = scan([storage], legacy=True, legacy_db="fallback").entries
    assert [(e.id, e.legacy, e.manifest.database, e.manifest.created_at) for e in entries] == [
        ("sentinel_backup_20241104_030000.sql.gz.enc", True, "fallback", datetime(2024, 11, 4, 3, tzinfo=UTC)),
        ("sentinel_backup_app_20241103_030000.sql.gz", True, "app", datetime(2024, 11, 3, 3, tzinfo=UTC)),
    ]
    encrypted = entries[0].to_json()
    assert encrypted["encryption"] == {"method": "aes-256-cbc", "key_id": None}
    assert encrypted["sha256"] is None and encrypted["size_bytes"] == 16 and encrypted["legacy"] is True


def test_latest_never_picks_a_legacy_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("sentinel_backup_app_20991231_235959.sql.gz", gzip.compress(b"-- newer by name\n"))
    with pytest.raises(NotFound, match="only 1 legacy file") as raised:
        scan([storage], legacy=True).find("latest")
    assert raised.value.hint is not None and "sentinel_backup_app_20991231_235959.sql.gz" in raised.value.hint
    real_backup(storage, "sentinel_backup_app_20261129T030000Z.sql.gz", datetime(2026, 11, 29, 3, tzinfo=UTC))
    catalog = scan([storage], legacy=True)
    assert catalog.entries[0].legacy  # newest first in the listing
    assert catalog.find("latest").id == "app_20261129T030000Z"
    assert catalog.find("latest", "app").id == "app_20261129T030000Z"
    assert catalog.find("sentinel_backup_app_20991231_235959.sql.gz").legacy  # taken by name
