"""The fan-out: one stream to several writers, failures isolated, memory bounded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from sentinel_backup.errors import StorageError
from sentinel_backup.storage.base import ObjectInfo
from sentinel_backup.storage.fanout import QUEUE_CHUNKS, FanOut


class Writer:
    def __init__(self, fail_after: int | None = None, gate: threading.Event | None = None) -> None:
        self.data: list[bytes] = []
        self.fail_after = fail_after
        self.gate = gate
        self.aborted = False

    def write(self, data: bytes) -> None:
        if self.gate is not None:
            self.gate.wait()
        if self.fail_after is not None and len(self.data) >= self.fail_after:
            raise StorageError("store refused")
        self.data.append(data)

    def commit(self) -> ObjectInfo:
        return ObjectInfo("k", sum(map(len, self.data)), datetime.now(UTC))

    def abort(self) -> None:
        self.aborted = True


def test_every_writer_gets_every_chunk() -> None:
    a, b = Writer(), Writer()
    fan = FanOut({"local": a, "s3": b})
    for i in range(100):
        fan.write(b"%d" % i)
    fan.close()
    assert a.data == b.data == [b"%d" % i for i in range(100)]
    assert fan.failed == {} and set(fan.healthy) == {"local", "s3"}


def test_a_failing_destination_is_dropped_and_the_others_go_on() -> None:
    good, bad = Writer(), Writer(fail_after=3)
    fan = FanOut({"local": good, "minio": bad})
    for i in range(50):
        fan.write(b"%d" % i)
    fan.close()
    assert len(good.data) == 50
    assert set(fan.failed) == {"minio"} and set(fan.healthy) == {"local"}


def test_when_every_destination_fails_the_stream_stops() -> None:
    fan = FanOut({"local": Writer(fail_after=0), "s3": Writer(fail_after=1)})
    with pytest.raises(StorageError):
        for _ in range(1000):
            fan.write(b"x")
        fan.close()
    fan.abort()


def test_a_slow_destination_blocks_the_producer_instead_of_buffering() -> None:
    gate = threading.Event()
    slow = Writer(gate=gate)
    fan = FanOut({"s3": slow})
    written = []

    def produce() -> None:
        for i in range(QUEUE_CHUNKS * 4):
            fan.write(b"%d" % i)
            written.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(timeout=2)
    assert producer.is_alive()  # blocked: the queue is full, nothing more is buffered
    assert len(written) <= QUEUE_CHUNKS + 2
    gate.set()
    producer.join()
    fan.close()
    assert len(slow.data) == QUEUE_CHUNKS * 4


def test_abort_aborts_every_writer() -> None:
    a, b = Writer(), Writer()
    fan = FanOut({"local": a, "s3": b})
    fan.write(b"partial")
    fan.abort()
    assert a.aborted and b.aborted
