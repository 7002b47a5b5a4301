"""The scheduler as a real process: two due jobs, SIGTERM mid-job, clean exit, lock released."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import reap
from tests.unit.test_lock import probe

# A scheduler whose clock starts half a second before 03:00, so both jobs fall due at once.
# "backup" writes a partial file and keeps writing until its stop event is set, then
# removes it, as the real backup removes its partial artifact.
SCRIPT = """
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel_backup.schedule import Job, Scheduler

folder, mode = Path(sys.argv[1]), sys.argv[2]
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
base, t0 = datetime(2024, 5, 1, 2, 59, 59, 500000, tzinfo=UTC), time.monotonic()


def now():
    return base + timedelta(seconds=time.monotonic() - t0)


def backup(stop):
    partial = folder / ".sentinel_backup_shop_20240501T030000Z.sql.gz.partial"
    with partial.open("wb") as out:
        out.write(b"-- partial dump")
        out.flush()
        (folder / "backup-started").write_text("")
        while mode == "slow" and not stop.wait(0.05):
            out.write(b".")
    partial.unlink()
    (folder / ("backup-aborted" if stop.is_set() else "backup-done")).write_text("")


def prune(stop):
    (folder / "prune-done").write_text("")


jobs = [Job("backup", "0 3 * * *", backup, "BACKUP_SCHEDULE"), Job("prune", "0 3 * * *", prune, "PRUNE_SCHEDULE")]
sys.exit(Scheduler(jobs, lock_folder=folder, now=now).run_forever())
"""


def start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "scheduler.py"
    script.write_text(SCRIPT)
    work = tmp_path / "backups"
    work.mkdir()
    return subprocess.Popen([sys.executable, str(script), str(work), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    """Until ``path`` exists; fails if the process exits first or nothing happens for a minute."""
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, f"scheduler exited early: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_backup_removes_the_partial_file_and_exits_0(tmp_path: Path, signum: signal.Signals) -> None:
    process = start(tmp_path, "slow")
    work = tmp_path / "backups"
    try:
        wait_for(work / "backup-started", process)
        assert list(work.glob("*.partial"))
        assert probe(work).returncode == 1  # the running job holds the run lock

        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        reap(process)

    assert process.returncode == 0, stderr
    assert f"{signum.name} received" in stderr
    assert (work / "backup-aborted").exists()
    assert not list(work.glob("*.partial"))
    assert not (work / "prune-done").exists()  # nothing new starts once stopping
    assert probe(work).returncode == 0  # another process can take the lock


def test_two_due_jobs_run_in_order_then_sigterm_while_idle_exits_0(tmp_path: Path) -> None:
    process = start(tmp_path, "quick")
    work = tmp_path / "backups"
    try:
        wait_for(work / "prune-done", process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        reap(process)

    assert process.returncode == 0, stderr
    assert (work / "backup-done").exists()
    assert stderr.index("backup started") < stderr.index("backup ok") < stderr.index("prune started")
    assert not list(work.glob("*.partial"))
    assert probe(work).returncode == 0
