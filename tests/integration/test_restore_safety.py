"""Restore safety against a real PostgreSQL: the swap with other sessions around, names, signals.

Sessions are real concurrent connections (psycopg); signals go to the real program started
as a child process, to its pid or to its whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import assert_same_data, big_database, cli, load, reap

SCRATCH = "__sentinel_restore"


@pytest.fixture
def complex_db(pg: TempCluster, new_db: str) -> str:
    load(pg, new_db, "complex.sql")
    return new_db


def databases(pg: TempCluster, like: str) -> list[str]:
    out = pg.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '%{like}%' ORDER BY 1")
    return [line for line in out.splitlines() if line]


def exists(pg: TempCluster, name: str) -> bool:
    return pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"


def with_marker(pg: TempCluster, name: str) -> None:
    """The old content of a target: one table the backup does not have."""
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)", name)


def still_old(pg: TempCluster, name: str) -> bool:
    return pg.psql("SELECT x FROM keep_me", name) == "42"


class Connector(threading.Thread):
    """A concurrent session (e.g. a monitoring agent) that connects to ``database`` as soon as
    it exists, or right away to an existing one, and stays connected until told to stop."""

    def __init__(self, pg: TempCluster, database: str, *, application: str = "monitoring-agent") -> None:
        super().__init__(daemon=True)
        self.pg, self.database, self.application = pg, database, application
        self.connected = threading.Event()
        self.done = threading.Event()
        self.conn: psycopg.Connection[Any] | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.done.is_set() and time.monotonic() < deadline:
            try:
                self.conn = psycopg.connect(self.pg.dsn(self.database), application_name=self.application,
                                            autocommit=True)
            except psycopg.OperationalError:
                time.sleep(0.005)
                continue
            self.connected.set()
            return

    def terminated(self) -> bool:
        """True if the server ended this session (it was connected, and now it is gone)."""
        assert self.conn is not None, "the session never connected"
        try:
            self.conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return True
        return False

    def close(self) -> None:
        self.done.set()
        self.join(timeout=10)
        if self.conn is not None:
            self.conn.close()


@pytest.fixture(scope="module")
def medium_backup(pg: TempCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A backup whose restore takes about a second: time for a session to connect to the scratch database.
    Made once for the module: the tests only restore it (into targets of their own)."""
    name = big_database(pg, "restore_medium", 300_000)
    folder = tmp_path_factory.mktemp("medium")
    env = {**pg.env(), "BACKUP_DIR": str(folder / "backups"), "POSTGRES_DB": name, "LOG_LEVEL": "INFO",
           "CWD": str(folder)}  # no .env of the working directory is read
    assert cli(env, "backup").code == 0
    yield env
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


# --- the swap ---------------------------------------------------------------------------------
def test_a_session_on_the_scratch_database_does_not_cost_the_target(pg: TempCluster, medium_backup: dict[str, str],
                                                                    new_db: str) -> None:
    """A session that connected to the scratch database is ended before the swap; the restore succeeds.

    (Before, the rename failed after the old target had been dropped, and both were gone.)"""
    with_marker(pg, new_db)
    agent = Connector(pg, f"{new_db}{SCRATCH}")
    agent.start()
    try:
        result = cli(medium_backup, "restore", "latest", "--target-db", new_db, "--clean")
        assert agent.connected.is_set(), "the agent never reached the scratch database"
        assert result.code == 0, result.output
        assert agent.terminated()
    finally:
        agent.close()
    assert_same_data(pg, medium_backup["POSTGRES_DB"], new_db)
    assert pg.psql("SELECT to_regclass('public.keep_me') IS NULL", new_db) == "t"
    assert databases(pg, "__sentinel") == []  # neither the scratch database nor the old target is left


def test_clean_refuses_while_sessions_use_the_target(pg: TempCluster, complex_db: str, base_env: dict[str, str],
                                                     new_db: str) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db}
    assert cli(env, "backup").code == 0
    target = f"{new_db}_in_use"
    with_marker(pg, target)
    agent = Connector(pg, target)
    agent.start()
    try:
        assert agent.connected.wait(30)
        refused = cli(env, "restore", "latest", "--target-db", target, "--clean")
        assert refused.code == 2, refused.output
        assert f"1 session(s) are connected to {target}" in refused.stderr
        assert "application monitoring-agent" in refused.stderr and "--terminate-sessions" in refused.stderr
        assert "Traceback" not in refused.output
        assert not agent.terminated()  # refused: nobody was disturbed
        assert still_old(pg, target) and databases(pg, "__sentinel") == []

        # Asked for, the sessions are terminated at the swap and the restore replaces the target.
        replaced = cli(env, "restore", "latest", "--target-db", target, "--clean", "--terminate-sessions")
        assert replaced.code == 0, replaced.output
        assert agent.terminated()
    finally:
        agent.close()
    assert_same_data(pg, complex_db, target)
    assert pg.psql(f"SELECT datallowconn FROM pg_database WHERE datname = '{target}'") == "t"
    assert databases(pg, "__sentinel") == []
    pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")


def test_a_session_that_connects_to_the_target_during_the_restore_stops_the_swap(
        pg: TempCluster, medium_backup: dict[str, str], new_db: str) -> None:
    """Nobody was connected when the restore started; someone is at the swap: refused, target untouched,
    and the error says what exists."""
    with_marker(pg, new_db)
    scratch = f"{new_db}{SCRATCH}"

    class LateConnector(Connector):
        def run(self) -> None:  # connect to the target once the restore is under way
            while not exists(self.pg, scratch) and not self.done.is_set():
                time.sleep(0.005)
            super().run()

    agent = LateConnector(pg, new_db)
    agent.start()
    try:
        result = cli(medium_backup, "restore", "latest", "--target-db", new_db, "--clean")
        assert agent.connected.is_set()
        assert result.code == 1, result.output
        assert f"1 session(s) are connected to {new_db}" in result.stderr
        assert f"{new_db} holds what it held before the restore" in result.stderr
        assert f"the scratch database {scratch} was dropped" in result.stderr
        assert not agent.terminated()
    finally:
        agent.close()
    assert still_old(pg, new_db) and databases(pg, "__sentinel") == []


def test_a_target_name_over_63_bytes_is_refused(pg: TempCluster, complex_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": complex_db}
    assert cli(env, "backup").code == 0
    long_name = "r" * 60 + "é" * 2  # 64 bytes in UTF-8, 62 characters
    result = cli(env, "restore", "latest", "--target-db", long_name, "--create")
    assert result.code == 2, result.output
    assert "64 bytes long" in result.stderr and "at most 63 bytes" in result.stderr
    assert "Traceback" not in result.output
    assert databases(pg, "rrrrrrrrrr") == []  # no truncated database was created


# --- signals ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_backups(pg: TempCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, str]]]:
    """About 150 MB of rows (a restore takes several seconds), backed up in plain and custom format."""
    name = big_database(pg, "restore_big", 1_200_000)
    envs = {}
    for fmt in ("plain", "custom"):
        env = {**pg.env(), "BACKUP_DIR": str(tmp_path_factory.mktemp(fmt) / "backups"), "POSTGRES_DB": name,
               "COMPRESSION": "zstd", "BACKUP_FORMAT": fmt, "LOG_LEVEL": "INFO"}
        result = cli(env, "backup")
        assert result.code == 0, result.output
        envs[fmt] = env
    yield envs
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def copying_into(pg: TempCluster, process: subprocess.Popen[str], scratch: str) -> None:
    """Wait until the restore's client tool is copying rows into the scratch database."""
    deadline = time.monotonic() + 120
    while pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{scratch}' AND query ILIKE 'COPY%'") == "0":
        assert process.poll() is None, f"the restore ended before it was interrupted: {process.communicate()}"
        assert time.monotonic() < deadline, "the restore never started copying"
        time.sleep(0.05)


def processes_naming(pg: TempCluster, text: str) -> dict[int, str]:
    """pid -> command line of the live processes that mention ``text`` (the restore's psql / pg_restore)
    and were started for ``pg`` (not those of another test run on the same machine)."""
    found = {}
    port = f"\0POSTGRES_PORT={pg.port}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environ = b"\0" + (entry / "environ").read_bytes()
            except OSError:
                continue
            if text in cmdline and port in environ:
                found[int(entry.name)] = cmdline
    return found


def pipes(pid: int, *, fds: tuple[str, ...] = ()) -> set[str]:
    """The pipes a process has open (only the descriptors ``fds``, if given)."""
    found = set()
    for fd in (Path(f"/proc/{pid}/fd").iterdir() if not fds else (Path(f"/proc/{pid}/fd/{n}") for n in fds)):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("pipe:"):
                found.add(target)
    return found


@contextlib.contextmanager
def held(pg: TempCluster, process: subprocess.Popen[str], scratch: str, fmt: str) -> Iterator[None]:
    """The restore frozen (SIGSTOP) while the test signals it, so that the signal surely lands
    before the restore could end, however loaded the machine is: a frozen restore still holds
    its client tool's input open (plain: psql can neither reach the end of its input nor
    commit), and when it thaws, the pending signal is handled before anything else it does."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        if fmt == "plain":
            tools = processes_naming(pg, scratch)
            assert tools, "the restore's psql is gone"
            assert any(pipes(pid, fds=("0",)) & pipes(process.pid) for pid in tools), \
                "the restore closed psql's input before it was signalled"
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` (processes and server sessions end asynchronously after the restore
    exited); the bound only keeps a broken run from hanging."""
    deadline = time.monotonic() + 300
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "to_group", "fmt", "mode"), [
    (signal.SIGTERM, False, "plain", "--clean"),
    (signal.SIGINT, False, "plain", "--create"),  # started as `cmd &` by a script: SIGINT inherited as ignored
    (signal.SIGINT, True, "plain", "--clean"),  # a terminal's Ctrl-C
    (signal.SIGTERM, True, "custom", "--clean"),  # systemd stopping the unit, pg_restore -j 2 at work
], ids=["SIGTERM-pid-plain", "SIGINT-pid-inherited-ignored", "SIGINT-group-plain", "SIGTERM-group-custom-jobs"])
def test_a_signal_stops_the_restore_and_leaves_the_target(pg: TempCluster, big_backups: dict[str, dict[str, str]],
                                                          new_db: str, signum: signal.Signals, to_group: bool,
                                                          fmt: str, mode: str) -> None:
    def ignore_sigint() -> None:  # what a non-interactive shell does for a background job
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    env = big_backups[fmt]
    target = f"{new_db}_sig"
    if mode == "--clean":
        with_marker(pg, target)
    scratch = f"{target}{SCRATCH}"
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    child.update(env)
    jobs = ["--jobs", "2"] if fmt == "custom" else []
    process = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "restore", "latest", "--target-db", target,
                                mode, *jobs], env=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               preexec_fn=ignore_sigint if signum == signal.SIGINT and not to_group else None)
    try:
        copying_into(pg, process, scratch)
        with held(pg, process, scratch, fmt):
            if to_group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=600)  # a hang guard, not a speed limit
    finally:
        reap(process)

    assert process.returncode == 130, stdout + stderr
    assert f"interrupted by {signum.name}" in stderr, stderr
    assert f"the scratch database {scratch} was dropped" in stderr
    assert "Restored" not in stdout and "Traceback" not in stderr
    assert not exists(pg, scratch)
    if mode == "--clean":
        assert still_old(pg, target), "the old target was changed"
        assert f"{target} holds what it held before the restore" in stderr
    else:
        assert not exists(pg, target) and f"{target} was not created" in stderr
    if fmt == "plain":  # psql was stopped, and waited for
        assert processes_naming(pg, scratch) == {}
    else:  # pg_restore was, and its workers (which it stops, not waits for) follow
        eventually(lambda: not processes_naming(pg, scratch), f"still running: {processes_naming(pg, scratch)}")
    eventually(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sentinel-backup'")
               == "0", "sessions of the restore are left")
    assert databases(pg, "__sentinel") == []

    if signum == signal.SIGINT and to_group:  # the next restore starts and completes
        again = cli(env, "restore", "latest", "--target-db", target, "--clean")
        assert again.code == 0, again.output
        assert_same_data(pg, env["POSTGRES_DB"], target)
    pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
