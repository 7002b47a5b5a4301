"""A throwaway PostgreSQL cluster for the demo, the tests and the benchmarks.

Uses the installed server binaries (``/usr/lib/postgresql/<ver>/bin`` or PG_BIN_DIR /
SENTINEL_PG_BIN). As root, the server runs as the ``postgres`` OS user, as PostgreSQL
refuses to run as root. It listens on 127.0.0.1 only, with password authentication over
TCP (so wrong-password paths are real) and trust over its private Unix socket.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def find_pg_bin() -> Path:
    """The directory of initdb/pg_ctl: SENTINEL_PG_BIN, else the newest installed."""
    env = os.environ.get("SENTINEL_PG_BIN")
    if env:
        return Path(env)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise RuntimeError("no PostgreSQL server binaries found: install postgresql (apt-get install postgresql-15)"
                           " or set SENTINEL_PG_BIN")
    return candidates[-1].parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TempCluster:
    """initdb + pg_ctl in a temporary folder. Use as a context manager."""

    bin_dir: Path = field(default_factory=find_pg_bin)
    password: str = "sentinel-test-password"
    user: str = "postgres"
    port: int = field(default_factory=free_port)
    base: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    initdb_args: list[str] = field(default_factory=list)  # e.g. ["--wal-segsize=1"] (1 MB WAL segments)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sentinel-pg-", dir=self.base))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            self._run_as = ["runuser", "-u", "postgres", "--"]
            os.chmod(self.root, 0o755)

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> TempCluster:
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            entry = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._pg("initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                 "-E", "UTF8", "--locale", "C.UTF-8", "-A", "trust", "--auth-host", "scram-sha-256",
                 *self.initdb_args)
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "128MB",
            "max_wal_size": "2GB",
            "logging_collector": "off",
            **self.settings,
        }
        with open(self.data / "postgresql.auto.conf", "a") as out:
            out.writelines(f"{k} = {v}\n" for k, v in conf.items())
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- use ----------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Sentinel Backup settings that reach this cluster over TCP with a password."""
        return {
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "PG_BIN_DIR": str(self.bin_dir),
        }

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname={dbname}"

    def psql(self, sql: str, dbname: str = "postgres", *, check: bool = True) -> str:
        """Run SQL with psql over the private socket; returns unaligned, tuples-only output."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user, "-d", dbname],
            input=sql, capture_output=True, text=True, check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run([*self._run_as, str(self.bin_dir / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root)

    def log_text(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def temp_cluster(**kwargs: object) -> Iterator[TempCluster]:
    cluster = TempCluster(**kwargs)  # type: ignore[arg-type]
    try:
        yield cluster.start()
    finally:
        cluster.stop()
