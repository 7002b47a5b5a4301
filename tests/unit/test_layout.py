"""The storage layout: handle -> key -> handle for every kind, and names it refuses."""

from __future__ import annotations

import pytest

from sentinel_backup.model.layout import (
    Handle,
    handle_for,
    is_wal_name,
    key_for,
    wal_folder,
    wal_prefix,
    wal_timeline,
)
from sentinel_backup.storage.base import check_key

SHA = "0123456789abcdef" * 4


@pytest.mark.parametrize("handle", [
    Handle("logical", "sentinel_backup_app_20261203T010203Z.sql.gz"),
    Handle("physical", "sentinel_base_20261203T010203Z.tar.zst.age", "7312345678901234567"),
    Handle("wal", "000000010000000000000003", "7312345678901234567", SHA, ".zst"),
    Handle("wal", "00000002.history", "42", SHA, ".gz.age"),
    Handle("wal", "000000010000000000000002.00000028.backup", "42", SHA, ""),
    Handle("wal", "000000020000000100000003.partial", "42", SHA, ".zst.enc"),
])
def test_round_trip(handle: Handle) -> None:
    key = key_for(handle)
    assert check_key(key) == key
    assert handle_for(key) == handle


def test_wal_keys_are_split_by_system_and_timeline() -> None:
    key = key_for(Handle("wal", "0000000A0000000000000003", "99", SHA, ".zst"))
    assert key == f"wal/99/0000000A/0000000A0000000000000003.{SHA}.zst"
    assert key.startswith(wal_folder("99", 10)) and key.startswith(wal_prefix("99", "0000000A0000000000000003"))
    assert wal_prefix("99", "00000002.history") == "wal/99/00000002/00000002.history."


@pytest.mark.parametrize("name", ["00000001000000000000003", "000000010000000000000003.gz", "x.history",
                                  "000000010000000000000003.backup", "0000000g0000000000000003"])
def test_not_wal_names(name: str) -> None:
    assert not is_wal_name(name)
    with pytest.raises(ValueError):
        wal_timeline(name)


def test_refused_handles() -> None:
    with pytest.raises(ValueError):
        key_for(Handle("physical", "sentinel_base_x.tar"))  # no system id
    with pytest.raises(ValueError):
        key_for(Handle("wal", "000000010000000000000003", "12"))  # no hash
    with pytest.raises(ValueError):
        key_for(Handle("wal", "000000010000000000000003", "../etc", SHA))
    assert handle_for("basebackups/12/not_ours.tar") is None
    assert handle_for("wal/12/00000001/000000010000000000000003.zst") is None  # no hash: not ours


def test_a_named_servers_logical_backups_live_in_its_folder() -> None:
    from sentinel_backup.model.layout import check_server, logical_folder, split_logical
    from sentinel_backup.model.manifest import backup_id

    name = "sentinel_backup_app_20261203T010203Z.sql.gz"
    key = key_for(Handle("logical", name, server="pg-eu.prod"))
    assert key == f"servers/pg-eu.prod/{name}" and check_key(key) == key
    assert handle_for(key) == Handle("logical", name, server="pg-eu.prod")
    assert key_for(Handle("logical", name)) == name  # the unnamed server: the root, as before
    assert split_logical(key) == ("pg-eu.prod", name) and split_logical(name) == ("", name)
    assert backup_id(key) == "pg-eu.prod/app_20261203T010203Z" and backup_id(name) == "app_20261203T010203Z"
    assert backup_id("servers/db1/sentinel_globals_20261203T010203Z.sql.gz") == "db1/sentinel_globals_20261203T010203Z"
    assert logical_folder("") == "" and logical_folder("db1") == "servers/db1/"
    assert handle_for("servers/-x/" + name) is None and handle_for("servers/a/b/" + name) is None
    for bad in ("all", "ALL", "-db", ".hidden", "a/b", "a b", "x" * 64, "..", "db\n"):
        with pytest.raises(ValueError, match="not a server name"):
            check_server(bad)
