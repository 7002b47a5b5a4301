"""`sentinel-backup schedule` as a real process against a real PostgreSQL.

One test only, since a cron minute is the finest step: BACKUP_SCHEDULE and PRUNE_SCHEDULE
are both "* * * * *", so two jobs fall due at the first minute boundary. The program is the real
``sentinel-backup schedule``; only its scheduler's clock runs ahead, so that the first minute
boundary is a second away (not up to 60 s).
The backup covers a small database, then a large one; SIGTERM arrives while the large one
is being dumped. The small backup stays, no partial file remains, prune never starts,
the scheduler exits 0 and the run lock is free.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import big_database, cli, reap
from tests.unit.test_lock import probe


@pytest.fixture
def big_db(pg: TempCluster) -> Iterator[str]:
    """Large enough (about 100 MB of dump) that its dump is still running when SIGTERM comes."""
    name = big_database(pg, "schedule_big", 800_000)
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


# The real program (python -m sentinel_backup schedule) with the scheduler's clock shifted so that the
# next minute boundary is one second away; everything else (jobs, dumps, lock, signals) is as it is.
SHIFTED = """
import runpy
import sys
from datetime import UTC, datetime, timedelta

from sentinel_backup import schedule

original = schedule.Scheduler.__init__


def shifted(self, jobs, **kwargs):
    start = datetime.now(UTC)  # when the scheduler starts, not when this script did
    shift = timedelta(minutes=1) - timedelta(seconds=start.second, microseconds=start.microsecond)
    shift -= timedelta(seconds=1)
    kwargs.setdefault("now", lambda: datetime.now(UTC) + shift)
    original(self, jobs, **kwargs)


schedule.Scheduler.__init__ = shifted
sys.argv = ["sentinel-backup", "schedule"]
runpy.run_module("sentinel_backup", run_name="__main__", alter_sys=True)
"""


def partials(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.endswith(".partial")]


@pytest.mark.slow
def test_schedule_runs_a_backup_and_stops_cleanly_on_sigterm_mid_dump(pg: TempCluster, new_db: str, big_db: str,
                                                                       base_env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g", new_db)
    folder = Path(base_env["BACKUP_DIR"])
    env = {**base_env, "POSTGRES_DB": f"{new_db},{big_db}", "BACKUP_SCHEDULE": "* * * * *",
           "PRUNE_SCHEDULE": "* * * * *", "RETENTION_KEEP_LAST": "1", "MIN_BACKUP_SIZE": "0"}
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    child.update(env)
    process = subprocess.Popen([sys.executable, "-c", SHIFTED], env=child,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120  # a safety net: the first tick is a second away
        # The small database's backup is committed and the large one's dump is under way.
        while not (list(folder.glob(f"sentinel_backup_{new_db}_*.manifest.json")) and folder.is_dir()
                   and any(big_db in name for name in partials(folder))):
            assert process.poll() is None, f"the scheduler exited: {process.communicate()[0]}"
            assert time.monotonic() < deadline, "no backup was in progress within two minutes"
            time.sleep(0.05)
        assert probe(folder).returncode == 1  # the running job holds the run lock
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        reap(process)

    assert process.returncode == 0, output
    assert "SIGTERM received" in output
    assert "backup started" in output and "prune started" not in output  # nothing new starts once stopping
    assert partials(folder) == []
    assert not [name for name in os.listdir(folder) if big_db in name]  # no trace of the interrupted dump
    assert probe(folder).returncode == 0  # the lock is free again

    listed = cli(env, "list", "--json").json()
    assert [(item["database"], item["kind"]) for item in listed] == [(new_db, "database")]
    last_run = json.loads((folder / ".sentinel-last-run.json").read_text())
    assert last_run["status"] == "failed"
    assert last_run["databases"][new_db]["ok"] is True
    assert last_run["databases"][big_db]["ok"] is False and "interrupted" in last_run["databases"][big_db]["error"]
