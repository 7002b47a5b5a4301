"""A PG15 cluster archiving through the real tool (run by PostgreSQL as postgres): keys, real
decoders, idempotence, conflicts, and wal-fetch's exit codes for restore_command."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

from sentinel_backup.model.layout import handle_for
from sentinel_backup.wal.segment import parse_header
from tests.plugins.archive import ArchivingCluster, WalTool


def archived(backup_dir: Path) -> dict[str, Path]:
    """Stored WAL objects by key (relative to BACKUP_DIR)."""
    return {str(p.relative_to(backup_dir)): p for p in sorted((backup_dir / "wal").rglob("*")) if p.is_file()}


def test_segments_arrive_under_their_keys_and_decode_with_zstd(archiving_cluster: Callable[..., ArchivingCluster]
                                                               ) -> None:
    archive = archiving_cluster()
    names = [archive.switch() for _ in range(3)]
    archive.wait_archived(names[-1])
    size, sysid = archive.segment_size(), archive.system_id()
    assert size == 1 << 20  # initdb --wal-segsize=1
    stored = archived(archive.backup_dir)
    for name in names:
        (key,) = [k for k in stored if k.split("/")[-1].startswith(name + ".")]
        handle = handle_for(key)
        assert handle is not None and handle.kind == "wal"
        assert key.startswith(f"wal/{sysid}/00000001/") and handle.extension == ".zst"
        plain = subprocess.run(["zstd", "-d", "-c", str(stored[key])], capture_output=True, check=True).stdout
        assert len(plain) == size
        assert hashlib.sha256(plain).hexdigest() == handle.sha256
        header = parse_header(plain)
        assert str(header.system_id) == sysid and header.segment_size == size


def _fetch(tool: WalTool, archive: ArchivingCluster, name: str, dest: Path, *extra: str
           ) -> subprocess.CompletedProcess[str]:
    return tool.run(archive.env_file, "wal-fetch", name, str(dest), "--system-id", archive.system_id(), *extra)


def test_push_again_is_idempotent_and_different_content_is_refused(
        wal_tool: WalTool, archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    archive = archiving_cluster()
    name = archive.switch()
    archive.wait_archived(name)
    work = wal_tool.folder("idempotence")
    copy = work / name
    fetched = _fetch(wal_tool, archive, name, copy)
    assert fetched.returncode == 0, fetched.stderr
    before = {k: p.stat().st_mtime_ns for k, p in archived(archive.backup_dir).items()}

    again = wal_tool.run(archive.env_file, "wal-push", str(copy))
    assert again.returncode == 0, again.stderr
    assert "already on local" in again.stderr
    assert {k: p.stat().st_mtime_ns for k, p in archived(archive.backup_dir).items()} == before

    data = bytearray(copy.read_bytes())
    data[5000] ^= 0xFF
    copy.write_bytes(bytes(data))
    conflict = wal_tool.run(archive.env_file, "wal-push", str(copy))
    assert conflict.returncode not in (0, 2) and conflict.returncode < 126
    assert f"{name} is already archived on local with different content" in conflict.stderr
    assert "Traceback" not in conflict.stderr
    assert {k: p.stat().st_mtime_ns for k, p in archived(archive.backup_dir).items()} == before


def test_wal_fetch_exit_codes(wal_tool: WalTool, archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    archive = archiving_cluster()
    name = archive.switch()
    archive.wait_archived(name)
    work = wal_tool.folder("fetch")

    good = _fetch(wal_tool, archive, name, work / "RECOVERYXLOG")
    assert good.returncode == 0, good.stderr
    (key,) = [k for k in archived(archive.backup_dir) if name in k]
    assert hashlib.sha256((work / "RECOVERYXLOG").read_bytes()).hexdigest() == handle_for(key).sha256  # type: ignore[union-attr]

    missing = _fetch(wal_tool, archive, "0000000100000000000000FF", work / "absent")
    assert missing.returncode == 1, missing.stderr
    history = _fetch(wal_tool, archive, "00000002.history", work / "absent")
    assert history.returncode == 1, history.stderr
    assert not (work / "absent").exists()

    usage = wal_tool.run(archive.env_file, "wal-fetch", name)  # %p forgotten in restore_command
    assert usage.returncode >= 126, usage.stderr

    stored = archive.backup_dir / key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    corrupt = _fetch(wal_tool, archive, name, work / "corrupt")
    assert corrupt.returncode >= 126, corrupt.stderr
    assert "Traceback" not in corrupt.stderr
    assert not (work / "corrupt").exists()
    assert [p.name for p in work.iterdir()] == ["RECOVERYXLOG"]  # no temporary file left behind


def test_wal_fetch_prefetches_the_next_segments(wal_tool: WalTool,
                                                archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    spool = wal_tool.folder("prefetch") / "spool"
    archive = archiving_cluster({"WAL_FETCH_PREFETCH": "3", "WAL_SPOOL_DIR": str(spool)})
    names = [archive.switch() for _ in range(5)]
    archive.wait_archived(names[-1])
    keys = {k.split("/")[-1].split(".")[0]: k.split(".")[1] for k in archived(archive.backup_dir)}
    work = wal_tool.folder("prefetch-work")
    prefetched = spool / "prefetch" / archive.system_id()

    first = _fetch(wal_tool, archive, names[0], work / "a")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in prefetched.iterdir()) == names[1:4]
    for name in names[1:4]:
        assert hashlib.sha256((prefetched / name).read_bytes()).hexdigest() == keys[name]

    second = _fetch(wal_tool, archive, names[1], work / "b")
    assert second.returncode == 0, second.stderr
    assert "from the prefetch spool" in second.stderr
    assert hashlib.sha256((work / "b").read_bytes()).hexdigest() == keys[names[1]]
    assert sorted(p.name for p in prefetched.iterdir()) == names[2:5]  # the end of the archive stops it

    last = _fetch(wal_tool, archive, names[4], work / "c")
    assert last.returncode == 0, last.stderr
    assert list(prefetched.iterdir()) == []  # passed segments removed; nothing after the end


def test_history_files_take_the_system_id_from_pg_control(wal_tool: WalTool,
                                                          archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    archive = archiving_cluster()
    work = wal_tool.folder("history")
    history = work / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    pushed = wal_tool.run(archive.env_file, "wal-push", str(history), cwd=archive.cluster.data)
    assert pushed.returncode == 0, pushed.stderr
    (key,) = [k for k in archived(archive.backup_dir) if "history" in k]
    assert key.startswith(f"wal/{archive.system_id()}/00000002/00000002.history.")
    back = wal_tool.run(archive.env_file, "wal-fetch", "00000002.history", str(work / "RECOVERYHISTORY"),
                        cwd=archive.cluster.data)  # restore_command: the system id from pg_control too
    assert back.returncode == 0, back.stderr
    assert (work / "RECOVERYHISTORY").read_text() == history.read_text()
    elsewhere = wal_tool.run(archive.env_file, "wal-push", str(history), cwd=work)  # not a data directory
    assert elsewhere.returncode == 1 and "--system-id" in elsewhere.stderr
