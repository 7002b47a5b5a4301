"""The progress bar on a real terminal (a pseudo-terminal), against a real PostgreSQL: it names
the database, knows the expected size (pg_database_size), shows percent, sizes in the units
of `list` and an ETA, and the log lines printed while it runs stay whole lines."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import big_database, reap

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(INFO|WARN|ERROR)\] ")


@pytest.fixture
def big_db(pg: TempCluster) -> Iterator[str]:
    name = big_database(pg, "progress_big", 400_000)
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def on_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the program with stdin, stdout and stderr on a 160x50 pseudo-terminal; its output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "S3_", "MINIO_", "PG"))}
    child.update(env, TERM="xterm-256color", COLUMNS="160", LINES="50")
    child.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=child, close_fds=True)
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait()
    finally:
        reap(proc)
        os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")


def test_backup_progress_on_a_terminal(pg: TempCluster, big_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": big_db, "COMPRESSION": "none"}
    code, raw = on_terminal(env, "backup")  # a 160-column terminal: the log lines are longer
    assert code == 0, raw
    pieces = [ANSI.sub("", p) for p in re.split(r"[\r\n]", raw)]
    bars = [p for p in pieces if f"dumping {big_db}" in p]
    assert bars, raw[-3000:]
    assert any(re.search(r"\d+%", b) and " of ~" in b and "ETA" in b for b in bars), bars[-5:]
    assert any(re.search(r"\d+\.\d (KiB|MiB|GiB) of ~\d+\.\d (KiB|MiB|GiB)", b) for b in bars), bars[-5:]
    # each log line arrives whole, on a line of its own: none is cut by, or glued to, the bar
    logs = [p.strip() for p in pieces if "[INFO]" in p]
    assert any(f"Backup of {big_db} completed" in line and line.endswith("destinations=local") for line in logs), logs
    assert all(LOG_LINE.match(line) for line in logs), [line for line in logs if not LOG_LINE.match(line)]
    assert not any("dumping" in line and "[INFO]" in line for line in pieces)


def test_no_progress_means_no_bar(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g", new_db)
    code, raw = on_terminal({**base_env, "POSTGRES_DB": new_db}, "backup", "--no-progress")
    assert code == 0, raw
    assert "ETA" not in raw and f"dumping {new_db}" not in raw and "Backup process completed" in raw
