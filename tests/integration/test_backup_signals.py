"""SIGTERM/SIGINT during a backup, as real signals to the real program (a child process).

Whatever phase the signal hits — pg_dump streaming, pg_dump stalled on a lock held by
another session, the snapshot's row counts stalled the same way, an S3 multipart upload,
waiting for the run lock — the run must stop within a few seconds, exit 130, commit
nothing (no manifest, no partial file, no upload left open), end its server sessions, and
leave nothing that stops the next backup. The signal goes either to the process alone or
to its whole process group (as a terminal's Ctrl-C or systemd's KillMode=control-group
do), where pg_dump and psql receive it too and die first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import big_database, cli, reap
from tests.plugins.s3 import WeedServer
from tests.unit.test_lock import lock_held_elsewhere, probe

STOP_BOUND = 15.0  # "stops within a few seconds", generously
APP = "sentinel-backup"


@pytest.fixture(scope="module")
def big_db(pg: TempCluster) -> Iterator[str]:
    """About 75 MB of dump: several seconds of pg_dump, so a signal lands mid-dump."""
    name = big_database(pg, "signals_big", 600_000)
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def start(env: dict[str, str], *, group: bool) -> subprocess.Popen[str]:
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "S3_", "MINIO_", "PG"))}
    child.update(env)
    return subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup"], env=child, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=group)


def send(proc: subprocess.Popen[str], signum: int, *, group: bool) -> float:
    """Signal the run (or its whole process group); returns when it was sent."""
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    return time.monotonic()


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the backup ended (exit {proc.returncode}) before {what}:\n{out}{err}")
        assert time.monotonic() < deadline, f"not seen within {timeout} s: {what}"
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str], sent: float) -> tuple[int, str, float]:
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    return proc.returncode, out + (err or ""), time.monotonic() - sent


def files(folder: Path) -> list[str]:
    """Everything in BACKUP_DIR except the run lock and the last-run record."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in (".sentinel-backup.lock",
                                                                     ".sentinel-last-run.json"))


def our_sessions(pg: TempCluster) -> list[str]:
    """Server sessions the tool opened (pg_dump, psql), a few moments after it exited."""
    sql = f"SELECT coalesce(string_agg(pid || ':' || state || ':' || query, ' | '), '') FROM pg_stat_activity " \
          f"WHERE application_name = '{APP}'"
    deadline = time.monotonic() + 3  # a backend whose client has gone needs a moment to notice
    while (left := pg.psql(sql)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [s for s in left.split(" | ") if s]


def connect(pg: TempCluster, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host=str(pg.socket_dir), port=pg.port, user=pg.user, dbname=database)


def waiting_on_lock(pg: TempCluster, query_part: str) -> Callable[[], bool]:
    """True once a session of the tool waits on a lock, running a query that contains ``query_part``."""
    def check() -> bool:
        return pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}' "
                       f"AND wait_event_type = 'Lock' AND query LIKE '%{query_part}%'") != "0"
    return check


def assert_interrupted(code: int, output: str, seconds: float, signum: int) -> None:
    assert code == 130, output
    assert seconds < STOP_BOUND, f"took {seconds:.1f} s to stop"
    assert f"interrupted by {signal.Signals(signum).name}" in output, output
    assert "pg_dump failed" not in output and "psql failed" not in output, output
    assert "Traceback" not in output, output


def assert_next_backup_works(env: dict[str, str], database: str) -> None:
    env = {**env, "POSTGRES_DB": database}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    listed = cli(env, "list", "--json")
    assert [item["database"] for item in listed.json()] == [database], listed.output


@pytest.mark.parametrize("group", [False, True], ids=["pid", "group"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_dump_stops_at_once_and_commits_nothing(pg: TempCluster, big_db: str, new_db: str,
                                                           base_env: dict[str, str], signum: int,
                                                           group: bool) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    proc = start({**base_env, "POSTGRES_DB": big_db}, group=group)
    wait_until(lambda: any(n.endswith(".partial") and (folder / n).stat().st_size > 1 << 20 for n in files(folder)),
               proc, "the dump was under way")
    code, output, seconds = finish(proc, send(proc, signum, group=group))

    assert_interrupted(code, output, seconds, signum)
    assert files(folder) == []  # no manifest, no artifact, no partial file
    assert our_sessions(pg) == []
    assert probe(folder).returncode == 0  # the run lock is free
    if group and signum == signal.SIGTERM:  # once is enough (each costs a run)
        assert_next_backup_works(base_env, new_db)


@pytest.mark.parametrize("group", [False, True], ids=["pid", "group"])
def test_sigterm_while_pg_dump_waits_on_a_lock(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                               group: bool) -> None:
    # The parent alone is locked: the snapshot's row counts read the partition, pg_dump's
    # LOCK TABLE of the parent then waits behind the other session, producing no output.
    pg.psql("CREATE TABLE m (id int) PARTITION BY RANGE (id);"
            "CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (1000);"
            "INSERT INTO m SELECT generate_series(0, 999)", new_db)
    folder = Path(base_env["BACKUP_DIR"])
    with connect(pg, new_db) as other:
        other.execute("LOCK TABLE ONLY m IN ACCESS EXCLUSIVE MODE")
        proc = start({**base_env, "POSTGRES_DB": new_db}, group=group)
        wait_until(waiting_on_lock(pg, "LOCK TABLE"), proc, "pg_dump waited on the lock")
        code, output, seconds = finish(proc, send(proc, signal.SIGTERM, group=group))
        assert_interrupted(code, output, seconds, signal.SIGTERM)
        assert our_sessions(pg) == []  # while the other session still holds its lock
        other.rollback()
    assert files(folder) == []
    if group:
        assert_next_backup_works(base_env, new_db)


@pytest.mark.parametrize("group", [False, True], ids=["pid", "group"])
def test_sigterm_while_the_row_counts_wait_on_a_lock(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                                     group: bool) -> None:
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id", new_db)
    folder = Path(base_env["BACKUP_DIR"])
    with connect(pg, new_db) as other:
        other.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        proc = start({**base_env, "POSTGRES_DB": new_db}, group=group)
        wait_until(waiting_on_lock(pg, "LOCK TABLE"), proc, "the snapshot session waited on the lock")
        code, output, seconds = finish(proc, send(proc, signal.SIGTERM, group=group))
        assert_interrupted(code, output, seconds, signal.SIGTERM)
        # With a group signal psql dies at once, but its server session would go on waiting
        # for the lock, unaware: the run must end it.
        assert our_sessions(pg) == []
        other.rollback()
    assert files(folder) == []
    if group:
        assert_next_backup_works(base_env, new_db)


def test_sigterm_mid_multipart_upload_aborts_it(pg: TempCluster, big_db: str, new_db: str,
                                                base_env: dict[str, str], s3_server: WeedServer,
                                                s3_bucket: str, tmp_path: Path) -> None:
    env = {**base_env, "POSTGRES_DB": big_db, "LOCAL_ENABLED": "false", "COMPRESSION": "none",
           **s3_server.s3_env(s3_bucket, "pg"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    client = s3_server.client()
    proc = start(env, group=False)
    wait_until(lambda: bool(client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")), proc,
               "a multipart upload started")
    code, output, seconds = finish(proc, send(proc, signal.SIGTERM, group=False))

    assert_interrupted(code, output, seconds, signal.SIGTERM)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []
    assert our_sessions(pg) == []
    assert_next_backup_works(env, new_db)


# Waits for a run lock another process holds, stoppable, as a command would.
WAITER = """
import sys
from pathlib import Path
from sentinel_backup.errors import SentinelError
from sentinel_backup.interrupt import Stopper, signal_stop
from sentinel_backup.lock import run_lock

print("waiting", flush=True)
try:
    with signal_stop(Stopper()) as stopper, run_lock(Path(sys.argv[1]), wait=True, stop=stopper):
        print("got the lock", flush=True)
except SentinelError as exc:
    print(exc.message, flush=True)
    sys.exit(exc.exit_code)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_wait_for_the_run_lock(tmp_path: Path, signum: int) -> None:
    with lock_held_elsewhere(tmp_path):
        proc = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
            time.sleep(0.5)  # inside the wait (there is nothing to observe from outside)
            assert proc.poll() is None, "the waiter did not wait"
            code, output, seconds = finish(proc, send(proc, signum, group=False))
        finally:
            reap(proc)
    assert code == 130, output
    assert seconds < STOP_BOUND
    assert f"waiting for the run lock was interrupted by {signal.Signals(signum).name}" in output


def test_a_second_backup_does_not_wait_for_the_run_lock(pg: TempCluster, new_db: str,
                                                        base_env: dict[str, str]) -> None:
    folder = Path(base_env["BACKUP_DIR"])
    with lock_held_elsewhere(folder) as holder:
        result = cli({**base_env, "POSTGRES_DB": new_db}, "backup", timeout=STOP_BOUND)
    assert result.code == 1, result.output
    assert f"another sentinel-backup run (pid {holder.pid}) is in progress" in result.output
    assert files(folder) == []
