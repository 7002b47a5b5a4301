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
