"""The catalog: legacy entries (recognised by name as retention does, never `latest`), copies
merged by id across destinations, physical backups found through the layout, damaged manifests."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sentinel_backup.errors import NotFound, StorageError
from sentinel_backup.model.catalog import scan
from sentinel_backup.model.manifest import CompressionInfo, Manifest
from sentinel_backup.storage.base import ObjectInfo
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


# --- merge, layout, damage ---------------------------------------------------------------------
SYSID = "7312345678901234567"


def manifest_doc(artifact: str, created: datetime, **extra: object) -> Manifest:
    base = artifact.rsplit("/", 1)[-1]
    return Manifest.model_validate({
        "id": base.removeprefix("sentinel_").split(".", 1)[0].removeprefix("backup_"), "database": "app",
        "artifact": artifact, "created_at": created, "finished_at": created, "duration_seconds": 1,
        "tool_version": "t", "hostname": "h", "compression": {"algorithm": "gzip", "level": 6},
        "raw_size_bytes": 4, "raw_sha256": "0" * 64, "size_bytes": 4, "sha256": "0" * 64, "tables": {}, **extra})


def physical_backup(storage: LocalStorage, created: datetime) -> Manifest:
    artifact = f"basebackups/{SYSID}/sentinel_base_{created:%Y%m%dT%H%M%SZ}.tar.gz"
    manifest = manifest_doc(artifact, created, kind="physical", format="tar", database="(cluster)", tables=None,
                            physical={"system_identifier": SYSID, "timeline": 1, "start_lsn": "0/2000028",
                                      "stop_lsn": "0/2000138", "start_wal": "000000010000000000000002",
                                      "stop_wal": "000000010000000000000002", "wal_segment_size": 16777216})
    storage.put_bytes(artifact, b"tar!")
    storage.put_bytes(manifest.manifest_key, manifest.to_json())
    return manifest


def test_copies_on_two_destinations_merge_by_id_with_their_backends_locations(tmp_path: Path) -> None:
    one, two = LocalStorage(tmp_path / "one"), LocalStorage(tmp_path / "two")
    one.prepare()
    two.prepare()
    two.name = "second"
    both, only_two = "sentinel_backup_app_20261129T030000Z.sql.gz", "sentinel_backup_app_20261130T030000Z.sql.gz"
    real_backup(one, both, datetime(2026, 11, 29, 3, tzinfo=UTC))
    real_backup(two, both, datetime(2026, 11, 29, 3, tzinfo=UTC))
    real_backup(two, only_two, datetime(2026, 11, 30, 3, tzinfo=UTC))
    two.put_bytes(only_two + ".drill.json", b"{}")
    catalog = scan([one, two])
    assert [(e.id, sorted(e.locations)) for e in catalog.entries] == [
        ("app_20261130T030000Z", ["second"]), ("app_20261129T030000Z", ["local", "second"])]
    newest, older = catalog.entries
    assert newest.drills == {"second": only_two + ".drill.json"}
    assert older.to_json()["locations"] == {"local": {"path": both}, "second": {"path": both}}
    assert catalog.errors == {}


def test_physical_manifests_are_found_under_basebackups_and_wal_is_not_read(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    manifest = physical_backup(storage, datetime(2026, 12, 1, 3, tzinfo=UTC))
    real_backup(storage, "sentinel_backup_app_20261129T030000Z.sql.gz", datetime(2026, 11, 29, 3, tzinfo=UTC))
    # a stray manifest-like name in the WAL archive is no backup
    storage.put_bytes(f"wal/{SYSID}/00000001/x.manifest.json", b"{not json")
    storage.put_bytes("elsewhere/sentinel_base_x.tar.gz.manifest.json", b"{not json")
    catalog = scan([storage])
    assert [e.manifest.kind for e in catalog.entries] == ["physical", "database"]
    physical = catalog.entries[0]
    assert physical.locations == {"local": manifest.artifact}
    assert physical.to_json()["locations"] == {"local": {"path": manifest.artifact}}
    assert catalog.find("latest").manifest.kind == "database"  # `latest` is a database backup
    assert catalog.find(physical.id) is physical


def test_a_damaged_manifest_is_skipped_and_the_rest_listed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = LocalStorage(tmp_path)
    good = "sentinel_backup_app_20261129T030000Z.sql.gz"
    real_backup(storage, good, datetime(2026, 11, 29, 3, tzinfo=UTC))
    storage.put_bytes("sentinel_backup_app_20261130T030000Z.sql.gz", b"data")
    storage.put_bytes("sentinel_backup_app_20261130T030000Z.sql.gz.manifest.json", b'{"format_version": 2, "id": ')
    # a manifest that describes another artifact than the one it lies beside is not trusted either
    moved = manifest_doc(good, datetime(2026, 12, 1, tzinfo=UTC))
    storage.put_bytes("sentinel_backup_app_20261201T000000Z.sql.gz.manifest.json", moved.to_json())
    catalog = scan([storage])
    assert [e.id for e in catalog.entries] == ["app_20261129T030000Z"]
    assert "not valid JSON" in caplog.text and "it describes" in caplog.text


def test_an_unreadable_destination_is_an_error_of_its_own_unless_alone(tmp_path: Path) -> None:
    class Broken(LocalStorage):
        def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
            raise StorageError("broken: cannot list", "fix it")

    good = LocalStorage(tmp_path / "good")
    good.prepare()
    real_backup(good, "sentinel_backup_app_20261129T030000Z.sql.gz", datetime(2026, 11, 29, 3, tzinfo=UTC))
    broken = Broken(tmp_path / "broken")
    broken.name = "s3"
    catalog = scan([good, broken])
    assert len(catalog.entries) == 1 and catalog.errors == {"s3": "broken: cannot list"}
    with pytest.raises(StorageError):
        scan([broken])


def server_backup(storage: LocalStorage, server: str, stamp: str, database: str = "postgres") -> Manifest:
    name = f"sentinel_backup_{database}_{stamp}.sql.gz"
    artifact = f"servers/{server}/{name}" if server else name
    manifest = manifest_doc(artifact, datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
                            id=f"{server}/{database}_{stamp}" if server else f"{database}_{stamp}",
                            database=database, server=server)
    storage.put_bytes(artifact, b"data")
    storage.put_bytes(manifest.manifest_key, manifest.to_json())
    return manifest


def test_a_catalog_for_one_server_lists_its_own_and_finds_the_others_by_id(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    server_backup(storage, "db1", "20261201T030000Z")
    newest_db2 = server_backup(storage, "db2", "20261202T030000Z")
    unnamed = server_backup(storage, "", "20261130T030000Z")
    everything = scan([storage])
    assert [e.server for e in everything.entries] == ["db2", "db1", ""] and everything.others == []
    one = scan([storage], server="db1")
    assert [e.id for e in one.entries] == ["db1/postgres_20261201T030000Z"]
    assert one.find("latest").id == "db1/postgres_20261201T030000Z"  # never another server's newer backup
    assert one.find(newest_db2.id).server == "db2"  # but any backup by its id
    assert one.find(unnamed.id).server == ""
    assert scan([storage], server="").find("latest").id == unnamed.id
    assert scan([storage], server="db3").entries == []
    assert one.entries[0].to_json()["server"] == "db1"
