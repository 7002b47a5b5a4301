"""wal-receive: the WAL archive fed by streaming replication (``pg_receivewal``).

For servers whose ``archive_command`` cannot call this tool (PostgreSQL in a container) and
for a recovery point closer than one segment. ``pg_receivewal`` streams into a staging
folder through a replication slot (created when missing, so the server keeps WAL that was
not received yet); it writes ``<segment>.partial`` and renames it when the segment is
complete. Every completed file (segments, ``.history``) is pushed through the same path as
``wal-push`` and removed from staging only once it is durable on every destination.

The client tools run on this host (also in container mode: the replication connection goes
over POSTGRES_HOST/PORT). SIGTERM/SIGINT stop ``pg_receivewal`` (which flushes what it
received), push what is complete and exit 0; the ``.partial`` segment stays in staging and
``pg_receivewal`` resumes it on the next start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from sentinel_backup import log
from sentinel_backup.errors import ConfigError, SentinelError, SourceError
from sentinel_backup.model.layout import is_wal_name
from sentinel_backup.pg.source import Source, source_error

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings

_log = log.get("wal")
POLL_SECONDS = 1.0


def staging_dir(settings: Settings) -> Path:
    if settings.wal_receive_dir is not None:
        return settings.wal_receive_dir
    if settings.wal_spool_dir is not None:
        return settings.wal_spool_dir / "receive"
    return settings.backup_dir / ".wal-receive"


def _drain(proc: subprocess.Popen[bytes], tail: list[str]) -> None:
    """pg_receivewal's messages to the log (DEBUG), keeping the last ones for an error."""
    assert proc.stderr is not None
    for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        _log.debug("pg_receivewal: %s", line)
        tail.append(line)
        del tail[:-20]


class Receiver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = Source(settings)
        self.staging = staging_dir(settings)
        self.slot = settings.wal_receive_slot
        self._stop = threading.Event()
        self.system_id: str | None = None
        self.pushed = 0

    def _conn(self) -> list[str]:
        s = self.settings
        conn = ["-U", s.postgres_user]
        if s.postgres_host:
            conn += ["-h", s.postgres_host]
        if s.postgres_port:
            conn += ["-p", str(s.postgres_port)]
        return conn

    def _binary(self, tool: str) -> str:
        folder = self.settings.pg_bin_dir or self.source.matched_tools().bin_dir
        return str(folder / tool) if folder else tool

    def identify_system(self) -> str:
        """The server's system identifier over a replication connection (proves replication access)."""
        argv = [self._binary("psql"), *self._conn(), "-X", "-A", "-t", "-d", "dbname=postgres replication=true",
                "-c", "IDENTIFY_SYSTEM"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.source.env(), check=False)
        if proc.returncode != 0:
            raise source_error("psql (replication connection)", proc.stderr, proc.returncode)
        return proc.stdout.strip().split("|")[0]

    def create_slot(self) -> None:
        argv = [self._binary("pg_receivewal"), *self._conn(), "--slot", self.slot, "--create-slot", "--if-not-exists"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.source.env(), check=False)
        if proc.returncode != 0:
            raise source_error("pg_receivewal --create-slot", proc.stderr, proc.returncode)

    def push_completed(self) -> int:
        """Push every completed file in staging (name order), removing each once durable everywhere."""
        from sentinel_backup.private import fsync_dir
        from sentinel_backup.storage.registry import build_destinations
        from sentinel_backup.wal.push import push_file

        names = sorted(n for n in os.listdir(self.staging) if is_wal_name(n) and not n.endswith(".partial"))
        if not names:
            return 0
        destinations = build_destinations(self.settings)
        done = 0
        for name in names:
            path = self.staging / name
            push_file(self.settings, path, system_id=self.system_id, destinations=destinations)
            path.unlink()
            fsync_dir(self.staging)
            done += 1
        self.pushed += done
        return done

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def run(self, stop: threading.Event | None = None) -> int:
        """Receive until SIGTERM/SIGINT (or ``stop`` is set: then no signal handler is installed,
        as beside the scheduler, in a thread)."""
        if stop is not None:
            self._stop = stop
        try:
            self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the wal-receive staging folder {self.staging}: {exc.strerror}",
                              "set WAL_RECEIVE_DIR to a writable local folder") from None
        self.system_id = self.identify_system()
        self.create_slot()
        previous = {} if stop is not None else {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        argv = [self._binary("pg_receivewal"), *self._conn(), "-D", str(self.staging), "--slot", self.slot,
                "--no-password", "-v"]
        _log.info("wal-receive: streaming from the server (system identifier %s) through slot %s into %s",
                  self.system_id, self.slot, self.staging)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=self.source.env(), start_new_session=True)
        tail: list[str] = []
        drain = threading.Thread(target=_drain, args=(proc, tail), daemon=True)
        drain.start()
        try:
            self.push_completed()  # left from an earlier run
            while not self._stop.is_set():
                if proc.poll() is not None:
                    drain.join(timeout=5)
                    if proc.returncode == 0:  # stopped by someone else (systemd signals the whole group)
                        _log.info("pg_receivewal stopped")
                        break
                    raise source_error("pg_receivewal", "\n".join(tail[-5:]), proc.returncode)
                try:
                    self.push_completed()
                except SentinelError as exc:
                    _log.error("wal-receive: %s; retrying", exc.message)
                    self._stop.wait(5.0)
                self._stop.wait(POLL_SECONDS)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        try:
            self.push_completed()
        except SentinelError as exc:
            raise SourceError(f"wal-receive stopped; some received WAL is not archived yet: {exc.message}",
                              "it stays in the staging folder and is pushed on the next start") from None
        _log.info("wal-receive stopped; %d WAL file(s) archived", self.pushed)
        return 0


RESTART_PAUSE = 10.0


def run_beside(settings: Settings, stop: threading.Event) -> threading.Thread:
    """wal-receive in a thread beside the scheduler (WAL_RECEIVE_ENABLED): restarted after a
    pause when it fails (server restarted, network), stopped when ``stop`` is set."""

    def loop() -> None:
        while not stop.is_set():
            try:
                Receiver(settings).run(stop)
            except SentinelError as exc:
                _log.error("wal-receive failed: %s; restarting in %.0f s", exc.message, RESTART_PAUSE)
            except Exception as exc:  # the scheduler must go on whatever happens here
                _log.error("wal-receive failed: %s: %s; restarting in %.0f s", type(exc).__name__, exc,
                           RESTART_PAUSE)
            stop.wait(RESTART_PAUSE)

    thread = threading.Thread(target=loop, name="wal-receive", daemon=True)
    thread.start()
    return thread
