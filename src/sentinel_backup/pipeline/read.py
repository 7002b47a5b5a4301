"""The read pipeline, shared by verify, restore and drills: a stored copy -> stored SHA-256
-> decrypt -> decompress -> | thread | -> raw SHA-256 -> a sink.

- :func:`decode_into` reads one stored copy through the chain into a sink (a restore
  tool's stdin, a file, an observer) and checks at the end that the bytes read are the
  bytes the manifest records: otherwise "changed while it was read" (:func:`changed_while_read`,
  the one place that says so). The sink receives raw bytes before that final check, so a
  restore only *commits* (closes the tool's input) after it; ``check_stored`` is the cheap
  first pass that proves the copy before any decrypted byte is used.
- :func:`check_stored` re-reads a copy for its size and SHA-256 only (no decoding).
- :func:`decode_to_child` is :func:`decode_into` a client tool's stdin (psql, pg_restore):
  the tool's input is closed, and so its work committed, only after the bytes proved to be
  the manifest's; the tool is killed on any error.
- The decode chain (:func:`decoder_for`) is also what the in-stream check of a backup runs
  on (``pipeline.instream``); full verification of a copy is ``pipeline.verify``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from sentinel_backup.choices import Compression
from sentinel_backup.errors import ConfigError, Interrupted, RestoreFailed, SentinelError, VerifyFailed
from sentinel_backup.keys import cipher_for_manifest
from sentinel_backup.model.check import Check
from sentinel_backup.model.manifest import Manifest
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.base import Handoff, NullSink, Sink, pump
from sentinel_backup.streams.compress import decompressor
from sentinel_backup.streams.crypto import Cipher
from sentinel_backup.streams.digest import Digest

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

Progress = Callable[[int], None]


def reading_cipher(manifest: Manifest, settings: Settings) -> Cipher | None:
    """The cipher to read an encrypted backup with, or None for a plain one."""
    if manifest.encryption is None:
        return None
    return cipher_for_manifest(manifest.encryption.method, manifest.encryption.key_id, settings)


def decrypting_cipher(manifest: Manifest, settings: Settings) -> Cipher | None:
    """:func:`reading_cipher` for a use that must decrypt: exit 2 when no identity can."""
    cipher = reading_cipher(manifest, settings)
    if cipher is not None and not cipher.can_decrypt:
        raise ConfigError(f"{manifest.id} is encrypted with age", "set AGE_IDENTITY_FILE to the identity file")
    return cipher


@dataclass
class Decoder:
    """stored bytes -> stored (Digest) -> decrypt -> decompress -> | thread | -> raw (Digest) -> end.

    The raw hash and the end sink run in their own thread (a Handoff), so decoding and
    hashing use two cores."""

    stored: Digest
    raw: Digest
    handoff: Handoff

    def feed(self, reader: IO[bytes], progress: Progress | None = None) -> None:
        """Pump reader through the chain and close it; on any error stop the thread."""
        try:
            pump(reader, self.stored, progress=progress)
        except BaseException:
            self.handoff.abort()
            raise


def decoder_for(compression: Compression, cipher: Cipher | None, end: Sink) -> Decoder:
    raw = Digest(end)
    handoff = Handoff(raw)
    inner: Sink = decompressor(compression, handoff)
    if cipher is not None:
        inner = cipher.decryptor(inner)
    return Decoder(Digest(inner), raw, handoff)


def decode_chain(manifest: Manifest, cipher: Cipher | None, end: Sink) -> Decoder:
    """The decode chain of a stored backup (its compression, and ``cipher`` when encrypted)."""
    return decoder_for(Compression(manifest.compression.algorithm), cipher, end)


def changed_while_read(storage: Storage, manifest: Manifest, key: str | None = None) -> VerifyFailed:
    return VerifyFailed(f"{storage.name}:{key or manifest.artifact} changed while it was read (its SHA-256 no longer"
                        " matches the manifest)", "read it again; if it repeats, the copy is damaged: use another")


def decode_into(storage: Storage, manifest: Manifest, settings: Settings, sink: Sink, *, key: str | None = None,
                progress: Progress | None = None, cipher: Cipher | None = None, check_raw: bool = False) -> Decoder:
    """Read the stored copy ``key`` (default: the artifact) through the decode chain into
    ``sink``; VerifyFailed when the bytes read are not the bytes the manifest records (with
    ``check_raw``, nor what they decode to). ``cipher``: one already built (default: from the
    manifest and settings)."""
    key = key or manifest.artifact
    decoder = decode_chain(manifest, cipher if cipher is not None else reading_cipher(manifest, settings), sink)
    with storage.open_reader(key) as reader:
        decoder.feed(reader, progress)
    if decoder.stored.sha256 != manifest.sha256 or decoder.stored.size != manifest.size_bytes:
        raise changed_while_read(storage, manifest, key)
    if check_raw and decoder.raw.sha256 != manifest.raw_sha256:
        raise VerifyFailed(f"{storage.name}:{key} decodes to other bytes than the manifest records (its raw SHA-256)",
                           "the backup is damaged: restore another copy or another backup")
    return decoder


def decode_to_child(proc: subprocess.Popen[bytes], tool: str, storage: Storage, manifest: Manifest,
                    settings: Settings, *, progress: Progress | None = None, cipher: Cipher | None = None,
                    reads_all: bool = True) -> None:
    """:func:`decode_into` the stdin of ``proc``, a client tool; its stdin is closed (psql and
    pg_restore --single-transaction commit then) only after the bytes proved to be the
    manifest's. SourceError with the tool's own words when it failed; on any error the tool is
    killed (the server rolls its transaction back). ``reads_all=False``: a tool that stops
    reading once it has what it needs (``pg_restore -l`` reads only the table of contents)."""
    from sentinel_backup.pg.child import StderrCollector, source_error
    assert proc.stdin is not None
    errors: StderrCollector | None = None
    try:
        errors = StderrCollector(proc)
        decode_into(storage, manifest, settings, ChildInput(proc.stdin, reads_all), progress=progress, cipher=cipher)
        proc.stdin.close()
        code = proc.wait()
    except BaseException:  # a stop signal included: the tool never sees the end of its input
        proc.kill()
        proc.wait()
        raise
    finally:
        if errors is not None:
            errors.join()
    if code != 0:
        raise source_error(tool, errors.text(), code)


class ChildInput:
    """A Sink into a child's stdin (see :func:`decode_to_child`); ``close`` leaves it open."""

    def __init__(self, stdin: IO[bytes], reads_all: bool = True) -> None:
        self.stdin: IO[bytes] | None = stdin
        self.reads_all = reads_all

    def write(self, data: bytes) -> None:
        if self.stdin is None:
            return
        try:
            view = memoryview(data)
            while view:  # unbuffered: a write may take only part of it
                written = self.stdin.write(view)
                if not written:  # a blocking pipe takes at least one byte or raises
                    raise RestoreFailed("the restore program's input took no bytes")
                view = view[written:]
        except BrokenPipeError:
            if self.reads_all:
                raise RestoreFailed("the restore program stopped reading (see its error below)") from None
            self.stdin = None

    def close(self) -> None:
        pass  # the caller closes stdin only after the hash was checked


def check_stored(storage: Storage, manifest: Manifest, *, key: str | None = None,
                 progress: Progress | None = None) -> Check:
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
        return Check.of("read", False, exc.message)
    ok = digest.sha256 == manifest.sha256 and digest.size == manifest.size_bytes
    return Check.of("sha256", ok, f"{digest.size} bytes stored (manifest {manifest.size_bytes}); "
                    + sha_detail(digest.sha256, manifest.sha256))


def require_stored(storage: Storage, manifest: Manifest, *, progress: Progress | None = None) -> None:
    """The first pass of a restore or drill: the stored bytes must match the manifest before
    anything uses them; VerifyFailed otherwise (a read failure propagates as it is)."""
    digest = Digest(NullSink())
    with storage.open_reader(manifest.artifact) as reader:
        pump(reader, digest, progress=progress)
    if digest.sha256 != manifest.sha256 or digest.size != manifest.size_bytes:
        raise VerifyFailed(f"{storage.name}:{manifest.artifact} does not match its manifest: {digest.size} bytes stored"
                           f" (manifest {manifest.size_bytes}); {sha_detail(digest.sha256, manifest.sha256)}",
                           "the copy is damaged or was altered: use another copy (--from) or another backup")


def sha_detail(actual: str, expected: str) -> str:
    return f"sha256 {actual[:16]}... " + ("matches" if actual == expected else f"!= manifest {expected[:16]}...")
