"""Which PostgreSQL client programs to run: the ones that match the server's major version.

pg_dump refuses a server newer than itself ("server version mismatch"), and pg_restore
cannot read an archive written by a newer pg_dump. So before the first real command the
tools are chosen, in this order:

1. ``PG_BIN_DIR`` when set (the user's explicit choice: used or refused, never replaced);
2. the distribution layouts for the server's major version, then newer majors:
   ``/usr/lib/postgresql/<major>/bin`` (Debian, Ubuntu) and ``/usr/pgsql-<major>/bin``
   (RHEL and derivatives);
3. ``PATH``.

The first ``pg_dump`` whose major version is at least the server's wins. When none is,
:class:`ToolsTooOld` (exit 2) names both versions and the fixes. In container mode the
container's own tools are used; they are checked the same way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sentinel_backup.errors import ConfigError

LAYOUTS = ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin")
_LAYOUT_GLOBS = (("/usr/lib/postgresql", "{}/bin"), ("/usr", "pgsql-{}/bin"))
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")


class ToolsTooOld(ConfigError):
    """No client tool is new enough for the server."""


def major_of(version: str) -> int:
    """The major version in ``pg_dump (PostgreSQL) 15.18 (Debian ...)``, ``18.6``, ``9.6.24``
    or ``server_version_num`` (``180006``)."""
    text = version.strip()
    if text.isdigit() and len(text) >= 5:
        return int(text) // 10000
    tail = text.split(")", 1)[1] if "(PostgreSQL)" in text else text
    match = _VERSION.search(tail)
    if match is None:
        raise ValueError(f"no PostgreSQL version in {version!r}")
    return int(match.group(1))  # 9.6 counts as 9: only 10+ is supported anyway


def display_version(version: str) -> str:
    """``180001`` (server_version_num) as ``18.1``; other texts unchanged."""
    text = version.strip()
    if text.isdigit() and len(text) >= 5:
        number = int(text)
        return f"{number // 10000}.{number % 10000}"
    return text


@dataclass(frozen=True)
class ToolChoice:
    """The chosen client tools: a folder (None: found on PATH, or inside the container)."""

    bin_dir: Path | None
    version: str  # `pg_dump --version` as printed
    major: int
    origin: str  # where it came from, for messages: PG_BIN_DIR, a layout folder, PATH, the container

    def describe(self) -> str:
        return f"{self.version} ({self.origin})"


def layout_dirs(server_major: int, roots: Iterable[tuple[str, str]] = _LAYOUT_GLOBS) -> list[Path]:
    """Distribution folders holding client tools: the server's major first, then newer ones."""
    exact = [Path(layout.format(major=server_major)) for layout in LAYOUTS]
    newer: list[tuple[int, Path]] = []
    for root, pattern in roots:
        base = Path(root)
        if not base.is_dir():
            continue
        for entry in base.glob(pattern.format("*")):
            digits = re.findall(r"\d+", str(entry.relative_to(base)))
            if digits and int(digits[0]) > server_major:
                newer.append((int(digits[0]), entry))
    return [*exact, *(path for _, path in sorted(newer))]


def tool_version(argv: list[str], env: dict[str, str] | None = None) -> str | None:
    """``<tool> --version``, or None when the program cannot run."""
    try:
        proc = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=30, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def choose_local(server_version: str, pg_bin_dir: Path | None, *, layouts: list[Path] | None = None) -> ToolChoice:
    """The client tools for direct mode (see the module docstring for the order)."""
    server_major = major_of(server_version)
    candidates: list[tuple[Path | None, str]]
    if pg_bin_dir is not None:
        candidates = [(pg_bin_dir, "PG_BIN_DIR")]
    else:
        folders = layouts if layouts is not None else layout_dirs(server_major)
        candidates = [(folder, str(folder)) for folder in folders]
        candidates.append((None, "PATH"))
    seen: list[str] = []
    for folder, origin in candidates:
        program = str(folder / "pg_dump") if folder is not None else shutil.which("pg_dump")
        if program is None or (folder is not None and not Path(program).is_file()):
            continue
        version = tool_version([program])
        if version is None:
            continue
        try:
            major = major_of(version)
        except ValueError:
            continue
        if major >= server_major:
            return ToolChoice(folder, version, major, origin)
        seen.append(f"{version} ({origin})")
    raise too_old(server_version, seen, container=False)


def check_container(server_version: str, version: str, container: str) -> ToolChoice:
    """The container's own pg_dump must be at least as new as the server it dumps."""
    major = major_of(version)
    if major < major_of(server_version):
        raise too_old(server_version, [f"{version} (in container {container})"], container=True)
    return ToolChoice(None, version, major, f"container {container}")


def too_old(server_version: str, seen: list[str], *, container: bool) -> ToolsTooOld:
    major = major_of(server_version)
    server_version = display_version(server_version)
    found = "; ".join(seen) if seen else "no pg_dump at all"
    if container:
        return ToolsTooOld(f"the server runs PostgreSQL {server_version}, but the container's client tools are older:"
                           f" {found}", f"use a container image whose pg_dump is {major} or newer, or unset "
                           "POSTGRES_CONTAINER and install the matching client on this host")
    return ToolsTooOld(
        f"the server runs PostgreSQL {server_version}, but no pg_dump {major} or newer was found: {found}",
        f"install the matching client (Debian/Ubuntu: apt-get install postgresql-client-{major}; RHEL: dnf install "
        f"postgresql{major}), or set PG_BIN_DIR to the bin folder of a PostgreSQL {major}+ installation, or set "
        "POSTGRES_CONTAINER to use the database container's own tools")
