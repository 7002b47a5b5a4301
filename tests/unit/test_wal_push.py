"""wal-push's core against real local folders (a failing destination is a fake beside a real one):
the key, idempotence, conflicts, and a destination down -> failure, then only the missing copy."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.config import settings_from
from sentinel_backup.errors import StorageError
from sentinel_backup.storage.base import ObjectInfo, ObjectWriter
from sentinel_backup.storage.local import LocalStorage
from sentinel_backup.wal.archive import WalConflict
from sentinel_backup.wal.push import PushFailed, identify, push_file
from sentinel_backup.wal.segment import WalFileError, segment_number

MB = 1 << 20
SYSID = 7714987486134324860
NAME = "000000010000000000000006"


def segment(folder: Path, name: str = NAME, fill: bytes = b"x") -> Path:
    position = segment_number(name, MB)[1] * MB
    header = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, position, 0, SYSID, MB, 8192)
    path = folder / name
    path.write_bytes(header + fill * (MB - len(header)))
    return path


class Flaky(LocalStorage):
    """A real local destination that can be switched off, as a store that is down."""

    def __init__(self, folder: Path, name: str) -> None:
        super().__init__(folder)
        self.name = name
        self.down = False

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        if self.down:
            raise StorageError(f"{self.name}: connection refused")
        return super().list(prefix, deep=deep)

    def open_writer(self, key: str, *, artifact: bool = True) -> Any:
        if self.down:
            raise StorageError(f"{self.name}: connection refused")
        writer: ObjectWriter = super().open_writer(key, artifact=artifact)
        return writer


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    return settings_from({"POSTGRES_USER": "u", "POSTGRES_DB": "d", "BACKUP_DIR": str(tmp_path / "local"),
                          "COMPRESSION": "zstd"})


def stored(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_identify_reads_the_header(tmp_path: Path) -> None:
    wal = identify(segment(tmp_path))
    assert wal.system_id == str(SYSID) and wal.name == NAME and wal.size == MB
    with pytest.raises(WalFileError, match="belongs to system identifier"):
        identify(segment(tmp_path), system_id="42")
    with pytest.raises(WalFileError, match="not a WAL file name"):
        identify(tmp_path / "notes.txt")


def test_a_destination_down_fails_the_push_and_the_retry_writes_only_the_missing_copy(
        tmp_path: Path, settings: Any) -> None:
    local, remote = Flaky(tmp_path / "local", "local"), Flaky(tmp_path / "remote", "s3")
    path = segment(tmp_path)
    remote.down = True
    with pytest.raises(PushFailed, match=r"not archived on every destination \(s3 failed; stored on local\)"):
        push_file(settings, path, destinations=[local, remote])
    (key,) = stored(tmp_path / "local")
    assert key.startswith(f"wal/{SYSID}/00000001/{NAME}.") and key.endswith(".zst")
    before = (tmp_path / "local" / key).stat().st_mtime_ns

    remote.down = False
    result = push_file(settings, path, destinations=[local, remote])
    assert result.present == {"local": key} and result.stored == {"s3": key}
    assert stored(tmp_path / "remote") == [key]
    assert (tmp_path / "local" / key).stat().st_mtime_ns == before  # written once, never rewritten

    again = push_file(settings, path, destinations=[local, remote])
    assert again.stored == {} and set(again.present) == {"local", "s3"}


def test_different_content_under_an_archived_name_writes_nowhere(tmp_path: Path, settings: Any) -> None:
    local, remote = Flaky(tmp_path / "local", "local"), Flaky(tmp_path / "remote", "s3")
    push_file(settings, segment(tmp_path), destinations=[remote])
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(WalConflict, match="already archived on s3 with different content"):
        push_file(settings, segment(other, fill=b"y"), destinations=[local, remote])
    assert stored(tmp_path / "local") == []  # nothing written, not even where the name was free


class CountingReads:
    """Counts the bytes read from WAL files (wraps the real ``open`` of the push module)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import builtins

        from sentinel_backup.wal import push as push_module

        self.read = 0
        real_open = builtins.open
        counter = self

        class Counted:
            def __init__(self, file: Any) -> None:
                self.file = file

            def read(self, size: int = -1) -> bytes:
                data: bytes = self.file.read(size)
                counter.read += len(data)
                return data

            def __getattr__(self, name: str) -> Any:
                return getattr(self.file, name)

        def counted_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            file = real_open(path, mode, *args, **kwargs)
            return Counted(file) if "r" in mode and str(path).split("/")[-1].startswith("0000") else file

        monkeypatch.setattr(push_module, "open", counted_open, raising=False)


@pytest.mark.parametrize("spill", [64 << 20, 4096])  # in memory, and through a temporary file
def test_a_push_reads_the_file_once_and_stores_exactly_those_bytes(
        tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, spill: int) -> None:
    import hashlib

    import zstandard

    from sentinel_backup.wal import push as push_module

    monkeypatch.setattr(push_module, "SPILL", spill)
    counter = CountingReads(monkeypatch)
    path = segment(tmp_path, fill=b"w")
    local, remote = Flaky(tmp_path / "local", "local"), Flaky(tmp_path / "remote", "s3")
    result = push_file(settings, path, destinations=[local, remote])
    assert counter.read == MB  # one pass: hashed and compressed from the same read
    data = path.read_bytes()
    assert result.file.sha256 == hashlib.sha256(data).hexdigest()
    (key,) = stored(tmp_path / "local")
    assert stored(tmp_path / "remote") == [key] and result.stored == {"local": key, "s3": key}
    assert f".{result.file.sha256}." in key
    for folder in (tmp_path / "local", tmp_path / "remote"):
        assert zstandard.ZstdDecompressor().decompressobj().decompress((folder / key).read_bytes()) == data
