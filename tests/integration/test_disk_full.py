"""A full BACKUP_DIR (a real 2 MiB tmpfs) is reported as what it is: no space left, with the
free bytes, the partial file removed and nothing committed; never as a size mismatch."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import big_database, cli
from tests.plugins.s3 import WeedServer

PAGE = 4096


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def leave_free(folder: Path, wanted: int) -> None:
    """Fill the disk until exactly ``wanted`` bytes (a multiple of the page size) are free. The run
    lock file is made first: its few bytes take a page of their own."""
    (folder / ".sentinel-backup.lock").write_text("pid=0\n")
    filler = free_bytes(folder) - wanted
    assert filler >= 0 and wanted % PAGE == 0
    (folder / "filler").write_bytes(b"\0" * filler)
    assert free_bytes(folder) == wanted


def on_disk(folder: Path) -> list[str]:
    """What a run left: artifacts, sidecars and partial files (not the filler or the lock)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("sentinel_", ".sentinel_")))


def assert_no_space_reported(result_output: str, folder: Path) -> None:
    match = re.search(rf"no space left on device \(BACKUP_DIR {re.escape(str(folder))}, (\d+) bytes free\)",
                      result_output)
    assert match, result_output
    assert "failed verification" not in result_output and "stored size" not in result_output
    assert "Traceback" not in result_output


def test_dump_larger_than_the_disk(pg: TempCluster, base_env: dict[str, str], tmp_path: Path) -> None:
    database = big_database(pg, "disk_full_big", 100_000)  # ~8 MB of SQL, ~4 MB gzipped: more than 2 MiB
    with small_disk(tmp_path / "small") as folder:
        env = {**base_env, "BACKUP_DIR": str(folder), "POSTGRES_DB": database, "BACKUP_GLOBALS": "false"}
        result = cli(env, "backup")
        assert result.code == 1, result.output
        assert_no_space_reported(result.output, folder)
        assert on_disk(folder) == []  # the partial file was removed
        listed = cli(env, "list", "--json")
        assert listed.code == 0 and listed.json() == []


@pytest.mark.parametrize("short_by", ["last_bytes", "sidecars"])
def test_artifact_or_sidecars_do_not_fit(pg: TempCluster, base_env: dict[str, str], tmp_path: Path,
                                         short_by: str) -> None:
    """The dump (uncompressed, so its size is exact) fits but for its last bytes, or fits exactly
    and leaves no room for the .sha256 and the manifest."""
    database = big_database(pg, "disk_full_small", 12_000)  # ~1 MB of SQL
    env = {**base_env, "POSTGRES_DB": database, "BACKUP_GLOBALS": "false", "COMPRESSION": "none"}
    sizing = {**env, "BACKUP_DIR": str(tmp_path / "sizing")}
    assert cli(sizing, "backup").code == 0
    [item] = cli(sizing, "list", "--json").json()
    size = int(item["size_bytes"])
    pages = -(-size // PAGE)
    with small_disk(tmp_path / "small") as folder:
        leave_free(folder, (pages - 1 if short_by == "last_bytes" else pages) * PAGE)
        result = cli({**env, "BACKUP_DIR": str(folder)}, "backup")
        assert result.code == 1, result.output
        assert_no_space_reported(result.output, folder)
        assert on_disk(folder) == []  # no partial, no artifact, no .sha256, no manifest
        assert cli({**env, "BACKUP_DIR": str(folder)}, "list", "--json").json() == []


def test_full_disk_with_a_good_copy_elsewhere_is_partial(pg: TempCluster, base_env: dict[str, str], tmp_path: Path,
                                                         s3_server: WeedServer, s3_bucket: str) -> None:
    database = big_database(pg, "disk_full_big", 100_000)
    with small_disk(tmp_path / "small") as folder:
        env = {**base_env, "BACKUP_DIR": str(folder), "POSTGRES_DB": database, "BACKUP_GLOBALS": "false",
               **s3_server.s3_env(s3_bucket, "pg"), "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
               "AWS_EC2_METADATA_DISABLED": "true"}
        result = cli(env, "backup")
        assert result.code == 3, result.output  # partial: the s3 copy is committed and verified
        assert_no_space_reported(result.output, folder)
        assert on_disk(folder) == []
        [item] = cli(env, "list", "--json").json()
        assert item["destinations"] == ["s3"]
        assert cli(env, "verify", item["id"], "--destination", "s3").code == 0
