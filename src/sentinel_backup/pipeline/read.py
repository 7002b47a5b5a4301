"""Prove that stored bytes are what the manifest says, while writing and after.

- :class:`StreamCheck` decodes the stored bytes *while they are written* (decrypt,
  decompress, raw SHA-256, and the producer's raw observer, e.g. pg_dump's end-of-dump
  marker) in its own threads, so a backup knows that its stream decodes to exactly what
  the producer wrote without a second decoding pass. ``backup`` then re-reads each durable
  copy once and compares only its size and SHA-256 with the stored hash computed in-stream
  (:func:`check_stored`).
- :func:`verify_copy` is the full re-read: stored size and SHA-256 against the manifest;
  then, when the data can be decrypted, full decompression, raw size and raw SHA-256, and
  for plain dumps the end marker. Used by ``verify``, and by ``backup`` with
  ``VERIFY_AFTER_BACKUP=reread``.

Legacy files of the shell version have no manifest: ``verify_legacy`` checks what can be
checked without one (full decompression, end-of-dump marker, MIN_BACKUP_SIZE, and the
``.sha256`` file the shell version wrote beside it, when present).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from sentinel_backup.choices import Compression
from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, Interrupted, SentinelError, VerifyFailed
from sentinel_backup.keys import cipher_for_manifest
from sentinel_backup.model.manifest import SHA256_SUFFIX, Manifest
from sentinel_backup.pipeline.producer import RawObserver
from sentinel_backup.storage.base import ObjectInfo, Storage
from sentinel_backup.streams.base import Handoff, NullSink, Sink, pump
from sentinel_backup.streams.compress import decompressor
from sentinel_backup.streams.crypto import Cipher
from sentinel_backup.streams.digest import Digest

END_MARKERS = (b"-- PostgreSQL database dump complete", b"-- PostgreSQL database cluster dump complete")


class Tail:
    """Keeps the last bytes that pass through (to find pg_dump's completion marker)."""

    def __init__(self, downstream: Sink, keep: int = 256) -> None:
        self.downstream = downstream
        self.keep = keep
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data = (self.data + data[-self.keep:])[-self.keep:]
        self.downstream.write(data)

    def close(self) -> None:
        self.downstream.close()

    def complete(self) -> bool:
        return any(marker in self.data for marker in END_MARKERS)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class CopyReport:
    destination: str
    key: str
    checks: list[Check] = field(default_factory=list)
    stored_sha256: str = ""  # of the bytes read (legacy files: the only record of them there is)
    stored_size: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def reading_cipher(manifest: Manifest, settings: Settings) -> Cipher | None:
    """The cipher to read an encrypted backup with, or None for a plain one."""
    if manifest.encryption is None:
        return None
    return cipher_for_manifest(manifest.encryption.method, manifest.encryption.key_id, settings)


@dataclass
class Decoder:
    """stored bytes -> stored (Digest) -> decrypt -> decompress -> | thread | -> Tail -> raw (Digest) -> end.

    The raw hash and the end sink run in their own thread (a Handoff), so decoding and
    hashing use two cores."""

    stored: Digest
    raw: Digest
    tail: Tail
    handoff: Handoff

    def feed(self, reader: IO[bytes], progress: Callable[[int], None] | None = None) -> None:
        """Pump reader through the chain and close it; on any error stop the thread."""
        try:
            pump(reader, self.stored, progress=progress)
        except BaseException:
            self.handoff.abort()
            raise


def decode_chain(manifest: Manifest, cipher: Cipher | None, end: Sink) -> Decoder:
    return decoder_for(Compression(manifest.compression.algorithm), cipher, end)


def decoder_for(compression: Compression, cipher: Cipher | None, end: Sink) -> Decoder:
    raw = Digest(end)
    tail = Tail(raw)
    handoff = Handoff(tail)
    inner: Sink = decompressor(compression, handoff)
    if cipher is not None:
        inner = cipher.decryptor(inner)
    return Decoder(Digest(inner), raw, tail, handoff)


class StreamCheck:
    """The decoding half of verification, run on the bytes while they are being stored.

    ``sink`` receives a copy of every stored chunk (after encryption when ``cipher`` can
    decrypt; otherwise the compressed bytes before encryption, e.g. age without
    AGE_IDENTITY_FILE on the backup host) and decodes it in its own thread behind a queue
    of two chunks, so memory stays bounded and the producer only waits when decoding
    falls behind. :meth:`checks` then compares what it decoded with the producer's raw
    digest, and asks the producer's ``observer`` (which saw every decoded raw byte) whether
    the stream is a complete artifact of its kind. A decoding error surfaces as
    :class:`VerifyFailed` from the stream's next write or its close, which stops the backup
    before anything is committed.
    """

    def __init__(self, compression: Compression, cipher: Cipher | None, *,
                 observer: RawObserver | None = None) -> None:
        self.decrypts = cipher is not None
        self.observer = observer
        self.decoder = decoder_for(compression, cipher, observer if observer is not None else NullSink())
        self._queue = Handoff(_Decoding(self.decoder.stored), depth=2)

    @property
    def sink(self) -> Sink:
        return self._queue

    def abort(self) -> None:
        self._queue.abort()
        self.decoder.handoff.abort()

    def checks(self, raw: Digest, stored: Digest | None) -> list[Check]:
        """What the in-stream decode proved; call after the stream was closed."""
        decoded = self.decoder.raw
        result = [Check("raw", decoded.sha256 == raw.sha256 and decoded.size == raw.size,
                        f"in-stream decode gave {decoded.size} bytes, sha256 {decoded.sha256[:16]}..., "
                        f"producer wrote {raw.size} bytes, sha256 {raw.sha256[:16]}...")]
        if stored is not None and self.decrypts:
            seen = self.decoder.stored
            result.append(Check("stream", seen.sha256 == stored.sha256 and seen.size == stored.size,
                                "the decoder saw every stored byte" if seen.sha256 == stored.sha256
                                else "the decoder saw other bytes than were stored"))
        if self.observer is not None:
            result.append(Check(self.observer.name, self.observer.complete(), self.observer.detail()))
        return result


class _Decoding:
    """Turns any failure of the decode chain into one VerifyFailed: the backup must not commit."""

    def __init__(self, downstream: Sink) -> None:
        self.downstream = downstream

    def write(self, data: bytes) -> None:
        try:
            self.downstream.write(data)
        except Exception as exc:
            raise _undecodable(exc) from exc

    def close(self) -> None:
        try:
            self.downstream.close()
        except Exception as exc:
            raise _undecodable(exc) from exc


def _undecodable(exc: Exception) -> VerifyFailed:
    detail = exc.message if isinstance(exc, SentinelError) else f"{type(exc).__name__}: {exc}"
    return VerifyFailed(f"in-stream verification failed: the stored stream does not decode ({detail})",
                        "nothing was committed; run the backup again, and report it if it repeats")


def check_stored(storage: Storage, manifest: Manifest, *, key: str | None = None,
                 progress: Callable[[int], None] | None = None) -> Check:
    """Re-read a durable copy once and compare its size and SHA-256 with the manifest's
    (cheap: no decoding). Equal hashes mean the copy holds the bytes the in-stream check
    decoded."""
    key = key or manifest.artifact
    digest = Digest(NullSink())
    try:
        with storage.open_reader(key) as reader:
            pump(reader, digest, progress=progress)
    except Interrupted:
        raise
    except SentinelError as exc:
        return Check("read", False, exc.message)
    ok = digest.sha256 == manifest.sha256 and digest.size == manifest.size_bytes
    return Check("sha256", ok, f"{digest.size} bytes stored (manifest {manifest.size_bytes}); "
                 + _sha_detail(digest.sha256, manifest.sha256))


def verify_copy(storage: Storage, manifest: Manifest, settings: Settings, *, key: str | None = None,
                progress: Callable[[int], None] | None = None) -> CopyReport:
    """Every check we can make of one stored copy; never raises for a bad copy. ``progress``
    is called per chunk read; it may raise Interrupted to stop the re-read, which propagates."""
    key = key or manifest.artifact
    report, info = _open_report(storage, key)
    if info is None:
        return report
    report.checks.append(Check("size", info.size == manifest.size_bytes,
                               f"{info.size} bytes stored, manifest says {manifest.size_bytes}"))
    try:
        cipher = reading_cipher(manifest, settings)
    except ConfigError as exc:
        cipher, report.checks = None, [*report.checks, Check("key", False, str(exc))]
    can_decode = manifest.encryption is None or (cipher is not None and cipher.can_decrypt)
    decoder = decode_chain(manifest, cipher, NullSink()) if can_decode else None
    stored = decoder.stored if decoder else Digest(NullSink())
    try:
        _read_through(storage, key, decoder, stored, progress)
    except Interrupted:
        raise  # a stop request (from ``progress``) is not a finding about the copy
    except VerifyFailed as exc:
        report.checks.append(Check("sha256", stored.sha256 == manifest.sha256 and stored.size == manifest.size_bytes,
                                   _sha_detail(stored.sha256, manifest.sha256)))
        report.checks.append(Check("decode", False, exc.message))
        return report
    except SentinelError as exc:
        report.checks.append(Check("read", False, exc.message))
        return report
    report.checks.append(Check("sha256", stored.sha256 == manifest.sha256, _sha_detail(stored.sha256, manifest.sha256)))
    report.checks.extend(_sidecar(storage, manifest, key))
    if decoder is None:
        report.checks.append(Check("decode", True, "not decrypted: set AGE_IDENTITY_FILE to check the content too"))
        return report
    raw, tail = decoder.raw, decoder.tail
    report.checks.append(Check("raw", raw.sha256 == manifest.raw_sha256 and raw.size == manifest.raw_size_bytes,
                               f"{raw.size} bytes after decoding, manifest says {manifest.raw_size_bytes}"))
    if manifest.format == "plain":
        report.checks.append(Check("complete", tail.complete(), "pg_dump end-of-dump marker"
                                   + (" present" if tail.complete() else " missing: the dump is truncated")))
    return report


def _open_report(storage: Storage, key: str) -> tuple[CopyReport, ObjectInfo | None]:
    """A report for one copy, with its first finding when the copy is missing."""
    report = CopyReport(storage.name, key)
    info = storage.stat(key)
    if info is None:
        report.checks.append(Check("exists", False, f"{key} is missing"))
    return report, info


def _read_through(storage: Storage, key: str, decoder: Decoder | None, stored: Digest,
                  progress: Callable[[int], None] | None) -> None:
    """Read one stored copy through the decode chain (or only the stored digest when it cannot be decoded)."""
    with storage.open_reader(key) as reader:
        if decoder:
            decoder.feed(reader, progress)
        else:
            pump(reader, stored, progress=progress)


def _sha_detail(actual: str, expected: str) -> str:
    return f"sha256 {actual[:16]}... " + ("matches" if actual == expected else f"!= manifest {expected[:16]}...")


def _sidecar(storage: Storage, manifest: Manifest, key: str) -> list[Check]:
    """The ``.sha256`` file, when present, must agree with the manifest."""
    sidecar = key + ".sha256"
    if storage.stat(sidecar) is None:
        return []
    text = storage.read_bytes(sidecar).decode(errors="replace").split()
    ok = bool(text) and text[0] == manifest.sha256
    return [Check("sha256-file", ok, f"{sidecar} " + ("agrees" if ok else "disagrees with the manifest"))]


# --- legacy files of the shell version ---------------------------------------------------
def verify_legacy(storage: Storage, manifest: Manifest, settings: Settings, *, key: str | None = None,
                  progress: Callable[[int], None] | None = None) -> CopyReport:
    """Every check a shell-version file allows (``manifest`` is synthesized by the catalog):
    MIN_BACKUP_SIZE, decryption with ENCRYPTION_KEY_PATH for ``.enc``, gzip integrity by full
    decompression, pg_dump's end-of-dump marker, and ``<file>.sha256`` when the shell version
    left one. Never raises for a bad file."""
    key = key or manifest.artifact
    report, info = _open_report(storage, key)
    if info is None:
        return report
    minimum = settings.min_backup_size
    big_enough = not minimum or info.size >= minimum
    report.checks.append(Check("size", big_enough, f"{info.size} bytes stored" + (
        "" if not minimum else f", MIN_BACKUP_SIZE is {minimum}" if big_enough else
        f", less than MIN_BACKUP_SIZE {minimum} (set MIN_BACKUP_SIZE=0 if the database really is that small)")))
    cipher: Cipher | None = None
    if manifest.encryption is not None:
        try:
            cipher = cipher_for_manifest(manifest.encryption.method, "", settings)
        except ConfigError as exc:
            report.checks.append(Check("key", False, f"encrypted by the shell version and cannot be read: {exc}"
                                       " (set ENCRYPTION_KEY_PATH to the key file it was made with)"))
    decoder = decode_chain(manifest, cipher, NullSink()) if manifest.encryption is None or cipher else None
    stored = decoder.stored if decoder else Digest(NullSink())
    try:
        _read_through(storage, key, decoder, stored, progress)
    except Interrupted:
        raise
    except VerifyFailed as exc:
        report.checks.append(Check("decode", False, f"{exc.message} (the file is truncated or damaged)"))
        return report
    except SentinelError as exc:
        report.checks.append(Check("read", False, exc.message))
        return report
    report.stored_sha256, report.stored_size = stored.sha256, stored.size
    report.checks.extend(_legacy_sidecar(storage, key, stored.sha256))
    if decoder is not None:
        what = "decrypted and decompressed" if cipher else "decompressed"
        report.checks.append(Check("decode", True, f"{what} in full: {decoder.raw.size} bytes of SQL"))
        complete = decoder.tail.complete()
        report.checks.append(Check("complete", complete, "pg_dump end-of-dump marker"
                                   + (" present" if complete else " missing: the dump is truncated")))
    return report


def _legacy_sidecar(storage: Storage, key: str, sha256: str) -> list[Check]:
    """``<file>.sha256`` (``sha256sum`` output: hash, then the name) must match the bytes read."""
    sidecar = key + SHA256_SUFFIX
    if storage.stat(sidecar) is None:
        return [Check("sha256-file", True, f"no {sidecar}: nothing recorded to compare with")]
    text = storage.read_bytes(sidecar).decode(errors="replace").split()
    recorded = text[0].lower() if text else ""
    ok = recorded == sha256
    return [Check("sha256-file", ok, f"sha256 {sha256[:16]}... " + (
        f"matches {sidecar}" if ok else f"!= {sidecar} ({recorded[:16] or 'empty'}...)"))]


def prove_legacy(storage: Storage, manifest: Manifest, settings: Settings,
                 progress: Callable[[int], None] | None = None) -> Manifest:
    """Verify a legacy file in full before it is restored; the description with the SHA-256 and
    size just read, so the restore pass can tell if the file changed in between."""
    report = verify_legacy(storage, manifest, settings, progress=progress)
    if not report.ok:
        detail = "; ".join(f"{c.name}: {c.detail}" for c in report.failures)
        raise VerifyFailed(f"{storage.name}:{manifest.artifact} cannot be restored: {detail}",
                           "restore another backup; `sentinel-backup verify NAME` shows every check")
    return manifest.model_copy(update={"sha256": report.stored_sha256, "size_bytes": report.stored_size})
