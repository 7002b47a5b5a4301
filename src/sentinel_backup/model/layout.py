"""Where each kind of stored object lives: handle -> key and key -> handle, on every backend.

One layout for local folders, S3 and MinIO (keys are relative to the destination's root):

```
sentinel_backup_<db>_<stamp>.sql.gz[.enc|.age]          logical backups, at the root as since 0.1
sentinel_backup_<db>_<stamp>.sql.gz.manifest.json       (their manifests, .sha256, drill records beside)
sentinel_globals_<stamp>.sql.gz                          roles and tablespaces
servers/<server>/sentinel_backup_<db>_<stamp>...         the same, of a server with SERVER_NAME set
basebackups/<system id>/sentinel_base_<stamp>.tar.<ext>  physical base backups (manifest etc. beside)
wal/<system id>/<timeline, 8 hex>/<WAL file name>.<plain sha256>.<ext>   the WAL archive
```

Logical backups stay at the root so that backups written by earlier versions, and the shell
version's files, keep their names. A server with a name (``SERVER_NAME``) writes its logical
backups into ``servers/<server>/`` instead (ids ``<server>/<db>_<stamp>``), so that several
servers share a bucket without sharing a retention series; the root is the unnamed server's.
Physical backups and WAL sit in folders keyed by the
cluster's system identifier, so two clusters never mix; WAL is further split by timeline,
so a listing of one timeline never reads the others. A WAL object's name carries the SHA-256
of its plaintext: written once, never rewritten (object lock keeps working), and a second
push of the same name is recognised as the same content or refused as a conflict without
decrypting anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

BASE_ROOT = "basebackups"
WAL_ROOT = "wal"
BASE_PREFIX = "sentinel_base_"
SERVERS_ROOT = "servers"

Kind = Literal["logical", "physical", "wal"]

# 24 hex digits (timeline, log, segment), a timeline history file, a backup history file,
# or a partial segment (pg_receivewal, promotion)
_WAL_NAME = re.compile(r"^(?P<tli>[0-9A-F]{8})(?:[0-9A-F]{16}(?:\.[0-9A-F]{8}\.backup|\.partial)?|\.history)$")
_SYSTEM_ID = re.compile(r"^[0-9]{1,20}$")
_WAL_KEY = re.compile(
    rf"^{WAL_ROOT}/(?P<sysid>[0-9]{{1,20}})/(?P<tli>[0-9A-F]{{8}})/(?P<name>[0-9A-F.a-z]+?)\."
    r"(?P<sha>[0-9a-f]{64})(?P<ext>(?:\.[a-z0-9]+)*)$")
_SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch: no trailing newline
_SERVER_KEY = re.compile(rf"^{SERVERS_ROOT}/(?P<server>[^/]+)/(?P<name>[^/]+)$")
_BASE_KEY = re.compile(rf"^{BASE_ROOT}/(?P<sysid>[0-9]{{1,20}})/(?P<name>{BASE_PREFIX}[^/]+)$")


@dataclass(frozen=True)
class Handle:
    """What an object is, independent of where it is stored."""

    kind: Kind
    name: str  # the artifact name (logical, physical) or the WAL file name (wal)
    system_id: str | None = None  # physical and wal
    sha256: str | None = None  # wal: of the plaintext
    extension: str = ""  # wal: ".zst", ".gz.age", ...
    server: str = ""  # logical: the SERVER_NAME it was written under ("": the unnamed server, at the root)


def is_wal_name(name: str) -> bool:
    """A name PostgreSQL archives: segment, ``.history``, ``.backup`` or ``.partial`` file."""
    return _WAL_NAME.match(name) is not None


def wal_timeline(name: str) -> int:
    match = _WAL_NAME.match(name)
    if match is None:
        raise ValueError(f"not a WAL file name: {name!r}")
    return int(match.group("tli"), 16)


def check_system_id(system_id: str) -> str:
    if not _SYSTEM_ID.match(system_id):
        raise ValueError(f"not a system identifier: {system_id!r}")
    return system_id


def check_server(name: str) -> str:
    """A SERVER_NAME: one safe path segment (letters, digits, ``_ . -``, up to 63, not starting
    with a punctuation mark), or "" for the unnamed server."""
    if name and (not _SERVER.fullmatch(name) or name.lower() == "all"):
        raise ValueError(f"not a server name: {name!r}")
    return name


def server_setting(value: object) -> object:
    """SERVER_NAME as the settings readers validate it (``config`` and ``config_lean``): stripped,
    a ValueError with the rule when it is no server name."""
    name = value.strip() if isinstance(value, str) else value
    if isinstance(name, str):
        try:
            check_server(name)
        except ValueError:
            raise ValueError("must be one safe path segment: letters, digits, `_`, `.` or `-`, up to 63, starting"
                             " with a letter or digit, and not `all` (e.g. db1 or pg-eu.prod)") from None
    return name


def logical_folder(server: str) -> str:
    """The folder of a server's logical backups: the root ("") for the unnamed server."""
    return f"{SERVERS_ROOT}/{check_server(server)}/" if server else ""


def split_logical(key: str) -> tuple[str, str]:
    """(server, artifact name) of a logical key; ("", key) at the root."""
    match = _SERVER_KEY.match(key)
    return (match.group("server"), match.group("name")) if match else ("", key)


def base_folder(system_id: str) -> str:
    return f"{BASE_ROOT}/{check_system_id(system_id)}/"


def wal_folder(system_id: str, timeline: int) -> str:
    return f"{WAL_ROOT}/{check_system_id(system_id)}/{timeline:08X}/"


def wal_prefix(system_id: str, name: str) -> str:
    """The prefix that lists every stored copy of one WAL file (whatever its hash or extension)."""
    return wal_folder(system_id, wal_timeline(name)) + name + "."


def key_for(handle: Handle) -> str:
    if handle.kind == "logical":
        return logical_folder(handle.server) + handle.name
    if handle.system_id is None:
        raise ValueError(f"a {handle.kind} handle needs a system identifier")
    if handle.kind == "physical":
        return base_folder(handle.system_id) + handle.name
    if not is_wal_name(handle.name) or handle.sha256 is None:
        raise ValueError(f"not a WAL handle: {handle!r}")
    return wal_prefix(handle.system_id, handle.name) + handle.sha256 + handle.extension


def handle_for(key: str) -> Handle | None:
    """The handle of a stored key, or None for what this layout does not describe (sidecars
    of physical backups and logical names are recognised by their own modules)."""
    match = _WAL_KEY.match(key)
    if match is not None and is_wal_name(match.group("name")):
        return Handle("wal", match.group("name"), match.group("sysid"), match.group("sha"), match.group("ext"))
    match = _BASE_KEY.match(key)
    if match is not None:
        return Handle("physical", match.group("name"), match.group("sysid"))
    if "/" not in key:
        return Handle("logical", key)
    match = _SERVER_KEY.match(key)
    if match is not None and _SERVER.fullmatch(match.group("server")):
        return Handle("logical", match.group("name"), server=match.group("server"))
    return None
