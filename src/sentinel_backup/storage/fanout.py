"""One stream to every destination at once, with bounded memory.

Each destination has its own thread and a small queue. ``write`` hands every chunk to
every healthy destination and blocks while a queue is full, so a slow destination
slows the dump instead of growing memory. A destination that fails is dropped (its
error kept for the report); the stream goes on to the others. Only when every
destination has failed does ``write`` raise, which stops the dump.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sentinel_backup.errors import StorageError
from sentinel_backup.storage.base import ObjectWriter

_DONE = b""
QUEUE_CHUNKS = 4  # per destination: 4 x 1 MiB chunks at most
WAIT_SLICE = 0.2  # while a queue is full, the stop check runs this often


@dataclass
class _Lane:
    name: str
    writer: ObjectWriter
    queue: queue.Queue[bytes] = field(default_factory=lambda: queue.Queue(maxsize=QUEUE_CHUNKS))
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def run(self) -> None:
        while True:
            chunk = self.queue.get()
            if chunk is _DONE:
                return
            if self.error is not None:
                continue  # drain so the producer never blocks on a dead lane
            try:
                self.writer.write(chunk)
            except BaseException as exc:
                self.error = exc


class FanOut:
    """A Sink writing to several ObjectWriters in parallel."""

    def __init__(self, writers: dict[str, ObjectWriter], *, check: Callable[[], None] | None = None) -> None:
        """``check`` is called while ``write`` waits for a slow destination; it raises to
        stop waiting (e.g. ``Stopper.check`` on a stop request)."""
        self.check = check
        self.lanes = [_Lane(name, writer) for name, writer in writers.items()]
        for lane in self.lanes:
            lane.thread = threading.Thread(target=lane.run, name=f"fanout-{lane.name}", daemon=True)
            lane.thread.start()
        self._closed = False

    def write(self, data: bytes) -> None:
        alive = [lane for lane in self.lanes if lane.error is None]
        if not alive:
            raise self._all_failed()
        for lane in alive:
            while True:
                try:
                    lane.queue.put(data, timeout=WAIT_SLICE if self.check else None)
                    break
                except queue.Full:
                    assert self.check is not None
                    self.check()
                    if lane.error is not None:
                        break

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for lane in self.lanes:
            lane.queue.put(_DONE)
        for lane in self.lanes:
            assert lane.thread is not None
            lane.thread.join()
        if all(lane.error is not None for lane in self.lanes):
            raise self._all_failed()

    def abort(self) -> None:
        """Stop the threads and abort every writer (after a failed dump)."""
        if not self._closed:
            self._closed = True
            for lane in self.lanes:
                lane.error = lane.error or StorageError("aborted")
                _put_end(lane.queue)
            for lane in self.lanes:
                assert lane.thread is not None
                lane.thread.join()
        for lane in self.lanes:
            lane.writer.abort()

    @property
    def failed(self) -> dict[str, BaseException]:
        return {lane.name: lane.error for lane in self.lanes if lane.error is not None}

    @property
    def healthy(self) -> dict[str, ObjectWriter]:
        return {lane.name: lane.writer for lane in self.lanes if lane.error is None}

    def _all_failed(self) -> BaseException:
        first = next(lane.error for lane in self.lanes if lane.error is not None)
        if isinstance(first, StorageError):
            return first
        names = ", ".join(lane.name for lane in self.lanes)
        return StorageError(f"every destination failed ({names}): {first}", "see the errors above")


def _put_end(lane_queue: queue.Queue[bytes]) -> None:
    """Queue the end marker without waiting for a slow destination: chunks still queued are
    thrown away (the copy is being aborted)."""
    while True:
        try:
            lane_queue.put_nowait(_DONE)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                lane_queue.get_nowait()
