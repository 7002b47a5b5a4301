"""The in-stream check: the stored bytes decoded *while they are written*, so a backup knows
that its stream decodes to exactly what the producer wrote without a second decoding pass.
It uses the read pipeline's decode chain (``pipeline.read``)."""

from __future__ import annotations

from sentinel_backup.choices import Compression
from sentinel_backup.errors import SentinelError, VerifyFailed
from sentinel_backup.model.check import Check
from sentinel_backup.pipeline.producer import RawObserver
from sentinel_backup.pipeline.read import decoder_for
from sentinel_backup.streams.base import Handoff, NullSink, Sink
from sentinel_backup.streams.crypto import Cipher
from sentinel_backup.streams.digest import Digest


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
        result = [Check.of("raw", decoded.sha256 == raw.sha256 and decoded.size == raw.size,
                        f"in-stream decode gave {decoded.size} bytes, sha256 {decoded.sha256[:16]}..., "
                        f"producer wrote {raw.size} bytes, sha256 {raw.sha256[:16]}...")]
        if stored is not None and self.decrypts:
            seen = self.decoder.stored
            result.append(Check.of("stream", seen.sha256 == stored.sha256 and seen.size == stored.size,
                                "the decoder saw every stored byte" if seen.sha256 == stored.sha256
                                else "the decoder saw other bytes than were stored"))
        if self.observer is not None:
            result.append(Check.of(self.observer.name, self.observer.complete(), self.observer.detail()))
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
