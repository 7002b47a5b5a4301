"""The restored copy started as a temporary server: private socket folder, no TCP, until recovery ended.

``pg_ctl -w`` returns when the server accepts connections (consistent, hot standby) or fails;
then the server is asked until it left recovery (promoted), paused at the target, or shut
down at the target (``recovery_target_action``). What it reached is read from
``pg_last_wal_replay_lsn()`` and ``pg_last_xact_replay_timestamp()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_backup.config import Settings
from sentinel_backup.errors import RestoreFailed

if TYPE_CHECKING:
    from sentinel_backup.physical.restore import PhysicalResult


class TemporaryServer:
    """The restored copy started on a private socket folder (no TCP) until recovery ended."""

    def __init__(self, bin_dir: Path, pgdata: Path, port: int, owner: tuple[int, int] | None,
                 settings: Settings) -> None:
        self.bin_dir, self.pgdata, self.port, self.owner, self.settings = bin_dir, pgdata, port, owner, settings
        self.run_as = ["runuser", "-u", "postgres", "--"] if owner is not None else []
        self.socket = Path(tempfile.mkdtemp(prefix="sentinel-restore-sock-"))
        os.chmod(self.socket, 0o755)
        if owner is not None:
            os.chown(self.socket, *owner)
        self.log = pgdata / "sentinel-restore.log"

    def recover(self, result: PhysicalResult, keep_running: bool) -> None:
        options = f"-p {self.port} -c listen_addresses='' -c unix_socket_directories='{self.socket}'"
        t0 = time.monotonic()
        try:
            # -w: until the server accepts connections (consistent, hot standby) or recovery ended;
            # no time limit of our own: recovery takes as long as the WAL to replay
            self._pg_ctl("-D", str(self.pgdata), "-l", str(self.log), "-o", options, "-w", "-t", "31536000",
                         "start")
        except RestoreFailed as exc:
            if not self._shut_down_at_target():
                failed = self._failed()
                raise RestoreFailed(f"{exc.message}; {failed.message}", failed.hint) from None
        try:
            result.state = self._wait()
            result.recovery_seconds = time.monotonic() - t0
            if result.state != "shut down":
                row = self._sql("SELECT coalesce(pg_last_wal_replay_lsn()::text, '') || '|' ||"
                                " coalesce(pg_last_xact_replay_timestamp()::text, '')")
                lsn, _, moment = row.partition("|")
                result.reached_lsn, result.reached_time = lsn or None, moment or None
        except BaseException:
            self.stop()
            raise
        if keep_running and result.state != "shut down":
            result.start_command = (f"running on port {self.port}, socket folder {self.socket}; stop it with "
                                    f"pg_ctl -D {self.pgdata} stop")
        else:
            self.stop()

    def _wait(self) -> str:
        while True:
            if not self._running():
                if self._shut_down_at_target():
                    return "shut down"
                raise self._failed()
            try:
                state = self._sql("SELECT CASE WHEN pg_is_in_recovery() THEN 'true|' ||"
                                  " pg_get_wal_replay_pause_state() ELSE 'false|' END")
            except RestoreFailed:
                time.sleep(0.3)
                continue
            recovering, _, paused = state.partition("|")
            if recovering == "false":
                return "promoted"
            if paused == "paused":
                return "paused"
            time.sleep(0.3)

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _shut_down_at_target(self) -> bool:
        return not self._running() and "shutdown at recovery target" in self._log_text()

    def _failed(self) -> RestoreFailed:
        tail = " | ".join(line for line in self._log_text().splitlines()[-6:] if line.strip())
        return RestoreFailed(f"the restored server stopped during recovery: {tail}",
                             f"read {self.log}; a missing WAL segment or a target that was never reached"
                             " ends recovery")

    def _running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _sql(self, sql: str) -> str:
        env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
        password = self.settings.password()
        if password is not None:
            env["PGPASSWORD"] = password
        proc = subprocess.run([str(self.bin_dir / "psql"), "-X", "-A", "-t", "-h", str(self.socket), "-p",
                               str(self.port), "-U", self.settings.postgres_user, "-d", "postgres", "-c", sql],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RestoreFailed(f"psql on the restored server failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def _pg_ctl(self, *args: str) -> None:
        proc = subprocess.run([*self.run_as, str(self.bin_dir / "pg_ctl"), *args], capture_output=True, text=True,
                              check=False, cwd=self.pgdata)
        if proc.returncode != 0:
            raise RestoreFailed(f"pg_ctl {args[-1]} failed: {proc.stderr.strip() or proc.stdout.strip()}",
                                f"read {self.log}")

    def stop(self) -> None:
        if self._running():
            with contextlib.suppress(RestoreFailed):
                self._pg_ctl("-D", str(self.pgdata), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.socket, ignore_errors=True)
