"""SHA-256 and byte count of whatever passes through."""

from __future__ import annotations

import hashlib

from sentinel_backup.streams.base import Sink


class Digest:
    """Pass-through stage that hashes and counts the bytes written to it."""

    def __init__(self, downstream: Sink) -> None:
        self.downstream = downstream
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self.downstream.write(data)

    def close(self) -> None:
        self.downstream.close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()
