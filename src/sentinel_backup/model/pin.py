"""Pins: a backup that retention never removes (``pin ID [--note]``, ``unpin ID``).

A pin is a small JSON sidecar ``<artifact>.pin.json`` (``{"note", "pinned_at", "host"}``)
written beside the backup on every destination that holds a copy, so it lives with the
backup and survives a lost local folder. Unpinning deletes it everywhere. A pin file that
cannot be read still pins (kept, never deleted by mistake), with a note saying so.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sentinel_backup.errors import SentinelError
from sentinel_backup.storage.base import Storage

PIN_SUFFIX = ".pin.json"
UNREADABLE = "(pin file unreadable)"


@dataclass(frozen=True)
class Pin:
    note: str
    pinned_at: str
    host: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"note": self.note, "pinned_at": self.pinned_at, "host": self.host}

    @classmethod
    def new(cls, note: str) -> Pin:
        return cls(note, datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                   socket.gethostname())


def parse(data: bytes) -> Pin:
    """A pin sidecar's content; an unreadable one is still a pin (its note says so)."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        return Pin(str(doc.get("note") or ""), str(doc.get("pinned_at") or ""), str(doc.get("host") or ""))
    except ValueError:
        return Pin(UNREADABLE, "")


def read(storage: Storage, artifact: str) -> Pin:
    """The pin beside ``artifact`` (known to exist); a read error still counts as a pin."""
    try:
        return parse(storage.read_bytes(artifact + PIN_SUFFIX))
    except (SentinelError, OSError):
        return Pin(UNREADABLE, "")


def write(storage: Storage, artifact: str, pin: Pin) -> None:
    storage.put_bytes(artifact + PIN_SUFFIX, json.dumps(pin.to_json(), indent=2).encode() + b"\n")


def remove(storage: Storage, artifact: str) -> None:
    storage.delete(artifact + PIN_SUFFIX)


def reason(pin: Pin) -> str:
    """Why retention keeps a pinned backup."""
    return f"pinned: {pin.note}" if pin.note else "pinned"
