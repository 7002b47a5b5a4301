"""logical.directory: the private temporary folders of directory-format dumps and restores."""

from __future__ import annotations

import os
from pathlib import Path

from sentinel_backup.logical.directory import DUMP_PREFIX, private_folder


def test_private_folder_is_private_and_named_by_pid(tmp_path: Path) -> None:
    folder = private_folder(tmp_path, DUMP_PREFIX)
    assert folder.parent == tmp_path and folder.name.startswith(f"{DUMP_PREFIX}{os.getpid()}-")
    assert folder.stat().st_mode & 0o777 == 0o700


def test_folders_of_dead_processes_are_removed_others_kept(tmp_path: Path) -> None:
    dead = tmp_path / f"{DUMP_PREFIX}2147483646-abc"  # above pid_max: never a running process
    dead.mkdir()
    (dead / "toc.dat").write_bytes(b"x")
    alive = tmp_path / f"{DUMP_PREFIX}{os.getpid()}-xyz"
    alive.mkdir()
    unrelated = tmp_path / "sentinel_backup_app_20261203T030000Z.dir.tar"
    unrelated.write_bytes(b"")
    private_folder(tmp_path, DUMP_PREFIX)
    assert not dead.exists() and alive.exists() and unrelated.exists()
