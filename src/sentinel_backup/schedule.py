"""The built-in schedule: ``sentinel-backup schedule`` runs jobs on cron expressions.

It runs in the foreground (a container's main process, a systemd service) and runs its
jobs (backup, prune, drill) one at a time, in the main thread. How it behaves:

- **Cron times** are five-field expressions (``minute hour day-of-month month
  day-of-week``) or a macro (``@hourly``, ``@daily``, ...), read in SCHEDULE_TIMEZONE.
  A job's first run is its first tick after the scheduler starts (as with cron, nothing
  runs at start-up).
- **Never two runs at once.** Jobs run one after another, and each holds the run lock
  (see ``lock``) so a cron-started ``sentinel-backup backup`` and the scheduler exclude
  each other. A job that finds the lock held by another process is skipped for that
  tick with a WARN log; it does not wait and is not retried before its next tick.
- **Missed ticks run once.** When a job's tick passes while another job runs, it runs
  as soon as that job has finished, once however many of its ticks passed. A job's next
  tick is the first one after its own run *finished*, so a job that overruns its interval
  (an hourly backup taking 90 minutes) skips its own missed ticks instead of running
  back to back.
- **Daylight saving time.** A tick in the hour skipped in spring runs at the first
  moment after it; a wall-clock time repeated in autumn runs once, not twice.
- **Stopping.** SIGTERM or SIGINT asks the scheduler to stop. While idle it exits at
  once. While a job runs, the job's ``stop_event`` (a ``threading.Event`` passed to every
  job) is set: the job is expected to abort cleanly (a backup kills pg_dump and removes
  its partial files) and return; then the scheduler exits 0 without starting anything
  else. A job that raises (or returns a non-zero exit code) is logged as failed and the
  schedule goes on.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from sentinel_backup.errors import EXIT_OK, BackupFailed, ConfigError, SentinelError
from sentinel_backup.lock import run_lock

log = logging.getLogger(__name__)

JobAction = Callable[[threading.Event], object]
"""A job: called with the stop event, which it must watch to abort early. It reports a
failure by raising, or by returning a non-zero exit code (an ``int``); other return
values are ignored."""

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
POLL_SECONDS = 1.0  # longest idle sleep: a clock change (suspend, NTP step) is noticed this quickly


@dataclass(frozen=True)
class Job:
    """A named action on a cron expression. ``variable`` (e.g. BACKUP_SCHEDULE) is named in errors.
    ``lock_folder``: the folder whose run lock the job runs under, when not the scheduler's own
    (one scheduler for several servers: each job takes its server's BACKUP_DIR lock)."""

    name: str
    cron: str
    action: JobAction
    variable: str = "schedule"
    lock_folder: Path | None = None


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"  # the job raised or returned a non-zero exit code
    SKIPPED = "skipped"  # another process held the run lock


@dataclass(frozen=True)
class JobRun:
    """What happened to one due job."""

    name: str
    scheduled: datetime
    outcome: Outcome


def validate_cron(expression: str, variable: str) -> str:
    """The normalised expression, or ConfigError naming ``variable`` with an example."""
    normal = " ".join(expression.split())
    fields = normal.split(" ")
    valid = normal.lower() in MACROS or (len(fields) == 5 and croniter.is_valid(normal))
    if not valid:
        raise ConfigError(
            f"{variable}: {expression!r} is not a cron expression",
            f'use five fields "minute hour day-of-month month day-of-week", e.g. {variable}="0 3 * * *" '
            f"for every day at 03:00, or a macro such as @daily or @hourly",
        )
    return normal.lower() if normal.lower() in MACROS else normal


def load_timezone(name: str, variable: str = "SCHEDULE_TIMEZONE") -> ZoneInfo:
    """The IANA time zone ``name``, or ConfigError naming ``variable``."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{variable}: unknown time zone {name!r}",
                          f"use an IANA name such as UTC or Europe/Berlin, e.g. {variable}=UTC") from None


@dataclass
class _Entry:
    job: Job
    order: int
    due: datetime
    last_due: datetime | None = None


class Scheduler:
    """Runs jobs on their cron ticks, one at a time, each under the run lock of ``lock_folder``.

    ``now`` and ``sleep`` are injectable for tests; ``now`` must return aware datetimes.
    The default ``sleep`` waits on the stop event, so an idle scheduler stops at once.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        lock_folder: Path,
        timezone: ZoneInfo | str = "UTC",
        now: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not jobs:
            raise ConfigError("nothing to schedule", 'set BACKUP_SCHEDULE, e.g. BACKUP_SCHEDULE="0 3 * * *"')
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self.stop_event = threading.Event()
        self._stop_requested = False  # a plain flag: the only state a signal handler touches directly
        self._lock_folder = lock_folder
        self._tz = load_timezone(timezone) if isinstance(timezone, str) else timezone
        self._now = now or (lambda: datetime.now(UTC))
        self._sleep = sleep or self._wait
        checked = [Job(j.name, validate_cron(j.cron, j.variable), j.action, j.variable) for j in jobs]
        start = self._clock()
        self._entries = [_Entry(job, order, start) for order, job in enumerate(checked)]
        for entry in self._entries:
            entry.due = self._next_after(entry, start)

    # --- public -------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop_requested or self.stop_event.is_set()

    def next_runs(self) -> dict[str, datetime]:
        """Each job's next tick, in the schedule's time zone."""
        return {entry.job.name: entry.due for entry in self._entries}

    def request_stop(self) -> None:
        """Stop after the running job (if any) has returned; the job sees ``stop_event`` set."""
        self._stop_requested = True
        self.stop_event.set()

    def run_pending(self) -> list[JobRun]:
        """Run every job that is due, earliest tick first (declaration order on ties).

        Jobs that fall due while another runs are run too, once each, before returning.
        """
        runs: list[JobRun] = []
        while not self.stopping:
            now = self._clock()
            due = [entry for entry in self._entries if entry.due <= now]
            if not due:
                break
            entry = min(due, key=lambda e: (e.due, e.order))
            runs.append(self._run(entry))
        return runs

    def run_forever(self) -> int:
        """Run jobs until SIGTERM/SIGINT (or ``request_stop``); returns the exit code (0)."""
        with self._signal_handlers():
            for name, due in self.next_runs().items():
                log.info("scheduled %s: next run %s", name, due.isoformat())
            while not self.stopping:
                self.run_pending()
                if self.stopping:
                    break
                soonest = min(entry.due for entry in self._entries)
                wait = (soonest - self._clock()).total_seconds()
                self._sleep(min(max(wait, 0.0), POLL_SECONDS))
        log.info("scheduler stopped")
        return EXIT_OK

    # --- running one job ------------------------------------------------------------
    def _run(self, entry: _Entry) -> JobRun:
        scheduled = entry.due
        entry.last_due = scheduled
        try:
            outcome = self._attempt(entry.job, scheduled)
        finally:
            entry.due = self._next_after(entry, self._clock())
        log.info("%s %s; next run %s", entry.job.name, outcome.value, entry.due.isoformat())
        return JobRun(entry.job.name, scheduled, outcome)

    def _attempt(self, job: Job, scheduled: datetime) -> Outcome:
        """Run ``job`` under the run lock; failures are logged, not raised."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(run_lock(job.lock_folder or self._lock_folder))
            except BackupFailed as exc:
                log.warning("%s skipped (due %s): %s", job.name, scheduled.isoformat(), exc)
                return Outcome.SKIPPED
            log.info("%s started (due %s)", job.name, scheduled.isoformat())
            try:
                result = job.action(self.stop_event)
            except SentinelError as exc:
                log.error("%s failed: %s", job.name, exc.describe())
                return Outcome.FAILED
            except Exception:
                log.exception("%s failed unexpectedly", job.name)
                return Outcome.FAILED
        if isinstance(result, int) and not isinstance(result, bool) and result != EXIT_OK:
            log.error("%s finished with exit code %d", job.name, result)
            return Outcome.FAILED
        return Outcome.OK

    def _next_after(self, entry: _Entry, moment: datetime) -> datetime:
        ticks = croniter(entry.job.cron, moment.astimezone(self._tz))
        following: datetime = ticks.get_next(datetime)
        last = entry.last_due
        if last is not None and following.replace(tzinfo=None) == last.replace(tzinfo=None):
            following = ticks.get_next(datetime)  # the autumn DST change repeats a wall-clock time
        return following

    def _clock(self) -> datetime:
        moment = self._now()
        if moment.tzinfo is None:
            raise ValueError("the scheduler's clock must return aware datetimes")
        return moment

    def _wait(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    # --- signals --------------------------------------------------------------------
    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """SIGTERM/SIGINT request a stop while installed (main thread only; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the main thread, which may hold the
        # stop event's internal lock (inside Event.wait): setting the event here could
        # deadlock, so a short-lived thread sets it (and logs) once the handler has returned.
        again = self._stop_requested
        self._stop_requested = True
        threading.Thread(target=self._announce_stop, args=(signal.Signals(signum).name, again),
                         name="sentinel-stop", daemon=True).start()

    def _announce_stop(self, signame: str, again: bool) -> None:
        if again:
            log.warning("%s again: still stopping, waiting for the running job to return", signame)
        else:
            log.info("%s received: stopping after the running job (if any) has returned", signame)
        self.stop_event.set()
