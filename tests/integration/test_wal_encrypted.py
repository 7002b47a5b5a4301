"""Encrypted WAL archive: the stored objects decrypt with the real openssl / age and decompress
with the real gunzip / zstd to the archived bytes; wal-fetch with a wrong key stops recovery."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

from sentinel_backup.model.layout import handle_for
from tests.plugins.archive import ArchivingCluster, WalTool


def _stored(archive: ArchivingCluster) -> list[Path]:
    return sorted(p for p in (archive.backup_dir / "wal").rglob("*") if p.is_file())


def test_aes_gzip_archive_reads_with_openssl_and_gunzip_and_a_wrong_key_is_fatal(
        wal_tool: WalTool, archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    keys = wal_tool.folder("aes-keys")
    key = wal_tool.secret_file(keys, "wal.key", "correct horse battery staple\n")
    archive = archiving_cluster({"COMPRESSION": "gzip", "ENCRYPT_ENABLED": "true",
                                 "ENCRYPTION_METHOD": "aes-256-cbc", "ENCRYPTION_KEY_PATH": str(key)})
    name = archive.switch()
    archive.wait_archived(name)
    (stored,) = [p for p in _stored(archive) if p.name.startswith(name)]
    assert stored.name.endswith(".gz.enc")
    handle = handle_for(str(stored.relative_to(archive.backup_dir)))
    assert handle is not None
    opened = subprocess.run(f"openssl enc -d -aes-256-cbc -pbkdf2 -pass file:{key} -in {stored} | gunzip -c",
                            shell=True, capture_output=True, check=True).stdout
    assert hashlib.sha256(opened).hexdigest() == handle.sha256 and len(opened) == archive.segment_size()

    work = wal_tool.folder("aes-fetch")
    good = wal_tool.run(archive.env_file, "wal-fetch", name, str(work / "ok"), "--system-id", archive.system_id())
    assert good.returncode == 0, good.stderr
    assert (work / "ok").read_bytes() == opened

    wrong_key = wal_tool.secret_file(keys, "other.key", "another key entirely\n")
    wrong_env = wal_tool.env_file(work, {**archive.values, "ENCRYPTION_KEY_PATH": str(wrong_key)})
    wrong = wal_tool.run(wrong_env, "wal-fetch", name, str(work / "bad"), "--system-id", archive.system_id())
    assert wrong.returncode >= 126, wrong.stderr
    assert "wrong key" in wrong.stderr and "Traceback" not in wrong.stderr
    assert not (work / "bad").exists()


def test_age_zstd_archive_reads_with_age_and_zstd(wal_tool: WalTool,
                                                  archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    keys = wal_tool.folder("age-keys")
    identity = keys / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    wal_tool.secret_file(keys, "identity.txt", identity.read_bytes())
    public = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True,
                            check=True).stdout.strip()
    archive = archiving_cluster({"COMPRESSION": "zstd", "ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age",
                                 "AGE_RECIPIENTS": public, "AGE_IDENTITY_FILE": str(identity)})
    name = archive.switch()
    archive.wait_archived(name)
    (stored,) = [p for p in _stored(archive) if p.name.startswith(name)]
    assert stored.name.endswith(".zst.age")
    handle = handle_for(str(stored.relative_to(archive.backup_dir)))
    assert handle is not None
    opened = subprocess.run(f"age -d -i {identity} {stored} | zstd -d -c", shell=True, capture_output=True,
                            check=True).stdout
    assert hashlib.sha256(opened).hexdigest() == handle.sha256

    work = wal_tool.folder("age-fetch")
    good = wal_tool.run(archive.env_file, "wal-fetch", name, str(work / "ok"), "--system-id", archive.system_id())
    assert good.returncode == 0, good.stderr
    assert (work / "ok").read_bytes() == opened

    other = work / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], capture_output=True, check=True)
    wal_tool.secret_file(work, "other.txt", other.read_bytes())
    wrong_env = wal_tool.env_file(work, {**archive.values, "AGE_IDENTITY_FILE": str(other)})
    wrong = wal_tool.run(wrong_env, "wal-fetch", name, str(work / "bad"), "--system-id", archive.system_id())
    assert wrong.returncode >= 126, wrong.stderr
    assert not (work / "bad").exists()
