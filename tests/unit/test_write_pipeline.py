"""The generic write pipeline with tiny producers (real child processes and in-memory
streams) and a real local folder: what it stores, and that a failed, incomplete or stopped
stream leaves nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from sentinel_backup.choices import Compression, VerifyMode
from sentinel_backup.config import Settings, settings_from
from sentinel_backup.errors import BackupFailed, Interrupted, SourceError, VerifyFailed
from sentinel_backup.interrupt import Stopper, stop_children
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.pipeline.commit import commit
from sentinel_backup.pipeline.producer import RawObserver
from sentinel_backup.pipeline.write import Encoding, Written, write_stream
from sentinel_backup.storage.base import ObjectInfo
from sentinel_backup.storage.local import LocalStorage, LocalWriter
from sentinel_backup.streams.crypto import AesCipher

KEY = "sentinel_backup_app_20261203T080000Z.sql.gz"


class EndsWith:
    """A RawObserver: complete when the raw stream ends with ``marker``."""

    name = "complete"

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.last = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.last = (self.last + data)[-len(self.marker):]

    def close(self) -> None:
        self.closed = True

    def complete(self) -> bool:
        return self.last == self.marker

    def detail(self) -> str:
        return "end marker " + ("present" if self.complete() else "missing")


class BytesProducer:
    """An in-memory stream; ``fail`` makes finish() report a failed producer."""

    tool = "fake"

    def __init__(self, data: bytes, *, fail: bool = False, marker: bytes | None = None) -> None:
        self.label = "fake producer"
        self.data = data
        self.fail = fail
        self.marker = marker
        self.stopped = 0
        self.finished = False

    def start(self) -> IO[bytes]:
        return io.BytesIO(self.data)

    def finish(self) -> None:
        self.finished = True
        if self.fail:
            raise SourceError("fake failed (exit code 1): disk on fire")

    def stop(self) -> None:
        self.stopped += 1

    def observer(self) -> RawObserver | None:
        return EndsWith(self.marker) if self.marker is not None else None


class ChildProducer:
    """A real child process writing ``size`` bytes of zeros (``head -c``), or running ``argv``."""

    tool = "head"

    def __init__(self, size: int = 0, argv: list[str] | None = None) -> None:
        self.argv = argv or ["head", "-c", str(size), "/dev/zero"]
        self.label = " ".join(self.argv)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = threading.Event()

    def start(self) -> IO[bytes]:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE)
        self.started.set()
        assert self.proc.stdout is not None
        return self.proc.stdout

    def finish(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        if code != 0:
            raise SourceError(f"{self.argv[0]} failed (exit code {code})")

    def stop(self) -> None:
        if self.proc is not None:
            stop_children([self.proc])
            self.proc.wait()

    def observer(self) -> RawObserver | None:
        return None


class RecordingStorage(LocalStorage):
    """The real local folder, recording the order in which objects become visible."""

    def __init__(self, folder: Path, events: list[str], name: str = "local") -> None:
        super().__init__(folder)
        self.name = name
        self.events = events
        self.prepare()

    def open_writer(self, key: str, *, artifact: bool = True) -> LocalWriter:
        writer = super().open_writer(key, artifact=artifact)
        real_commit = writer.commit

        def commit() -> ObjectInfo:
            info = real_commit()
            self.events.append(f"{self.name}:{key}")
            return info

        writer.commit = commit  # type: ignore[method-assign]
        return writer


def local(folder: Path, name: str = "local") -> LocalStorage:
    """A prepared local destination (its folder created)."""
    store = LocalStorage(folder)
    store.name = name
    store.prepare()
    return store


def everything(folder: Path) -> list[str]:
    """Every file below the folder, hidden partial files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def settings(folder: Path, verify: str = "integrity") -> Settings:
    return settings_from({"POSTGRES_USER": "u", "POSTGRES_DB": "app", "BACKUP_DIR": str(folder),
                          "VERIFY_AFTER_BACKUP": verify})


def manifest_for(written: Written, encoding: Encoding, key: str = KEY) -> Manifest:
    now = datetime.now(UTC)
    return Manifest(id="app_20261203T080000Z", database="app", artifact=key, created_at=now, finished_at=now,
                    duration_seconds=0.1, tool_version="test", hostname="test",
                    compression=encoding.compression_info(), encryption=encoding.encryption_info(),
                    raw_size_bytes=written.raw.size, raw_sha256=written.raw.sha256,
                    size_bytes=written.stored.size, sha256=written.stored.sha256)


GZIP = Encoding(Compression.GZIP, 6)
MARKER = b"-- PostgreSQL database dump complete\n\n"  # a plain dump's end: what reread mode looks for
DATA = b"".join(b"row %d of the dump\n" % i for i in range(200_000)) + MARKER


def test_a_good_stream_commits_the_artifact_then_the_manifest_last(tmp_path: Path) -> None:
    events: list[str] = []
    store = RecordingStorage(tmp_path, events)
    stopper = Stopper()
    seen: list[int] = []
    producer = BytesProducer(DATA, marker=MARKER)
    written = write_stream(producer, KEY, [store], GZIP, verify=VerifyMode.INTEGRITY, stopper=stopper,
                           progress=seen.append)
    assert producer.finished and producer.stopped == 0
    assert sum(seen) == len(DATA)
    assert written.raw.sha256 == hashlib.sha256(DATA).hexdigest() and written.raw.size == len(DATA)
    assert everything(tmp_path) == [f".{KEY}.partial"]  # nothing visible before the commit
    manifest = manifest_for(written, GZIP)
    done = commit(written, manifest, [store], settings=settings(tmp_path), stopper=stopper)
    assert done.stored == ["local"] and done.failed == {}
    assert events == [f"local:{KEY}", f"local:{KEY}.sha256", f"local:{KEY}.manifest.json"]
    stored = (tmp_path / KEY).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == manifest.sha256
    assert gzip.decompress(stored) == DATA
    subprocess.run(["sha256sum", "-c", f"{KEY}.sha256"], cwd=tmp_path, check=True, capture_output=True)


def test_a_failed_producer_commits_nothing_and_leaves_no_partial(tmp_path: Path) -> None:
    producer = BytesProducer(DATA, fail=True, marker=MARKER)
    with pytest.raises(SourceError, match="disk on fire"):
        write_stream(producer, KEY, [local(tmp_path), RecordingStorage(tmp_path / "b", [], "b")], GZIP,
                     verify=VerifyMode.INTEGRITY, stopper=Stopper())
    assert producer.stopped == 1
    assert everything(tmp_path) == []


def test_an_observer_that_finds_the_stream_incomplete_refuses_it(tmp_path: Path) -> None:
    producer = BytesProducer(DATA[:-3], marker=MARKER)  # truncated: the marker is cut
    with pytest.raises(BackupFailed, match="in-stream verification failed: complete: end marker missing"):
        write_stream(producer, KEY, [local(tmp_path)], GZIP, verify=VerifyMode.INTEGRITY, stopper=Stopper())
    assert everything(tmp_path) == []
    # Without verification the same stream is written: the observer is what refused it.
    written = write_stream(BytesProducer(DATA[:-3], marker=MARKER), KEY, [local(tmp_path)], GZIP,
                           verify=VerifyMode.NONE, stopper=Stopper())
    written.abort()
    assert everything(tmp_path) == []


def test_a_stop_request_stops_the_child_and_aborts_every_writer(tmp_path: Path) -> None:
    stopper = Stopper()
    producer = ChildProducer(1 << 34)  # far more than is ever read: only the stop ends it

    def progress(_n: int) -> None:
        stopper.request()

    with pytest.raises(Interrupted):
        write_stream(producer, KEY, [local(tmp_path / "a"), local(tmp_path / "b", "b")], GZIP,
                     verify=VerifyMode.INTEGRITY, stopper=stopper, progress=progress)
    assert producer.proc is not None and producer.proc.returncode is not None  # stopped, not left running
    assert everything(tmp_path) == []


def test_a_stop_request_ends_a_producer_that_writes_nothing(tmp_path: Path) -> None:
    """A child blocked without output (pg_dump waiting for a lock, say): the stop watcher
    stops the producer, so the read returns and nothing stays."""
    stopper = Stopper()
    producer = ChildProducer(argv=["sleep", "600"])

    def ask_once_started() -> None:
        producer.started.wait()
        stopper.request()

    asker = threading.Thread(target=ask_once_started)
    asker.start()
    with stopper.watching(), pytest.raises(Interrupted):
        write_stream(producer, KEY, [local(tmp_path)], GZIP, verify=VerifyMode.INTEGRITY, stopper=stopper)
    asker.join()
    assert producer.proc is not None and producer.proc.returncode is not None
    assert everything(tmp_path) == []


def test_destinations_sharing_a_name_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(BackupFailed, match="two destinations share a name"):
        write_stream(BytesProducer(DATA), KEY, [local(tmp_path / "a"), local(tmp_path / "b")], GZIP,
                     verify=VerifyMode.INTEGRITY, stopper=Stopper())
    assert everything(tmp_path) == []


def test_a_stop_requested_before_the_start_starts_nothing(tmp_path: Path) -> None:
    stopper = Stopper()
    stopper.request()
    producer = ChildProducer(10)
    with pytest.raises(Interrupted):
        write_stream(producer, KEY, [local(tmp_path)], GZIP, verify=VerifyMode.INTEGRITY, stopper=stopper)
    assert producer.proc is None
    assert everything(tmp_path) == []


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_an_encrypted_stream_is_what_openssl_decrypts(tmp_path: Path, compression: Compression) -> None:
    key_file = tmp_path / "backup.key"
    key_file.write_bytes(b"correct horse battery staple\n")
    encoding = Encoding(compression, 3, threads=2, cipher=AesCipher(b"correct horse battery staple"))
    folder = tmp_path / "backups"
    name = "sentinel_backup_app_20261203T080000Z.sql" + encoding.suffix
    assert name.endswith({"gzip": ".sql.gz.enc", "zstd": ".sql.zst.enc", "none": ".sql.enc"}[compression.value])
    stopper = Stopper()
    written = write_stream(ChildProducer(3_000_000), name, [local(folder)], encoding,
                           verify=VerifyMode.INTEGRITY, stopper=stopper)
    commit(written, manifest_for(written, encoding, name), [local(folder)], settings=settings(folder),
           stopper=stopper)
    plain = subprocess.run(["openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-pass", f"file:{key_file}",
                            "-in", str(folder / name)], capture_output=True, check=True).stdout
    if compression is Compression.GZIP:
        plain = gzip.decompress(plain)
    elif compression is Compression.ZSTD:
        plain = subprocess.run(["zstd", "-d", "-c"], input=plain, capture_output=True, check=True).stdout
    assert plain == bytes(3_000_000)
    assert encoding.compression_info().level == (0 if compression is Compression.NONE else 3)
    info = encoding.encryption_info()
    assert info is not None and info.method == "aes-256-cbc"


@pytest.mark.parametrize("cipher", [False, True], ids=["plain", "aes"])
def test_a_precompressed_stream_is_stored_as_it_comes_and_decoded_for_the_raw_digest(
        tmp_path: Path, cipher: bool) -> None:
    """A producer that compresses itself (pg_basebackup --compress=client-zstd): its bytes are
    stored (encrypted on top), the raw SHA-256 and size are the decoded stream's, the observer
    sees the decoded bytes, and progress counts decoded bytes; also with VERIFY_AFTER_BACKUP=none."""
    packed = subprocess.run(["zstd", "-3", "-c"], input=DATA, capture_output=True, check=True).stdout
    encoding = Encoding(Compression.ZSTD, 3, cipher=AesCipher(b"k" * 32) if cipher else None)
    producer = BytesProducer(packed, marker=MARKER)
    seen: list[int] = []
    written = write_stream(producer, KEY, [local(tmp_path / "out")], encoding, verify=VerifyMode.NONE,
                           stopper=Stopper(), progress=seen.append, precompressed=True)
    written.fanout.close()
    assert written.raw.sha256 == hashlib.sha256(DATA).hexdigest() and written.raw.size == len(DATA)
    assert sum(seen) == len(DATA)
    if not cipher:
        assert written.stored.sha256 == hashlib.sha256(packed).hexdigest()
    assert written.stored.size > 0 and producer.finished
    written.abort()


@pytest.mark.parametrize(("stream", "said"), [
    (lambda packed: packed[:-7], "zstd data is truncated"),
    (lambda packed: gzip.compress(DATA), "zstd data is corrupt"),
], ids=["truncated", "not-zstd"])
def test_a_precompressed_stream_that_does_not_decode_commits_nothing(tmp_path: Path, stream: object,
                                                                     said: str) -> None:
    packed = subprocess.run(["zstd", "-3", "-c"], input=DATA, capture_output=True, check=True).stdout
    data = stream(packed)  # type: ignore[operator]
    producer = BytesProducer(data, marker=MARKER)
    with pytest.raises(VerifyFailed) as failed:
        write_stream(producer, KEY, [local(tmp_path)], Encoding(Compression.ZSTD, 3), verify=VerifyMode.INTEGRITY,
                     stopper=Stopper(), precompressed=True)
    assert "does not decode" in failed.value.message and said in failed.value.message
    assert producer.stopped and everything(tmp_path) == []
