"""A client tool's child process: its stderr drained in a thread and, when it failed, turned
into one SourceError with the tool's own words and a hint when the cause is recognised."""

from __future__ import annotations

import subprocess
import threading

from sentinel_backup.errors import SourceError

_HINTS = (
    ("lock timeout", "another session holds a conflicting lock: find it (pg_stat_activity, pg_blocking_pids) and "
                     "end it or let it finish, or raise LOCK_WAIT_TIMEOUT (0 waits forever)"),
    ("password authentication failed",
     "check POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE (or ~/.pgpass) for POSTGRES_USER"),
    ("no password supplied", "set POSTGRES_PASSWORD_FILE or add the user to ~/.pgpass"),
    ("does not exist", "check POSTGRES_DB and POSTGRES_USER: the name must exist on the server"),
    ("Connection refused", "check that the server runs and POSTGRES_HOST / POSTGRES_PORT point at it"),
    ("could not translate host name", "check POSTGRES_HOST"),
    ("timeout expired", "the server did not answer: check POSTGRES_HOST / POSTGRES_PORT and firewalls"),
    ("No such container", "check POSTGRES_CONTAINER (docker ps shows the running containers)"),
    ("permission denied", "grant POSTGRES_USER read access to everything dumped, or use a superuser"),
    ("server version mismatch", "use a pg_dump at least as new as the server (PG_BIN_DIR), or POSTGRES_CONTAINER"),
)


def source_error(tool: str, stderr: str, code: int | None) -> SourceError:
    """A SourceError carrying the tool's own error text and a hint when we recognise it."""
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip()) or "no error text"
    hint = next((h for needle, h in _HINTS if needle.lower() in text.lower()), None)
    status = f"exit code {code}" if code is not None and code >= 0 else f"killed by signal {-(code or 0)}"
    return SourceError(f"{tool} failed ({status}): {text}", hint)


class StderrCollector:
    """Drains a child's stderr in a thread (so it can never block the child) and keeps it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if sum(map(len, self.chunks)) < 64 * 1024:
                self.chunks.append(line)

    def join(self) -> None:
        self.thread.join(timeout=30)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def finish_tool(proc: subprocess.Popen[bytes], tool: str) -> None:
    """Wait for a client tool whose stdout needs nothing (pg_restore -j from a file or folder):
    its stderr kept, the tool stopped if the wait is interrupted (its workers' sessions end with
    the scratch database, DROP ... FORCE), SourceError with its own text when it failed."""
    from sentinel_backup.interrupt import stop_children
    errors = StderrCollector(proc)
    try:
        code = proc.wait()
    except BaseException:
        stop_children([proc])
        raise
    finally:
        errors.join()
    if code != 0:
        raise source_error(tool, errors.text(), code)
