"""LocalStorage details the contract suite does not cover."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel_backup.errors import StorageError
from sentinel_backup.storage.local import LocalStorage


def test_an_artifact_never_replaces_an_existing_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("sentinel_backup_db_20261129T030000Z.sql.gz", b"first")
    writer = storage.open_writer("sentinel_backup_db_20261129T030000Z.sql.gz", artifact=True)
    writer.write(b"second")
    with pytest.raises(StorageError, match="never overwritten"):
        writer.commit()
    assert storage.read_bytes("sentinel_backup_db_20261129T030000Z.sql.gz") == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["sentinel_backup_db_20261129T030000Z.sql.gz"]


def test_sidecars_may_be_replaced(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("x.drill.json", b"old")
    storage.put_bytes("x.drill.json", b"new")
    assert storage.read_bytes("x.drill.json") == b"new"


def test_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    storage = LocalStorage(folder)
    storage.prepare()
    storage.put_bytes("a", b"data")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "a").stat().st_mode & 0o777 == 0o600
