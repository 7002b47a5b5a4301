"""Run one command and measure it: wall time, CPU time and peak RSS of its whole process tree.

The command starts in a new session, so every process it spawns (pipeline members,
pg_dump, psql, threads excluded as they share memory) carries the root's session id.
A watcher thread polls ``/proc`` (10 Hz) and sums ``VmRSS`` over that session: the
peak of that sum is the tree's peak RSS (shared pages count once per process, so it
errs high). CPU time comes from ``wait4()`` on the root, which includes every
descendant it waited for (a shell waits for its pipeline; the tool waits for pg_dump).
``ru_maxrss`` from the same call is the largest single process in the tree.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.1


@dataclass
class Sample:
    """One measured run of one mode."""

    mode: str
    round: int
    wall: float = 0.0
    user: float = 0.0
    sys: float = 0.0
    tree_rss_peak_kb: int = 0  # sum of VmRSS over the session, maximum over the run
    root_hwm_kb: int = 0  # VmHWM of the root process (e.g. the sentinel-backup Python process)
    max_proc_rss_kb: int = 0  # ru_maxrss from wait4: the largest single process
    stored_bytes: int | None = None
    returncode: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu"] = round(self.cpu, 3)
        return data


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    try:
        return int(rest[3])
    except (IndexError, ValueError):
        return None


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _Watcher(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True, name=f"watch-{root}")
        self.root = root
        self.stop = threading.Event()
        self.peak_kb = 0
        self.root_hwm_kb = 0
        self.members: set[int] = {root}

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
            self.stop.wait(POLL_SECONDS)

    def poll(self) -> None:
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in self.members or _session_of(pid) == self.root:
                rss = _status_kb(pid, "VmRSS:")
                if rss:
                    self.members.add(pid)
                    total += rss
        self.peak_kb = max(self.peak_kb, total)
        hwm = _status_kb(self.root, "VmHWM:")
        if hwm:
            self.root_hwm_kb = hwm


def measure(mode: str, rnd: int, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path,
            timeout: float | None = None) -> Sample:
    """Run argv to completion and return its Sample (stdout and stderr go to ``log``)."""
    sample = Sample(mode, rnd)
    with open(log, "ab") as out:
        out.write(f"\n=== {mode} round {rnd}: {' '.join(argv)}\n".encode())
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
        watcher = _Watcher(proc.pid)
        watcher.start()
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                sample.error = f"timed out after {timeout:.0f} s"
            time.sleep(0.01)
        sample.wall = time.perf_counter() - t0
        watcher.stop.set()
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    sample.returncode = proc.returncode
    sample.user, sample.sys = usage.ru_utime, usage.ru_stime
    sample.max_proc_rss_kb = usage.ru_maxrss
    sample.tree_rss_peak_kb = watcher.peak_kb
    sample.root_hwm_kb = watcher.root_hwm_kb
    if proc.returncode != 0 and sample.error is None:
        sample.error = f"exit code {proc.returncode} (see {log})"
    return sample


def cpu_model() -> str:
    """The CPU's model name (lscpu), for a benchmark's header."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def say(text: str, started: float) -> None:
    """A progress line on stderr, with the seconds since ``started`` (time.monotonic())."""
    print(f"# [{time.monotonic() - started:6.0f} s] {text}", file=sys.stderr, flush=True)


# --- numbers shared by the benchmarks -------------------------------------------------------------

def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def paired(samples: dict[str, list[Sample]], a: str, b: str, key: Callable[[Sample], float | None]) -> float | None:
    """Median over rounds of key(a) / key(b), pairing the runs of the same round (both ok, key(b) > 0)."""
    by_round = {s.round: s for s in samples.get(b, []) if s.ok}
    ratios = []
    for sa in samples.get(a, []):
        sb = by_round.get(sa.round)
        if sa.ok and sb is not None:
            va, vb = key(sa), key(sb)
            if va is not None and vb:
                ratios.append(va / vb)
    return median(ratios)


def wall(s: Sample) -> float:
    return s.wall


@dataclass
class Target:
    """A benchmark target: PASS when ``value`` is within ``limit`` (at least it, with ``higher_is_better``)."""

    name: str
    goal: str
    value: float | None
    limit: float
    higher_is_better: bool = False
    shown: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        ok = self.value >= self.limit if self.higher_is_better else self.value <= self.limit
        return "PASS" if ok else "MISS"
