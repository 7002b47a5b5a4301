"""pg_dump and pg_dumpall as producers of the write pipeline, and the end-marker observer.

A plain dump ends with pg_dump's (or pg_dumpall's) completion comment; a dump cut short
(killed, connection lost, disk of a pipe full) does not. :class:`EndMarker` watches the
decoded raw stream for it, so a truncated dump is refused before anything is committed.
"""

from __future__ import annotations

import subprocess
from typing import IO

from sentinel_backup import log
from sentinel_backup.interrupt import stop_children
from sentinel_backup.pg.source import Source, StderrCollector, source_error
from sentinel_backup.pipeline.producer import RawObserver
from sentinel_backup.pipeline.read import END_MARKERS

logger = log.get("backup")


class EndMarker:
    """A RawObserver: keeps the last bytes of the raw stream and finds pg_dump's end-of-dump
    (or pg_dumpall's end-of-cluster-dump) comment among them."""

    name = "complete"

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data = (self.data + data[-self.keep:])[-self.keep:]

    def close(self) -> None:
        pass

    def complete(self) -> bool:
        return any(marker in self.data for marker in END_MARKERS)

    def detail(self) -> str:
        return "pg_dump end-of-dump marker" + (" present" if self.complete() else " missing: the dump is truncated")


class PgDumpProducer:
    """One pg_dump / pg_dumpall child (started through ``Source.spawn``, so a stop request
    reaches it at once); its stderr is drained in a thread and named in a failure."""

    def __init__(self, source: Source, argv: list[str], *, tool: str, label: str, end_marker: bool) -> None:
        self.source = source
        self.argv = argv
        self.tool = tool  # "pg_dump" or "pg_dumpall": named in failures
        self.label = label
        self.end_marker = end_marker  # plain format: the stream must end with the marker
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors: StderrCollector | None = None

    def start(self) -> IO[bytes]:
        logger.debug("Running " + " ".join(self.argv))
        self.proc = self.source.spawn(self.argv)
        self.errors = StderrCollector(self.proc)
        assert self.proc.stdout is not None
        return self.proc.stdout

    def finish(self) -> None:
        assert self.proc is not None and self.errors is not None, "finish() before start()"
        code = self.proc.wait()
        self.errors.join()
        text = self.errors.text()
        if code != 0:
            raise source_error(self.tool, text, code)
        if text.strip():
            logger.warning(f"pg_dump said: {text.strip()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_children([self.proc])  # SIGINT first: pg_dump then cancels its query on the server
        self.proc.wait()
        if self.errors is not None:
            self.errors.join()

    def observer(self) -> RawObserver | None:
        return EndMarker() if self.end_marker else None
