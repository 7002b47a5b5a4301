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


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/../b", ".hidden", "dir/.hidden", "nul\0"])
def test_bad_keys_are_refused_by_every_operation(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "b")
    storage.prepare()
    (tmp_path / "up").write_bytes(b"outside")
    for operation in (storage.stat, storage.open_reader, storage.local_path):
        with pytest.raises(StorageError, match="invalid object name"):
            operation(key)
    if key not in (".hidden", "dir/.hidden"):  # a temporary file's name may be deleted (retention's leftovers)
        with pytest.raises(StorageError, match="invalid object name"):
            storage.delete(key)
    assert (tmp_path / "up").read_bytes() == b"outside"


def test_retention_can_delete_the_partial_files_a_crash_left(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("basebackups/42/sentinel_base_x.tar.gz")
    writer.write(b"half")  # never committed: a crash
    (partial,) = list(storage.list_partials())
    assert partial.key.startswith("basebackups/42/.")
    storage.delete(partial.key)
    assert list(storage.list_partials()) == []
    with pytest.raises(StorageError):
        storage.delete("basebackups/..")
