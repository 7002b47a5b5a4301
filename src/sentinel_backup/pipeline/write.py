"""The write pipeline: one producer's raw stream, once, to every destination.

```
producer.start() ─► Digest(raw) ─► keep ─► compressor ─► encryptor ─► Digest(stored) ─► Tee ─► FanOut ─► writers
                                    │                                                   └──► StreamCheck (a thread)
                                    └── raw chunks, kept until decoded ────────────────────► decoded == raw, byte
                                                                                             for byte; then the
                                                                                             producer's RawObserver
```

:func:`write_stream` knows no producer: pg_dump, pg_basebackup or anything else that
implements :class:`~sentinel_backup.pipeline.producer.Producer`. It returns a
:class:`Written` (raw and stored digests, the fan-out with one uncommitted writer per
healthy destination); :func:`sentinel_backup.pipeline.commit.commit` then makes the copies
durable, checks them and writes the manifest (the commit point). Every failure, and a
stop request, stops the producer and aborts every writer before the error propagates:
nothing of a failed stream is ever visible under its key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sentinel_backup import log
from sentinel_backup.choices import Compression, VerifyMode
from sentinel_backup.config import Settings
from sentinel_backup.errors import BackupFailed
from sentinel_backup.interrupt import Stopper
from sentinel_backup.model.manifest import CompressionInfo, EncryptionInfo
from sentinel_backup.pipeline.instream import StreamCheck
from sentinel_backup.pipeline.producer import Producer
from sentinel_backup.storage.base import ObjectWriter, Storage
from sentinel_backup.storage.fanout import FanOut
from sentinel_backup.streams.base import Sink, Tee, pump
from sentinel_backup.streams.compress import EXTENSIONS, compressor
from sentinel_backup.streams.crypto import Cipher
from sentinel_backup.streams.digest import Digest

logger = log.get("write")
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Encoding:
    """How the raw stream is stored: our compression (NONE when the producer compresses
    itself, e.g. pg_dump -Fc), its level and threads, and the cipher (None: not encrypted)."""

    compression: Compression
    level: int = 0
    threads: int = 1
    cipher: Cipher | None = None

    @classmethod
    def from_settings(cls, settings: Settings, cipher: Cipher | None, *,
                      compression: Compression | None = None) -> Encoding:
        """COMPRESSION, its effective level and COMPRESSION_THREADS, with ``cipher``; ``compression``
        overrides the algorithm (NONE for a producer that compresses itself)."""
        return cls(settings.compression if compression is None else compression,
                   settings.effective_compression_level(), settings.compression_threads, cipher)

    @property
    def suffix(self) -> str:
        """What the stored name ends with after the producer's own extension: ``.gz.age``, ``.zst``, ``.enc``."""
        return EXTENSIONS[self.compression] + (self.cipher.extension if self.cipher is not None else "")

    def compression_info(self) -> CompressionInfo:
        level = 0 if self.compression is Compression.NONE else self.level
        return CompressionInfo(algorithm=self.compression.value, level=level)

    def encryption_info(self) -> EncryptionInfo | None:
        if self.cipher is None:
            return None
        return EncryptionInfo(method=self.cipher.method, key_id=self.cipher.key_id)

    def describe(self) -> str:
        return f"{self.compression.value}, " + (self.cipher.method if self.cipher else "no encryption")


@dataclass
class Written:
    """A stream that went through the pipeline and passed the in-stream checks; its copies
    are not yet committed (``fanout.healthy``: the writers still good)."""

    key: str
    raw: Digest  # SHA-256 and size of what the producer wrote
    stored: Digest  # SHA-256 and size of the stored bytes (what each copy must hold)
    fanout: FanOut

    def abort(self) -> None:
        """Discard every copy (a failure between writing and committing)."""
        self.fanout.abort()


def open_writers(destinations: list[Storage], key: str) -> dict[str, ObjectWriter]:
    """A writer on each destination, or none at all (the ones opened are aborted on failure)."""
    names = [dest.name for dest in destinations]
    if not names:
        raise BackupFailed("no destination is enabled", "set LOCAL_ENABLED=true, S3_ENABLED or MINIO_ENABLED")
    if len(set(names)) != len(names):  # a writer per name: a second one would never be aborted
        raise BackupFailed(f"two destinations share a name: {', '.join(names)}", "this is a bug; please report it")
    writers: dict[str, ObjectWriter] = {}
    try:
        for dest in destinations:
            writers[dest.name] = dest.open_writer(key, artifact=True)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return writers


def write_stream(producer: Producer, key: str, destinations: list[Storage], encoding: Encoding, *,
                 verify: VerifyMode, stopper: Stopper, progress: Progress | None = None,
                 precompressed: bool = False) -> Written:
    """Run ``producer`` and store its stream under ``key`` on every destination at once.

    With ``verify`` other than NONE the stored stream is decoded while it is written and
    must give the producer's bytes (and satisfy its observer), else BackupFailed. Raises
    the producer's SourceError when it failed, Interrupted on a stop request (also when
    the producer failed because of it), StorageError when every destination failed; in
    every such case the producer was stopped and every writer aborted.

    ``precompressed``: the producer's stream is already compressed as ``encoding`` says (its
    own compressor, e.g. ``pg_basebackup --compress=client-zstd``): it is encrypted and stored
    as it comes, and the in-stream decode, done whatever ``verify`` says, gives the raw SHA-256
    and size and feeds the producer's observer (``progress`` then counts decoded bytes)."""
    fanout = FanOut(open_writers(destinations, key), check=stopper.check)
    check = stream_check(encoding, producer, precompressed) \
        if verify is not VerifyMode.NONE or precompressed else None
    taps_stored = check is not None and check.decrypts
    stored = Digest(Tee(fanout, check.sink) if check is not None and taps_stored else fanout)
    inner: Sink = encoding.cipher.encryptor(stored) if encoding.cipher else stored
    if check is not None and not taps_stored:
        inner = Tee(inner, check.sink)  # age without an identity here: decode the compressed bytes
    head: Sink
    if precompressed:
        assert check is not None
        raw, head = check.decoded, inner
    else:
        encode = compressor(encoding.compression, encoding.level, inner, threads=encoding.threads)
        # Compression stays in this thread, on the chunk just hashed (a thread of its own for it
        # measured slower: 2026-12-03, docs/performance.md); zstd's workers run beside it.
        raw = head = Digest(check.raw_tap(encode) if check is not None else encode)
    reported = 0

    def tick(n: int) -> None:
        nonlocal reported
        stopper.check()
        if progress is not None:
            if precompressed:  # the raw bytes decoded so far (the decoder's thread counts them)
                now = raw.size
                n, reported = now - reported, now
            progress(n)

    try:
        stopper.check()
        # The stop watcher stops the producer at once, whatever its stream is blocked on.
        with stopper.on_stop(producer.stop):
            stream = producer.start()
            pump(stream, head, progress=tick)
        if precompressed and progress is not None and raw.size > reported:
            progress(raw.size - reported)  # the decoder's last bytes, decoded after the last read
    except BaseException:
        producer.stop()  # a pg_dump gets SIGINT first and cancels its query on the server
        if check is not None:
            check.abort()
        fanout.abort()
        raise
    try:
        producer.finish()
    except BaseException:
        producer.stop()
        fanout.abort()
        if stopper.settle():  # failed because of the signal that stops us (a process-group signal)
            raise stopper.error() from None
        raise
    if check is not None:
        failures = [c for c in check.checks(raw, stored if taps_stored else None) if not c.ok]
        if failures:
            fanout.abort()
            raise BackupFailed("in-stream verification failed: " + "; ".join(
                f"{c.name}: {c.detail}" for c in failures), "nothing was committed; report this if it repeats")
        logger.debug("In-stream verification passed", extra=log.fields(
            raw_bytes=raw.size, decrypted=taps_stored, raw_kept_peak_bytes=check.window.peak))
    return Written(key, raw, stored, fanout)


def stream_check(encoding: Encoding, producer: Producer, precompressed: bool = False) -> StreamCheck:
    """The in-stream decoder: it decrypts when the cipher can (AES; age with an identity),
    otherwise it decodes the compressed bytes before encryption."""
    cipher = encoding.cipher if encoding.cipher is not None and encoding.cipher.can_decrypt else None
    return StreamCheck(encoding.compression, cipher, observer=producer.observer(), precompressed=precompressed)
