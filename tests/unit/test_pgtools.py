"""Choosing client tools that suit the server (pgtools), with real small programs standing
in for pg_dump installations in temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel_backup.pg.tools import ToolsTooOld, check_container, choose_local, layout_dirs, major_of


@pytest.mark.parametrize(("text", "major"), [
    ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", 15),
    ("pg_dump (PostgreSQL) 18.6", 18),
    ("pg_dump (PostgreSQL) 17beta2", 17),
    ("18.6", 18), ("13.0", 13), ("180006", 18), ("130012", 13), ("9.6.24", 9),
])
def test_major_of(text: str, major: int) -> None:
    assert major_of(text) == major


def fake_install(root: Path, version: str) -> Path:
    folder = root / version / "bin"
    folder.mkdir(parents=True)
    script = folder / "pg_dump"
    script.write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {version}'\n")
    script.chmod(0o755)
    return folder


def test_prefers_the_first_folder_new_enough(tmp_path: Path) -> None:
    old, exact, newer = (fake_install(tmp_path, v) for v in ("15.4", "18.1", "19.0"))
    choice = choose_local("180001", None, layouts=[old, exact, newer])
    assert choice.bin_dir == exact and choice.major == 18


def test_pg_bin_dir_is_used_or_refused_never_replaced(tmp_path: Path) -> None:
    old, new = fake_install(tmp_path, "15.4"), fake_install(tmp_path, "18.1")
    with pytest.raises(ToolsTooOld) as caught:
        choose_local("180001", old, layouts=[new])
    assert "PostgreSQL 18.1," in caught.value.message  # server_version_num shown as a version
    assert "15.4" in caught.value.message and "PG_BIN_DIR" in caught.value.message
    assert "PG_BIN_DIR" in (caught.value.hint or "") and "postgresql-client-18" in (caught.value.hint or "")
    assert caught.value.exit_code == 2
    assert choose_local("150004", new, layouts=[]).bin_dir == new  # newer tools dump older servers


def test_container_tools_checked(tmp_path: Path) -> None:
    assert check_container("16.2", "pg_dump (PostgreSQL) 16.2", "db").major == 16
    with pytest.raises(ToolsTooOld) as caught:
        check_container("18.6", "pg_dump (PostgreSQL) 15.18", "db")
    assert "container" in caught.value.message and "18.6" in caught.value.message


def test_layout_dirs_exact_then_newer(tmp_path: Path) -> None:
    for major in ("13", "16", "18"):
        (tmp_path / major / "bin").mkdir(parents=True)
    dirs = layout_dirs(15, roots=[(str(tmp_path), "{}/bin")])
    assert dirs[:2] == [Path("/usr/lib/postgresql/15/bin"), Path("/usr/pgsql-15/bin")]
    assert dirs[2:] == [tmp_path / "16" / "bin", tmp_path / "18" / "bin"]
