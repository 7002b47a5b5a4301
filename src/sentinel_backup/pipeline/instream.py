"""The in-stream check: the stored bytes decoded *while they are written*, and compared byte
for byte with what the producer wrote, so a backup knows that its stream decodes to exactly
the producer's bytes without a second decoding pass (``pipeline.rawmatch`` keeps the raw
chunks until their decoded copy arrives)."""

from __future__ import annotations

from sentinel_backup.choices import Compression
from sentinel_backup.errors import SentinelError, VerifyFailed
from sentinel_backup.model.check import Check
from sentinel_backup.pipeline.producer import RawObserver
from sentinel_backup.pipeline.rawmatch import RawWindow, StreamMismatch
from sentinel_backup.streams.base import Handoff, NullSink, Sink, Tee
from sentinel_backup.streams.compress import decompressor
from sentinel_backup.streams.crypto import Cipher
from sentinel_backup.streams.digest import Digest


class StreamCheck:
    """The decoding half of verification, run on the bytes while they are being stored.

    ``sink`` receives a copy of every stored chunk (after encryption when ``cipher`` can
    decrypt; otherwise the compressed bytes before encryption, e.g. age without
    AGE_IDENTITY_FILE on the backup host) and decodes it in its own thread behind a queue
    of two chunks, so the producer only waits when decoding falls behind. The decoded
    output is compared byte for byte with the producer's raw chunks (``raw_tap`` keeps
    them in a :class:`~sentinel_backup.pipeline.rawmatch.RawWindow` until their decoded
    copy arrives: no second SHA-256 of the raw stream), then shown to the producer's
    ``observer``, which judges whether the stream is a complete artifact of its kind. A
    decoding error or a differing byte surfaces as :class:`VerifyFailed` from the
    stream's next write or its close, which stops the backup before anything is committed;
    :meth:`checks` then proves the decoded stream was neither shorter nor cut short.

    ``precompressed``: the producer writes the stored compression itself (``pg_basebackup
    --compress=client-zstd``), so there are no raw chunks to compare with: the raw stream *is*
    what the stored stream decodes to, and its SHA-256 and size are taken here (``decoded``),
    in the decoder's thread; the observer (and the decoder's own end-of-frame and checksum)
    then judge whether it is complete.
    """

    def __init__(self, compression: Compression, cipher: Cipher | None, *,
                 observer: RawObserver | None = None, precompressed: bool = False) -> None:
        self.decrypts = cipher is not None
        self.observer = observer
        self.precompressed = precompressed
        self.window = RawWindow()
        self.decoded = Digest(NullSink())  # precompressed: the raw stream is what the stored one decodes to
        tail: Sink = self.decoded if precompressed else self.window
        end: Sink = Tee(tail, observer) if observer is not None else tail
        inner = decompressor(compression, end)
        if cipher is not None:
            inner = cipher.decryptor(inner)
        self.seen = Digest(inner)  # the stored bytes the decoder saw (compared when it decrypts)
        self._queue = Handoff(_Decoding(self.seen), depth=2)

    @property
    def sink(self) -> Sink:
        return self._queue

    def raw_tap(self, downstream: Sink) -> Sink:
        """A stage for the producer's side: keeps each raw chunk for the comparison, then
        passes it on (to the compressor)."""
        return _Keep(self.window, downstream)

    def abort(self) -> None:
        self._queue.abort()

    def checks(self, raw: Digest, stored: Digest | None) -> list[Check]:
        """What the in-stream decode proved; call after the stream was closed."""
        window = self.window
        if self.precompressed:  # a decoding error or a truncated stream raised before this
            result = [Check.of("raw", raw is self.decoded and raw.size > 0,
                               f"the producer's compressed stream decodes to {raw.size} bytes")]
        else:
            result = [Check.of("raw", window.whole() and window.kept == raw.size, window.detail())]
        if stored is not None and self.decrypts:
            seen = self.seen
            result.append(Check.of("stream", seen.sha256 == stored.sha256 and seen.size == stored.size,
                                "the decoder saw every stored byte" if seen.sha256 == stored.sha256
                                else "the decoder saw other bytes than were stored"))
        if self.observer is not None:
            result.append(Check.of(self.observer.name, self.observer.complete(), self.observer.detail()))
        return result


class _Keep:
    def __init__(self, window: RawWindow, downstream: Sink) -> None:
        self.window = window
        self.downstream = downstream

    def write(self, data: bytes) -> None:
        self.window.keep(data)  # before the compressor: its output can only decode to kept bytes
        self.downstream.write(data)

    def close(self) -> None:
        self.downstream.close()


class _Decoding:
    """Turns any failure of the decode chain into one VerifyFailed: the backup must not commit."""

    def __init__(self, downstream: Sink) -> None:
        self.downstream = downstream

    def write(self, data: bytes) -> None:
        try:
            self.downstream.write(data)
        except StreamMismatch:
            raise
        except Exception as exc:
            raise _undecodable(exc) from exc

    def close(self) -> None:
        try:
            self.downstream.close()
        except StreamMismatch:
            raise
        except Exception as exc:
            raise _undecodable(exc) from exc


def _undecodable(exc: Exception) -> VerifyFailed:
    detail = exc.message if isinstance(exc, SentinelError) else f"{type(exc).__name__}: {exc}"
    return VerifyFailed(f"in-stream verification failed: the stored stream does not decode ({detail})",
                        "nothing was committed; run the backup again, and report it if it repeats")
