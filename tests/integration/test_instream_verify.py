"""In-stream verification: the stored stream is decoded while it is written, and each
durable copy is then re-read for its SHA-256. Every fault is refused before the manifest
(the commit point) is written, against the real server and the real local folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.config import settings_from
from sentinel_backup.demo.cluster import TempCluster
from sentinel_backup.logical.run import BackupRun, RunResult
from sentinel_backup.pipeline import commit as commit_module
from sentinel_backup.pipeline import read as verify_module
from sentinel_backup.pipeline import write as write_module
from sentinel_backup.storage.base import ObjectInfo
from sentinel_backup.storage.local import LocalStorage, LocalWriter
from sentinel_backup.streams.base import Sink
from sentinel_backup.streams.crypto import AesCipher
from tests.helpers import cli


class FlipOneByte:
    """A stage that corrupts one byte of the second chunk passing through it."""

    def __init__(self, downstream: Sink) -> None:
        self.downstream = downstream
        self.chunks = 0

    def write(self, data: bytes) -> None:
        self.chunks += 1
        if self.chunks == 2 and len(data) > 100:
            data = data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
        self.downstream.write(data)

    def close(self) -> None:
        self.downstream.close()


class DamagingStorage(LocalStorage):
    """The real local folder, with the committed file damaged right after its commit (a bad
    disk, or a store that kept other bytes than it was sent)."""

    def __init__(self, folder: Path, damage: Callable[[Path], None]) -> None:
        super().__init__(folder)
        self.damage = damage

    def open_writer(self, key: str, *, artifact: bool = True) -> LocalWriter:
        writer = super().open_writer(key, artifact=artifact)
        if artifact:
            real_commit = writer.commit

            def commit() -> ObjectInfo:
                info = real_commit()
                self.damage(writer.final)
                return info

            writer.commit = commit  # type: ignore[method-assign]
        return writer


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 20)


@pytest.fixture
def db(pg: TempCluster, new_db: str) -> str:
    # Enough rows that the compressed stream spans several chunks (the fault hits chunk 2).
    pg.psql("CREATE TABLE t AS SELECT n, md5(n::text) AS h FROM generate_series(1, 300000) AS n", new_db)
    return new_db


def run(env: dict[str, str], storage_factory: Callable[[Path], LocalStorage] = LocalStorage) -> tuple[RunResult, Path]:
    settings = settings_from(env)
    storage = storage_factory(settings.backup_dir)
    storage.prepare()
    return BackupRun(settings, [storage]).run(), settings.backup_dir


def leftovers(folder: Path) -> list[str]:
    """Everything in BACKUP_DIR but the run lock (artifacts, manifests, partial files)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".sentinel-backup.lock")


@pytest.mark.parametrize("damage", [flip_middle_byte, truncate], ids=["flipped-byte", "truncated"])
def test_copy_damaged_after_the_stream_check_is_refused(db: str, base_env: dict[str, str],
                                                         damage: Callable[[Path], None]) -> None:
    result, folder = run({**base_env, "POSTGRES_DB": db}, lambda f: DamagingStorage(f, damage))
    [outcome] = result.outcomes
    assert not outcome.ok
    assert "failed verification" in (outcome.error or "")
    assert leftovers(folder) == []  # the damaged artifact was removed, no manifest written


def test_compressor_emitting_wrong_bytes_is_refused(db: str, base_env: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = write_module.compressor

    def bad_compressor(algorithm: Any, level: int, downstream: Sink, **kw: Any) -> Sink:
        return real(algorithm, level, FlipOneByte(downstream), **kw)

    monkeypatch.setattr(write_module, "compressor", bad_compressor)
    result, folder = run({**base_env, "POSTGRES_DB": db})
    [outcome] = result.outcomes
    assert not outcome.ok
    assert "in-stream verification failed" in (outcome.error or "")
    assert leftovers(folder) == []
    # Without any verification the same fault would have been committed: the check is what refuses it.
    result, folder = run({**base_env, "POSTGRES_DB": db, "VERIFY_AFTER_BACKUP": "none",
                          "BACKUP_DIR": str(folder.parent / "unverified")})
    assert result.outcomes[0].ok
    assert any(name.endswith(".manifest.json") for name in leftovers(folder))


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_cipher_emitting_wrong_bytes_is_refused(db: str, base_env: dict[str, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    key = tmp_path / "backup.key"
    key.write_text("correct horse battery staple\n")
    key.chmod(0o600)
    real = AesCipher.encryptor

    def bad_encryptor(self: AesCipher, downstream: Sink, **kw: Any) -> Sink:
        return real(self, FlipOneByte(downstream), **kw)

    monkeypatch.setattr(AesCipher, "encryptor", bad_encryptor)
    env = {**base_env, "POSTGRES_DB": db, "ENCRYPT_ENABLED": "true", "ENCRYPTION_KEY_PATH": str(key),
           "COMPRESSION": compression}
    result, folder = run(env)
    [outcome] = result.outcomes
    assert not outcome.ok
    assert "in-stream verification failed" in (outcome.error or "")
    assert leftovers(folder) == []


def test_integrity_mode_hashes_the_copy_and_reread_decodes_it_again(db: str, base_env: dict[str, str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_verify, real_check = verify_module.verify_copy, verify_module.check_stored

    def counting_verify(*a: Any, **kw: Any) -> Any:
        calls.append("reread")
        return real_verify(*a, **kw)

    def counting_check(*a: Any, **kw: Any) -> Any:
        calls.append("hash")
        return real_check(*a, **kw)

    monkeypatch.setattr(commit_module, "verify_copy", counting_verify)
    monkeypatch.setattr(commit_module, "check_stored", counting_check)
    result, _ = run({**base_env, "POSTGRES_DB": db})
    assert result.outcomes[0].ok and calls == ["hash"]
    calls.clear()
    result, _ = run({**base_env, "POSTGRES_DB": db, "VERIFY_AFTER_BACKUP": "reread"})
    assert result.outcomes[0].ok and calls == ["reread"]
    # What integrity mode committed is a complete, verifiable backup.
    assert cli({**base_env, "POSTGRES_DB": db}, "verify", "latest").code == 0


def test_age_without_identity_is_checked_before_encryption(db: str, base_env: dict[str, str], tmp_path: Path) -> None:
    """age recipients only (no identity on the backup host): the compressed stream is decoded
    in-stream before encryption, and the backup still commits and restores with the identity."""
    identity_file = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity_file)], capture_output=True, check=True)
    os.chmod(identity_file, 0o600)
    public = subprocess.run(["age-keygen", "-y", str(identity_file)], capture_output=True, text=True, check=True)
    env = {**base_env, "POSTGRES_DB": db, "ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age",
           "AGE_RECIPIENTS": public.stdout.strip()}
    result, _ = run(env)
    assert result.outcomes[0].ok, result.outcomes[0].error
    verified = cli({**env, "AGE_IDENTITY_FILE": str(identity_file)}, "verify", "latest")
    assert verified.code == 0, verified.output
