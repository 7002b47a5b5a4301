"""The Sink protocol and the helpers every stage shares."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import IO, BinaryIO, Protocol

CHUNK = 1 << 20  # 1 MiB: large enough for fast hashing/compression, small enough for flat memory


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """Discards everything (the end of a verification chain)."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class FileSink:
    """Writes to a binary file object; close() closes it (e.g. a child's stdin)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def close(self) -> None:
        self.file.close()


class Tee:
    """Writes every chunk to each downstream in turn; close() closes them all, raising the first error."""

    def __init__(self, *downstreams: Sink) -> None:
        self.downstreams = downstreams

    def write(self, data: bytes) -> None:
        for sink in self.downstreams:
            sink.write(data)

    def close(self) -> None:
        first: BaseException | None = None
        for sink in self.downstreams:
            try:
                sink.close()
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first


def pump(reader: IO[bytes], sink: Sink, *, chunk: int = CHUNK, progress: Callable[[int], None] | None = None) -> int:
    """Copy reader into sink chunk by chunk, then close the sink. Returns bytes read."""
    total = 0
    read = getattr(reader, "read1", reader.read)
    while True:
        data = read(chunk)
        if not data:
            break
        total += len(data)
        sink.write(data)
        if progress is not None:
            progress(len(data))
    sink.close()
    return total


_END = object()
ABORT_WAIT = 5.0  # seconds Handoff.abort waits for its thread before the caller goes on


class Handoff:
    """Runs the rest of a chain in its own thread, fed through a small queue.

    Hashing and (de)compression release the GIL, so the stages before and after a handoff
    use two cores. An error in the thread is raised by the next ``write`` or by ``close``;
    ``abort`` stops the thread when the chain is abandoned halfway.
    """

    def __init__(self, downstream: Sink, depth: int = 2) -> None:
        self.downstream = downstream
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="handoff", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _END:
                break
            if self.error is None:
                try:
                    self.downstream.write(item)  # type: ignore[arg-type]
                except BaseException as exc:
                    self.error = exc
        if self.error is None:
            try:
                self.downstream.close()
            except BaseException as exc:
                self.error = exc

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(bytes(data))

    def close(self) -> None:
        self.queue.put(_END)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop the thread, dropping what is queued. A stop signal raises in the main thread
        wherever it is, also halfway through a ``Condition.notify`` of the queue: the thread's
        next wake-up can be lost then (CPython leaves a stale waiter behind), so the thread is
        woken again until it ended, never with a single notification. A thread blocked inside
        ``downstream.write`` (a child that stopped reading its stdin) cannot be woken: after
        ABORT_WAIT seconds the caller goes on (it kills that child, which ends the write), and the
        daemon thread ends by itself."""
        if not self.thread.is_alive():
            return
        self.error = self.error or RuntimeError("aborted")
        deadline = time.monotonic() + ABORT_WAIT
        while self.thread.is_alive() and time.monotonic() < deadline:
            with self.queue.mutex:
                self.queue.queue.clear()
                self.queue.queue.append(_END)
                self.queue.not_empty.notify_all()
            self.thread.join(0.05)
