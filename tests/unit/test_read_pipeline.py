"""The read pipeline shared by verify, restore and drills: real artifacts written by the write
pipeline into a real folder (gzip, zstd, AES), read back through ``pipeline.read`` and
checked by ``pipeline.verify``; a copy that changes or was damaged is named as such."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from sentinel_backup.choices import Compression, VerifyMode
from sentinel_backup.config import Settings, settings_from
from sentinel_backup.errors import RestoreFailed, SourceError, VerifyFailed
from sentinel_backup.interrupt import Stopper
from sentinel_backup.keys import read_key_file
from sentinel_backup.model.check import CRITICAL, OK, Check, failures
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.pipeline.commit import commit
from sentinel_backup.pipeline.read import check_stored, decode_into, decode_to_child, require_stored
from sentinel_backup.pipeline.verify import observer_for, verify_copy
from sentinel_backup.pipeline.write import Encoding, write_stream
from sentinel_backup.storage.local import LocalStorage
from sentinel_backup.streams.base import NullSink
from sentinel_backup.streams.crypto import AesCipher
from tests.unit.test_write_pipeline import MARKER, BytesProducer, manifest_for

DATA = b"".join(b"INSERT INTO t VALUES (%d);\n" % i for i in range(50_000)) + MARKER


class Collect:
    """A sink keeping every raw byte it is given, and whether it was closed."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "backup.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def settings(folder: Path, key_file: Path | None = None) -> Settings:
    values = {"POSTGRES_USER": "u", "POSTGRES_DB": "app", "BACKUP_DIR": str(folder)}
    if key_file is not None:
        values["ENCRYPTION_KEY_PATH"] = str(key_file)
    return settings_from(values)


def stored_backup(folder: Path, encoding: Encoding, key: str, data: bytes = DATA,
                  key_file: Path | None = None, observe: bool = True) -> tuple[LocalStorage, Manifest]:
    """A committed backup of ``data`` (manifest last), as the write pipeline stores it;
    ``observe=False``: without the producer's end-marker check (what an older version wrote)."""
    store = LocalStorage(folder)
    store.prepare()
    producer = BytesProducer(data, marker=MARKER if observe else None)
    written = write_stream(producer, key, [store], encoding, verify=VerifyMode.INTEGRITY,
                           stopper=Stopper())
    manifest = manifest_for(written, encoding, key)
    commit(written, manifest, [store], settings=settings(folder, key_file), stopper=Stopper())
    return store, manifest


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_decode_into_gives_the_raw_bytes_and_their_digests(tmp_path: Path, compression: Compression) -> None:
    key = "sentinel_backup_app_20261203T080000Z.sql" + {"gzip": ".gz", "zstd": ".zst", "none": ""}[compression.value]
    store, manifest = stored_backup(tmp_path, Encoding(compression, 3), key)
    sink, seen = Collect(), []
    decoder = decode_into(store, manifest, settings(tmp_path), sink, progress=seen.append)
    assert bytes(sink.data) == DATA and sink.closed
    assert decoder.raw.sha256 == hashlib.sha256(DATA).hexdigest() == manifest.raw_sha256
    assert decoder.stored.sha256 == manifest.sha256 and sum(seen) == manifest.size_bytes


def test_encrypted_copy_decodes_with_the_key_and_openssl_agrees(tmp_path: Path, key_file: Path) -> None:
    cipher = AesCipher(read_key_file(key_file))
    key = "sentinel_backup_app_20261203T080000Z.sql.gz.enc"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6, cipher=cipher), key,
                                    key_file=key_file)
    assert manifest.encryption is not None and (tmp_path / key).read_bytes().startswith(b"Salted__")
    sink = Collect()
    decode_into(store, manifest, settings(tmp_path, key_file), sink)
    assert bytes(sink.data) == DATA
    # the same bytes, decoded by the real tools
    plain = subprocess.run(["openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-pass", f"file:{key_file}",
                            "-in", str(tmp_path / key)], check=True, capture_output=True).stdout
    assert gzip.decompress(plain) == DATA


def test_a_copy_that_changes_while_read_is_named_and_the_sink_not_trusted(tmp_path: Path) -> None:
    key = "sentinel_backup_app_20261203T080000Z.sql.gz"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6), key)
    other = gzip.compress(b"-- another dump\n" + MARKER)
    (tmp_path / key).write_bytes(other)  # replaced after the manifest was written: a valid gzip stream
    with pytest.raises(VerifyFailed, match="changed while it was read") as caught:
        decode_into(store, manifest, settings(tmp_path), Collect())
    assert caught.value.hint is not None and "another" in caught.value.hint
    with pytest.raises(VerifyFailed, match="does not match its manifest"):
        require_stored(store, manifest)
    found = check_stored(store, manifest)
    assert not found.ok and found.status == CRITICAL and "!= manifest" in found.detail


def test_verify_copy_reports_every_check_and_the_kinds_completeness(tmp_path: Path) -> None:
    key = "sentinel_backup_app_20261203T080000Z.sql.gz"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6), key)
    report = verify_copy(store, manifest, settings(tmp_path))
    assert report.ok, failures(report.checks)
    assert [c.name for c in report.checks] == ["size", "sha256", "sha256-file", "raw", "complete"]
    assert all(isinstance(c, Check) and c.status == OK for c in report.checks)
    # a dump cut short: gzip is valid, the end marker is missing, the stored hash matches a
    # manifest written for it (what a broken producer would have committed without the check)
    truncated = DATA[: len(DATA) // 2]
    store2, cut = stored_backup(tmp_path / "cut", Encoding(Compression.GZIP, 6), key, data=truncated,
                               observe=False)
    report = verify_copy(store2, cut, settings(tmp_path / "cut"))
    assert not report.ok and [c.name for c in report.failures] == ["complete"]
    assert "missing" in failures(report.checks)


def test_verify_copy_of_damaged_bytes_names_the_decode_failure(tmp_path: Path) -> None:
    key = "sentinel_backup_app_20261203T080000Z.sql.gz"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6), key)
    data = bytearray((tmp_path / key).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / key).write_bytes(bytes(data))
    report = verify_copy(store, manifest, settings(tmp_path))
    names = {c.name: c.ok for c in report.checks}
    assert names["size"] and not names["sha256"] and not report.ok
    assert "decode" in names or "raw" in names  # the flipped byte breaks gzip or the raw hash


def test_observer_for_knows_plain_dumps_only() -> None:
    base = {"id": "x", "database": "app", "artifact": "a", "created_at": "2026-12-03T08:00:00Z",
            "finished_at": "2026-12-03T08:00:01Z", "duration_seconds": 1, "tool_version": "t", "hostname": "h",
            "compression": {"algorithm": "gzip", "level": 6}, "raw_size_bytes": 1, "raw_sha256": "0" * 64,
            "size_bytes": 1, "sha256": "0" * 64}
    plain = Manifest.model_validate(base)
    observer = observer_for(plain)
    assert observer is not None and observer.name == "complete"
    observer.write(MARKER)
    assert observer.complete()
    assert observer_for(Manifest.model_validate({**base, "format": "custom"})) is None


def test_decode_into_reads_a_named_copy_key(tmp_path: Path) -> None:
    key = "sentinel_backup_app_20261203T080000Z.sql.gz"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6), key)
    store.put_bytes("copy.sql.gz", (tmp_path / key).read_bytes())
    decode_into(store, manifest, settings(tmp_path), NullSink(), key="copy.sql.gz")
    (tmp_path / "copy.sql.gz").write_bytes(gzip.compress(b"other content"))
    with pytest.raises(VerifyFailed, match=r"copy\.sql\.gz changed while it was read"):
        decode_into(store, manifest, settings(tmp_path), NullSink(), key="copy.sql.gz")


def child(script: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            **kwargs)  # type: ignore[call-overload]


def test_decode_to_child_feeds_a_tool_and_names_its_failure(tmp_path: Path) -> None:
    key = "sentinel_backup_app_20261203T080000Z.sql.gz"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6), key)
    out = tmp_path / "out.sql"
    with out.open("wb") as file:
        decode_to_child(child("cat", stdout=file), "cat", store, manifest, settings(tmp_path))
    assert out.read_bytes() == DATA
    with pytest.raises(SourceError, match=r"psql failed \(exit code 3\): boom"):
        decode_to_child(child("cat >/dev/null; echo boom >&2; exit 3"), "psql", store, manifest, settings(tmp_path))
    # a tool that reads only the beginning: fine when it says so (pg_restore -l), an error otherwise
    decode_to_child(child("head -c 10 >/dev/null"), "pg_restore", store, manifest, settings(tmp_path),
                    reads_all=False)
    with pytest.raises(RestoreFailed, match="stopped reading"):
        decode_to_child(child("head -c 10 >/dev/null"), "pg_restore", store, manifest, settings(tmp_path))


def test_decode_to_child_never_closes_the_input_of_a_copy_that_changed(tmp_path: Path) -> None:
    """The tool would commit on end of input: a copy that changed kills it instead."""
    key = "sentinel_backup_app_20261203T080000Z.sql.gz"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6), key)
    (tmp_path / key).write_bytes(gzip.compress(b"-- another dump\n" + MARKER))
    done = tmp_path / "committed"
    proc = child(f"cat >/dev/null && touch {done}")
    with pytest.raises(VerifyFailed, match="changed while it was read"):
        decode_to_child(proc, "psql", store, manifest, settings(tmp_path))
    assert proc.returncode is not None and proc.returncode < 0 and not done.exists()


def test_decode_into_can_check_what_the_copy_decodes_to(tmp_path: Path) -> None:
    key = "sentinel_backup_app_20261203T080000Z.sql.gz"
    store, manifest = stored_backup(tmp_path, Encoding(Compression.GZIP, 6), key)
    decode_into(store, manifest, settings(tmp_path), Collect(), check_raw=True)
    wrong = manifest.model_copy(update={"raw_sha256": "0" * 64})
    decode_into(store, wrong, settings(tmp_path), Collect())
    with pytest.raises(VerifyFailed, match="decodes to other bytes"):
        decode_into(store, wrong, settings(tmp_path), Collect(), check_raw=True)


def test_child_input_writes_every_byte_when_the_pipe_takes_only_part() -> None:
    """An unbuffered pipe write may take part of a chunk (a signal mid-write): the rest follows."""
    import io

    from sentinel_backup.pipeline.read import ChildInput

    class Partial(io.RawIOBase):
        def __init__(self) -> None:
            self.got = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            piece = bytes(memoryview(data))[:3]  # type: ignore[arg-type]
            self.got += piece
            return len(piece)

    pipe = Partial()
    ChildInput(pipe).write(b"0123456789" * 10)  # type: ignore[arg-type]
    assert bytes(pipe.got) == b"0123456789" * 10
