"""Re-read a stored copy and prove it is what the manifest says.

Checks, in one streaming pass: stored size and SHA-256 against the manifest; then, when
the data can be decrypted, full decompression, raw size and raw SHA-256, and for plain
dumps pg_dump's own end-of-dump marker. Used by ``verify`` and by ``backup`` before it
writes the manifest (the commit point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from .config import Compression, Settings
from .errors import ConfigError, Interrupted, SentinelError, VerifyFailed
from .keys import cipher_for_manifest
from .manifest import Manifest
from .storage.base import Storage
from .streams.base import Handoff, NullSink, Sink, pump
from .streams.compress import decompressor
from .streams.crypto import Cipher
from .streams.digest import Digest

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
    raw = Digest(end)
    tail = Tail(raw)
    handoff = Handoff(tail)
    inner: Sink = decompressor(Compression(manifest.compression.algorithm), handoff)
    if cipher is not None:
        inner = cipher.decryptor(inner)
    return Decoder(Digest(inner), raw, tail, handoff)


def verify_copy(storage: Storage, manifest: Manifest, settings: Settings, *, key: str | None = None,
                progress: Callable[[int], None] | None = None) -> CopyReport:
    """Every check we can make of one stored copy; never raises for a bad copy. ``progress``
    is called per chunk read; it may raise Interrupted to stop the re-read, which propagates."""
    key = key or manifest.artifact
    report = CopyReport(storage.name, key)
    info = storage.stat(key)
    if info is None:
        report.checks.append(Check("exists", False, f"{key} is missing"))
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
        with storage.open_reader(key) as reader:
            if decoder:
                decoder.feed(reader, progress)
            else:
                pump(reader, stored, progress=progress)
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
