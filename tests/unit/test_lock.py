"""lock: one run per folder across real processes; released when the holder dies."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sentinel_backup.errors import BackupFailed
from sentinel_backup.lock import LOCK_NAME, holder_pid, run_lock

# Takes the lock, says so, and holds it until its stdin closes (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from sentinel_backup.lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""

# Tries to take the lock without waiting; exit 0 if it got it, 1 if busy.
PROBE = """
import sys
from pathlib import Path
from sentinel_backup.errors import BackupFailed
from sentinel_backup.lock import run_lock
try:
    with run_lock(Path(sys.argv[1])):
        pass
except BackupFailed as exc:
    print(exc)
    sys.exit(1)
"""


@contextmanager
def lock_held_elsewhere(folder: Path) -> Iterator[subprocess.Popen[str]]:
    """A second process holding the run lock of ``folder`` for the ``with`` block."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        if holder.poll() is None:
            assert holder.stdin is not None
            holder.stdin.close()
        holder.wait(timeout=30)


def probe(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, timeout=30)


def test_lock_held_by_another_process_is_refused_with_its_pid(tmp_path: Path) -> None:
    with lock_held_elsewhere(tmp_path) as holder, pytest.raises(BackupFailed) as info, run_lock(tmp_path):
        pytest.fail("took a lock another process holds")
    assert str(info.value) == f"another sentinel-backup run (pid {holder.pid}) is in progress"
    assert info.value.hint is not None and LOCK_NAME in info.value.hint


def test_lock_is_free_again_after_the_holder_finishes(tmp_path: Path) -> None:
    with lock_held_elsewhere(tmp_path):
        pass
    with run_lock(tmp_path) as path:
        assert path == tmp_path / LOCK_NAME


def test_a_killed_holder_never_blocks_the_next_run(tmp_path: Path) -> None:
    with lock_held_elsewhere(tmp_path) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with run_lock(tmp_path):
            assert holder_pid(tmp_path) == os.getpid()


def test_other_processes_are_excluded_while_held_here(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        busy = probe(tmp_path)
        assert busy.returncode == 1
        assert f"(pid {os.getpid()})" in busy.stdout
    assert probe(tmp_path).returncode == 0


def test_lock_file_is_private_and_names_the_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert f"pid={os.getpid()}\n" in text
        assert "started=" in text and "host=" in text
    assert path.read_text() == ""  # no stale pid once released
    assert holder_pid(tmp_path) is None


def test_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with run_lock(tmp_path), run_lock(tmp_path):
        assert probe(tmp_path).returncode == 1
    # released only when the outermost block ends
    assert probe(tmp_path).returncode == 0


def test_inner_release_keeps_the_outer_lock(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with run_lock(tmp_path):
            pass
        assert probe(tmp_path).returncode == 1


def test_wait_blocks_until_the_holder_releases(tmp_path: Path) -> None:
    acquired = threading.Event()
    with lock_held_elsewhere(tmp_path) as holder:
        def waiter() -> None:
            with run_lock(tmp_path, wait=True):
                acquired.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        assert not acquired.wait(0.3)  # still held by the other process
        assert holder.stdin is not None
        holder.stdin.close()
        thread.join(timeout=30)
    assert acquired.is_set()


def test_missing_folder_is_created_private(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    with run_lock(folder):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BackupFailed, match="cannot open the run lock") as info, run_lock(blocker):
        pass
    assert info.value.hint
