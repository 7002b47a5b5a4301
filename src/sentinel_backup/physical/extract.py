"""A push-driven tar extractor: the end of the read/decode chain of a physical restore.

The decoded bytes of a base backup are written to :class:`TarExtractor` chunk by chunk (no
second pass, no temporary tar). Regular files, folders and symbolic links are written under
the target data directory; a name that would leave it (absolute, ``..``) is refused.
Tablespaces: members under ``pg_tblspc/<oid>/`` (the spooled form, see ``physical.producer``)
go to that tablespace's new location, the ``pg_tblspc/<oid>`` link points there, and
``tablespace_map`` (which PostgreSQL uses at recovery start to recreate those links) is
rewritten with the new locations.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sentinel_backup.errors import RestoreFailed
from sentinel_backup.streams.tar import BLOCK, TarError, member_name, parse_header

TABLESPACE_MAP = "tablespace_map"


class TarExtractor:
    """A Sink writing a tar archive's members under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, tablespaces: dict[str, Path] | None = None,
                 owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.tablespaces = dict(tablespaces or {})  # oid -> new location
        self.owner = owner
        self.files = 0
        self.ended = False
        self._header = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0
        self._out: BinaryIO | None = None
        self._map: bytearray | None = None
        self._zeros = 0
        self._made: list[Path] = []  # tablespace folders created (removed again on failure by the caller)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        try:
            while pos < end:
                if self._remaining:
                    step = min(self._remaining, end - pos)
                    if self._out is not None:
                        self._out.write(view[pos:pos + step])
                    elif self._map is not None:
                        self._map += view[pos:pos + step]
                    self._remaining -= step
                    pos += step
                    if not self._remaining:
                        self._end_member()
                    continue
                if self._padding:
                    step = min(self._padding, end - pos)
                    self._padding -= step
                    pos += step
                    continue
                if self.ended:
                    return
                need = BLOCK - len(self._header)
                self._header += view[pos:pos + need]
                pos += min(need, end - pos)
                if len(self._header) == BLOCK:
                    block = bytes(self._header)
                    self._header.clear()
                    self._member(block)
        except TarError as exc:
            raise RestoreFailed(f"the base backup is not a readable tar archive: {exc}",
                                "verify the backup (sentinel-backup verify ID) and restore another") from None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if not self.ended:
            raise RestoreFailed("the base backup ended before its tar end-of-archive: it is truncated",
                                "verify the backup (sentinel-backup verify ID) and restore another")

    def _member(self, block: bytes) -> None:
        if not any(block):
            self._zeros += 1
            self.ended = self._zeros >= 2
            return
        name, size, kind, link = parse_header(block)
        mode = int(block[100:108].split(b"\0", 1)[0].strip() or b"0", 8) & 0o7777
        name = member_name(name)
        self._remaining = size
        self._padding = (BLOCK - size % BLOCK) % BLOCK
        if not name or name == ".":
            return
        path = self._target(name)
        if kind == b"5":
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o700)
            self._own(path)
        elif kind == b"2":
            oid = name.removeprefix("pg_tblspc/")
            target = str(self.tablespaces.get(oid, link)) if name.startswith("pg_tblspc/") else link
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)
            if self.owner is not None:
                os.lchown(path, *self.owner)
        elif kind in (b"0", b"\0", b"7"):
            path.parent.mkdir(parents=True, exist_ok=True)
            if name == TABLESPACE_MAP and self.tablespaces:
                self._map = bytearray()
            else:
                self._out = open(path, "wb")  # noqa: SIM115 (closed at the member's end)
                os.chmod(path, mode or 0o600)
                self._own(path)
            self.files += 1
        if not self._remaining:
            self._end_member()

    def _end_member(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._map is not None:
            path = self.root / TABLESPACE_MAP
            lines = []
            for line in bytes(self._map).decode().splitlines():
                oid, _, old = line.partition(" ")
                lines.append(f"{oid} {self.tablespaces.get(oid, old)}")
            path.write_text("".join(f"{line}\n" for line in lines))
            os.chmod(path, 0o600)
            self._own(path)
            self._map = None

    def _target(self, name: str) -> Path:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts:
            raise TarError(f"member {name!r} would be written outside the data directory")
        if len(parts) > 2 and parts[0] == "pg_tblspc" and parts[1] in self.tablespaces:
            base = self.tablespaces[parts[1]]
            if not base.exists():
                base.mkdir(parents=True, mode=0o700)
                self._own(base)
                self._made.append(base)
            return base.joinpath(*parts[2:])
        return self.root.joinpath(*parts)

    def _own(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner)
