"""The WAL archive on the destinations: what is stored for a name, and how it is encoded.

Every WAL file is stored once per destination under
``wal/<system id>/<timeline>/<name>.<sha256 of the plaintext>.<ext>`` (``model.layout``),
compressed with COMPRESSION and encrypted like backups, and never rewritten. The
extension says how to read it back (``.zst.age``: zstd, then age), so a change of
COMPRESSION or encryption never makes older WAL unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel_backup.choices import Compression
from sentinel_backup.errors import SentinelError
from sentinel_backup.model.layout import Handle, handle_for, wal_prefix
from sentinel_backup.storage.base import Storage

_COMPRESSIONS = {".gz": Compression.GZIP, ".zst": Compression.ZSTD}
_CIPHERS = {".enc": "aes-256-cbc", ".age": "age"}


class WalConflict(SentinelError):
    """A WAL file of that name is archived with different content."""


@dataclass(frozen=True)
class Encoding:
    compression: Compression
    cipher: str | None  # "aes-256-cbc", "age" or None


def encoding_of(extension: str) -> Encoding:
    """``.gz.enc`` -> gzip + AES; ``""`` -> stored as it is."""
    parts = [f".{p}" for p in extension.split(".") if p]
    compression, cipher = Compression.NONE, None
    if parts and parts[-1] in _CIPHERS:
        cipher = _CIPHERS[parts.pop()]
    if parts and parts[-1] in _COMPRESSIONS:
        compression = _COMPRESSIONS[parts.pop()]
    if parts:
        raise ValueError(f"unknown WAL object extension {extension!r}")
    return Encoding(compression, cipher)


def stored_copies(storage: Storage, system_id: str, name: str) -> list[tuple[Handle, str]]:
    """(handle, key) of every stored copy of ``name`` on one destination (normally 0 or 1)."""
    found = []
    for info in storage.list(wal_prefix(system_id, name)):
        handle = handle_for(info.key)
        if handle is not None and handle.kind == "wal" and handle.name == name and handle.system_id == system_id:
            found.append((handle, info.key))
    return found


def check_no_conflict(storage: Storage, system_id: str, name: str, sha256: str,
                      copies: list[tuple[Handle, str]]) -> bool:
    """True when the same content is already stored; WalConflict when different content is."""
    other = [key for handle, key in copies if handle.sha256 != sha256]
    if other:
        raise WalConflict(
            f"{name} is already archived on {storage.name} with different content ({other[0]}; this file's"
            f" SHA-256 is {sha256}) for system identifier {system_id}",
            "two clusters with the same system identifier archive into one place (a copied data directory"
            " that was started as a primary?), or pg_wal is damaged; archived WAL is never overwritten: give"
            " the other cluster its own destination, or investigate pg_wal before archiving goes on")
    return bool(copies)
