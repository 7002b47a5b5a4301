"""The producer protocol: what makes the raw stream of one artifact.

The write pipeline (raw SHA-256 -> compress -> encrypt -> stored SHA-256 -> fan-out ->
commit) never knows which producer feeds it. A producer is pg_dump / pg_dumpall (logical),
pg_basebackup (physical), or anything else that writes one byte stream: it starts its
child, hands the pipeline the child's stdout, says after the stream ended whether the
child succeeded, and can be stopped at once. Its ``observer`` watches the raw bytes in the
in-stream decode (pg_dump's end-of-dump marker; the tar end-of-archive of a base backup),
so "the stream decodes to a complete artifact" is proven while it is written.

This is the place where a new kind of backup plugs in: implement a Producer, a facts
model for the manifest, and a restore; the pipeline, destinations, catalog, verification
and retention are shared.
"""

from __future__ import annotations

from typing import IO, Protocol


class RawObserver(Protocol):
    """Sees every raw (decoded) byte, in order, and judges at the end whether the stream is
    a complete artifact of its kind."""

    name: str  # the check's name in reports, e.g. "complete"

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def complete(self) -> bool: ...

    def detail(self) -> str:
        """One line for the report: what was found (present / missing / where it broke)."""
        ...


class Producer(Protocol):
    label: str  # for logs and errors, e.g. "pg_dump of app", "pg_basebackup of db1:5432"
    tool: str  # the program named in failures: "pg_dump", "pg_dumpall", "pg_basebackup"

    def start(self) -> IO[bytes]:
        """Start producing and return the raw stream (typically a child's stdout)."""
        ...

    def finish(self) -> None:
        """After the stream ended: wait for the producer; raise SourceError (naming the tool,
        its exit code and stderr) when it did not succeed. A producer that did not succeed
        never becomes a backup."""
        ...

    def stop(self) -> None:
        """Stop at once (a stop request, or a failure elsewhere in the pipeline). Idempotent;
        safe before ``start``; may be called from the stop watcher's thread while the main
        thread reads the stream (the stream then ends or fails)."""
        ...

    def observer(self) -> RawObserver | None:
        """A fresh observer of the raw stream for the in-stream check, or None."""
        ...
