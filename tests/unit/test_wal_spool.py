"""The asynchronous spool on a real folder: durable copy, order, conflicts, shipping."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel_backup.config import settings_from
from sentinel_backup.wal import spool
from sentinel_backup.wal.archive import WalConflict
from tests.unit.test_wal_push import NAME, SYSID, segment


@pytest.fixture(autouse=True)
def no_background_shipper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "ensure_shipper", lambda root, env_file: False)  # shipped in-process below


def test_spool_then_ship_in_order(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    sources = tmp_path / "pg_wal"
    sources.mkdir()
    later = "000000010000000000000007"
    spool.spool_push(root, segment(sources, later))  # spooled out of order
    spool.spool_push(root, segment(sources))
    spool.spool_push(root, segment(sources))  # PostgreSQL retrying: the same content is fine
    assert [item.name for item in spool.pending(root)] == [NAME, later]
    assert all(item.system_id == str(SYSID) for item in spool.pending(root))
    assert not [p for p in (root / "push").rglob(".*")]  # no temporary file left
    for name in (NAME, later):  # the copy is the file, byte for byte
        assert (root / "push" / str(SYSID) / name).read_bytes() == (sources / name).read_bytes()

    settings = settings_from({"POSTGRES_USER": "u", "POSTGRES_DB": "d", "BACKUP_DIR": str(tmp_path / "archive"),
                              "WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": str(root)})
    assert spool.Shipper(settings).run() == 2
    assert spool.pending(root) == []
    names = sorted(p.name.split(".")[0] for p in (tmp_path / "archive" / "wal").rglob("*") if p.is_file())
    assert names == [NAME, later]


def test_different_content_under_a_spooled_name_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    spool.spool_push(root, segment(first))
    with pytest.raises(WalConflict, match="already spooled"):
        spool.spool_push(root, segment(second, fill=b"y"))
    assert len(spool.pending(root)) == 1


def test_the_shipper_ships_two_at_a_time_and_removes_in_order(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The first of a pair fails: it stays, and so does the second although it was stored (removal
    in name order); once the destination is back both go, the second found by its hash."""
    import threading

    from sentinel_backup.wal import push as push_module

    root = tmp_path / "spool"
    sources = tmp_path / "pg_wal"
    sources.mkdir()
    names = [f"00000001000000000000000{n}" for n in (6, 7, 8)]
    for name in names:
        spool.spool_push(root, segment(sources, name))
    settings = settings_from({"POSTGRES_USER": "u", "POSTGRES_DB": "d", "BACKUP_DIR": str(tmp_path / "archive"),
                              "WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": str(root)})
    real_push = push_module.push_file
    both_in_flight = threading.Barrier(2, timeout=60)
    calls: list[str] = []
    failing = {names[0]}

    def push_file(settings: object, path: Path, **kwargs: object) -> object:
        calls.append(path.name)
        if len(calls) <= 2:
            both_in_flight.wait()  # the first two run side by side, or this times out and breaks
        if path.name in failing:
            from sentinel_backup.errors import StorageError

            raise StorageError("s3: connection refused")
        return real_push(settings, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(push_module, "push_file", push_file)
    shipper = spool.Shipper(settings)
    monkeypatch.setattr(shipper._stop, "wait", lambda seconds: shipper._stop.set())  # stop instead of pausing
    assert shipper.run() == 0
    assert sorted(calls) == names[:2]
    assert [item.name for item in spool.pending(root)] == names  # nothing removed out of order
    assert any(p.name.startswith(names[1]) for p in (tmp_path / "archive" / "wal").rglob("*"))

    failing.clear()
    calls.clear()
    assert spool.Shipper(settings).run() == 3
    assert spool.pending(root) == [] and sorted(calls[:2]) == names[:2] and calls[2] == names[2]


def test_a_spooled_copy_that_does_not_read_back_as_written_is_not_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The durable copy is re-read before it is renamed into the spool: a file system that
    returns other bytes (here: a write damaged on its way to the file) fails the call, so
    PostgreSQL keeps the segment and retries, and no spool entry is left."""
    from sentinel_backup.errors import SentinelError

    root = tmp_path / "spool"
    sources = tmp_path / "pg_wal"
    sources.mkdir()
    path = segment(sources)
    real_fsync = spool.os.fsync

    def damage_then_fsync(fd: int) -> None:
        name = Path(f"/proc/self/fd/{fd}").resolve().name
        if name.endswith(".spooling"):
            spool.os.pwrite(fd, b"\xff", 4096)  # one byte differs from what was written
        real_fsync(fd)

    monkeypatch.setattr(spool.os, "fsync", damage_then_fsync)
    with pytest.raises(SentinelError, match="does not read back as written"):
        spool.spool_push(root, path)
    monkeypatch.undo()
    assert spool.pending(root) == [] and not [p for p in root.rglob("*") if p.is_file()]
