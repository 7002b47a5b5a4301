"""schedule: cron ticks with a fake clock, one job at a time, the run lock, stopping."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sentinel_backup.errors import BackupFailed, ConfigError
from sentinel_backup.lock import run_lock
from sentinel_backup.schedule import Job, JobRun, Outcome, Scheduler, load_timezone, validate_cron
from tests.unit.test_lock import lock_held_elsewhere

START = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)  # a Wednesday


class FakeClock:
    """``now`` and ``sleep`` for the scheduler: sleeping just moves the clock."""

    def __init__(self, start: datetime = START) -> None:
        self.moment = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.moment += timedelta(seconds=seconds)


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 5, day, hour, minute, tzinfo=UTC)


def recorder(log: list[tuple[str, datetime]], name: str, clock: FakeClock, *, takes: timedelta = timedelta()
             ) -> Callable[[threading.Event], None]:
    """A job that notes when it ran, then takes ``takes`` of fake time."""
    def action(stop: threading.Event) -> None:
        log.append((name, clock()))
        clock.moment += takes
    return action


def make(tmp_path: Path, clock: FakeClock, *jobs: Job, timezone: str = "UTC") -> Scheduler:
    return Scheduler(jobs, lock_folder=tmp_path, timezone=timezone, now=clock, sleep=clock.sleep)


def outcomes(runs: list[JobRun]) -> list[tuple[str, Outcome]]:
    return [(run.name, run.outcome) for run in runs]


# --- ticks and order ------------------------------------------------------------------
def test_two_jobs_due_at_the_same_tick_run_in_declaration_order(tmp_path: Path) -> None:
    clock, ran = FakeClock(), []
    scheduler = make(tmp_path, clock,
                     Job("backup", "0 3 * * *", recorder(ran, "backup", clock, takes=timedelta(minutes=5))),
                     Job("prune", "0 3 * * *", recorder(ran, "prune", clock)))
    assert scheduler.run_pending() == []  # nothing runs at start-up

    clock.moment = at(3)
    runs = scheduler.run_pending()

    assert outcomes(runs) == [("backup", Outcome.OK), ("prune", Outcome.OK)]
    assert ran == [("backup", at(3)), ("prune", at(3, 5))]
    assert [run.scheduled for run in runs] == [at(3), at(3)]
    assert scheduler.next_runs() == {"backup": at(3, day=2), "prune": at(3, day=2)}


def test_earlier_tick_runs_first_whatever_the_declaration_order(tmp_path: Path) -> None:
    clock, ran = FakeClock(), []
    scheduler = make(tmp_path, clock, Job("drill", "30 3 * * *", recorder(ran, "drill", clock)),
                     Job("backup", "0 3 * * *", recorder(ran, "backup", clock)))
    clock.moment = at(4)  # both overdue, e.g. after a suspend
    scheduler.run_pending()
    assert [name for name, _ in ran] == ["backup", "drill"]


def test_a_tick_missed_during_another_job_runs_once_afterwards(tmp_path: Path) -> None:
    clock, ran = FakeClock(), []
    scheduler = make(tmp_path, clock,
                     Job("backup", "0 3 * * *", recorder(ran, "backup", clock, takes=timedelta(hours=2, minutes=10))),
                     Job("check", "*/15 * * * *", recorder(ran, "check", clock)))
    clock.moment = at(2, 59)
    scheduler.run_pending()
    ran.clear()
    clock.moment = at(3)

    runs = scheduler.run_pending()

    # backup ran 03:00-05:10; check's 03:00 tick waited for it, and its eight missed ticks ran once
    assert outcomes(runs) == [("backup", Outcome.OK), ("check", Outcome.OK)]
    assert ran == [("backup", at(3)), ("check", at(5, 10))]
    assert runs[1].scheduled == at(3)
    assert scheduler.next_runs() == {"backup": at(3, day=2), "check": at(5, 15)}


def test_a_job_longer_than_its_interval_skips_its_own_missed_ticks(tmp_path: Path) -> None:
    clock, ran = FakeClock(), []
    hourly = Job("backup", "0 * * * *", recorder(ran, "backup", clock, takes=timedelta(minutes=150)))
    scheduler = make(tmp_path, clock, hourly)
    clock.moment = at(3)
    scheduler.run_pending()
    # ran 03:00-05:30: the 04:00 and 05:00 ticks are not made up, the next run is 06:00
    assert ran == [("backup", at(3))]
    assert scheduler.next_runs()["backup"] == at(6)


def test_schedule_follows_the_time_zone(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2024, 1, 10, 0, 0, tzinfo=UTC))
    scheduler = make(tmp_path, clock, Job("backup", "0 3 * * *", lambda stop: None), timezone="America/New_York")
    assert scheduler.next_runs()["backup"] == datetime(2024, 1, 10, 8, 0, tzinfo=UTC)  # 03:00 EST


def test_autumn_dst_repeated_hour_runs_once(tmp_path: Path) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    clock, ran = FakeClock(datetime(2024, 10, 26, 12, 0, tzinfo=berlin)), []
    scheduler = make(tmp_path, clock, Job("backup", "30 2 * * *", recorder(ran, "backup", clock)),
                     timezone="Europe/Berlin")
    end = datetime(2024, 10, 29, 0, 0, tzinfo=berlin)
    while clock() < end:
        scheduler.run_pending()
        clock.advance(minutes=10)
    local = [moment.astimezone(berlin).strftime("%d %H:%M") for _, moment in ran]
    assert local == ["27 02:30", "28 02:30"]


def test_spring_dst_skipped_hour_runs_at_the_first_moment_after(tmp_path: Path) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    clock = FakeClock(datetime(2024, 3, 30, 12, 0, tzinfo=berlin))
    scheduler = make(tmp_path, clock, Job("backup", "30 2 * * *", lambda stop: None), timezone="Europe/Berlin")
    assert scheduler.next_runs()["backup"] == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)  # 03:00 CEST


# --- validation -------------------------------------------------------------------------
@pytest.mark.parametrize("expression", ["", "0 3 * *", "61 * * * *", "0 3 * * * 30", "@reboot", "every day",
                                        "H 3 * * *"])
def test_invalid_cron_names_the_variable_and_an_example(tmp_path: Path, expression: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(tmp_path, FakeClock(), Job("backup", expression, lambda stop: None, "BACKUP_SCHEDULE"))
    assert str(info.value).startswith("BACKUP_SCHEDULE: ")
    assert info.value.hint is not None and 'BACKUP_SCHEDULE="0 3 * * *"' in info.value.hint


@pytest.mark.parametrize(("expression", "normal"), [
    ("0 3 * * *", "0 3 * * *"), ("  0  3 * *   1-5 ", "0 3 * * 1-5"), ("@Daily", "@daily"),
    ("*/15 * * * *", "*/15 * * * *"), ("0 3 * * mon", "0 3 * * mon"),
])
def test_valid_cron_is_normalised(expression: str, normal: str) -> None:
    assert validate_cron(expression, "BACKUP_SCHEDULE") == normal


def test_unknown_time_zone_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SCHEDULE_TIMEZONE: unknown time zone 'Mars/Olympus'"):
        make(tmp_path, FakeClock(), Job("backup", "@daily", lambda stop: None), timezone="Mars/Olympus")
    assert load_timezone(" Europe/Berlin ") == ZoneInfo("Europe/Berlin")


def test_nothing_to_schedule_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to schedule"):
        Scheduler([], lock_folder=tmp_path)


def test_naive_clock_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aware"):
        Scheduler([Job("backup", "@daily", lambda stop: None)], lock_folder=tmp_path, now=datetime.now)


# --- the lock and failures --------------------------------------------------------------
def test_run_is_skipped_while_another_process_holds_the_lock(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    clock, ran = FakeClock(), []
    scheduler = make(tmp_path, clock, Job("backup", "0 3 * * *", recorder(ran, "backup", clock)))
    clock.moment = at(3)
    with caplog.at_level(logging.WARNING, "sentinel_backup.schedule"), lock_held_elsewhere(tmp_path) as holder:
        runs = scheduler.run_pending()
    assert outcomes(runs) == [("backup", Outcome.SKIPPED)]
    assert ran == []
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"backup skipped (due {at(3).isoformat()}): another sentinel-backup run (pid {holder.pid})" in record.message

    # not retried before its next tick; runs then, now that the lock is free
    clock.advance(hours=1)
    assert scheduler.run_pending() == []
    clock.moment = at(3, day=2)
    assert outcomes(scheduler.run_pending()) == [("backup", Outcome.OK)]


def test_job_holds_the_lock_and_may_take_it_again(tmp_path: Path) -> None:
    clock, seen = FakeClock(), []

    def backup(stop: threading.Event) -> None:
        with run_lock(tmp_path):  # what a backup started by the scheduler does
            seen.append((tmp_path / ".sentinel-backup.lock").read_text())

    scheduler = make(tmp_path, clock, Job("backup", "0 3 * * *", backup))
    clock.moment = at(3)
    assert outcomes(scheduler.run_pending()) == [("backup", Outcome.OK)]
    assert f"pid={os.getpid()}\n" in seen[0]


def test_a_failing_job_is_logged_and_the_schedule_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock, ran = FakeClock(), []

    def broken(stop: threading.Event) -> None:
        raise BackupFailed("pg_dump exited with status 1", "see the log above")

    def buggy(stop: threading.Event) -> None:
        raise RuntimeError("a bug")

    scheduler = make(tmp_path, clock, Job("backup", "0 3 * * *", broken), Job("drill", "0 3 * * *", buggy),
                     Job("partial", "0 3 * * *", lambda stop: 3), Job("report", "0 3 * * *", lambda stop: [1]),
                     Job("prune", "0 3 * * *", recorder(ran, "prune", clock)))
    clock.moment = at(3)
    with caplog.at_level(logging.INFO, "sentinel_backup.schedule"):
        runs = scheduler.run_pending()
    assert outcomes(runs) == [("backup", Outcome.FAILED), ("drill", Outcome.FAILED), ("partial", Outcome.FAILED),
                              ("report", Outcome.OK), ("prune", Outcome.OK)]
    assert "backup failed: pg_dump exited with status 1 (hint: see the log above)" in caplog.text
    assert "drill failed unexpectedly" in caplog.text and "RuntimeError: a bug" in caplog.text
    assert "partial finished with exit code 3" in caplog.text
    assert scheduler.next_runs()["backup"] == at(3, day=2)


# --- running and stopping ---------------------------------------------------------------
def test_run_forever_runs_every_day_until_asked_to_stop(tmp_path: Path) -> None:
    clock, ran = FakeClock(), []
    scheduler: Scheduler

    def backup(stop: threading.Event) -> None:
        assert stop is scheduler.stop_event and not stop.is_set()
        ran.append(clock())
        if len(ran) == 3:
            scheduler.request_stop()

    scheduler = make(tmp_path, clock, Job("backup", "0 3 * * *", backup))
    assert scheduler.run_forever() == 0
    assert ran == [at(3), at(3, day=2), at(3, day=3)]
    assert clock.slept and max(clock.slept) <= 1.0  # idles in short slices


def test_stop_during_a_job_runs_nothing_else(tmp_path: Path) -> None:
    clock, ran = FakeClock(), []
    scheduler: Scheduler

    def backup(stop: threading.Event) -> None:
        scheduler.request_stop()  # as SIGTERM would, mid-job
        ran.append(("backup saw stop", stop.is_set()))

    scheduler = make(tmp_path, clock, Job("backup", "0 3 * * *", backup),
                     Job("prune", "0 3 * * *", recorder(ran, "prune", clock)))
    clock.moment = at(3)
    assert outcomes(scheduler.run_pending()) == [("backup", Outcome.OK)]
    assert ran == [("backup saw stop", True)]
    assert scheduler.run_forever() == 0


def test_stop_while_idle_returns_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    scheduler = make(tmp_path, clock, Job("backup", "0 3 * * *", lambda stop: pytest.fail("should not run")))

    def sleep(seconds: float) -> None:
        scheduler.request_stop()

    scheduler._sleep = sleep
    assert scheduler.run_forever() == 0


def test_sigterm_during_a_job_sets_its_stop_event(tmp_path: Path) -> None:
    clock, seen = FakeClock(at(2, 59)), []

    def backup(stop: threading.Event) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append(stop.wait(30))  # the handler's helper thread sets it

    scheduler = Scheduler([Job("backup", "0 3 * * *", backup)], lock_folder=tmp_path, now=clock, sleep=clock.sleep)
    previous = signal.getsignal(signal.SIGTERM)
    assert scheduler.run_forever() == 0
    assert seen == [True]
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
