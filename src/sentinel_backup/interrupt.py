"""Stop requests: SIGTERM/SIGINT turned into a prompt, clean stop (exit 130).

How a run stops, whatever it is doing:

- :func:`signal_stop` (a context manager for a command's main thread) installs handlers for
  SIGTERM and SIGINT that never raise: they only *request* a stop. So a signal can never
  tear a cleanup in half, and a second signal while cleaning up changes nothing (it is
  logged). The handler records the request synchronously (``requested`` is true as soon as
  it returned) and sets the event from a short-lived thread (setting an Event inside a
  handler can deadlock on the Event's own lock).
- A :class:`Stopper` wraps the run's ``threading.Event`` (the scheduler passes its own).
  While :meth:`Stopper.watching` is active, a watcher thread notices the request within
  a fraction of a second and unblocks whatever the main thread waits on: every child
  process adopted with :meth:`Stopper.adopt` (pg_dump, psql, ...) still running gets
  SIGINT (PostgreSQL client tools then cancel their running query on the server), then
  SIGTERM, then SIGKILL; callbacks registered with :meth:`Stopper.on_stop` run too.
  Children started after the request are left alone: they are the cleanup.
- The code checks :meth:`Stopper.check` at every phase boundary and treats any failure
  seen while a stop is requested as the interruption (a child killed by the same process
  group signal is not "pg_dump failed"): :class:`~sentinel_backup.errors.Interrupted`,
  exit 130.

Two ways of stopping live here, each where it fits:

- **Requests** (:class:`Stopper`, :func:`signal_stop`; used by ``backup`` and the jobs):
  handlers never raise; the work polls ``check()`` and the watcher stops children. Fits a
  pipeline of threads whose every stage must be aborted in order.
- **Raising** (:class:`StopSignals`, :class:`StopRequested`; used by ``restore``): the first
  signal raises in the main thread where it is blocked, except inside
  :meth:`StopSignals.deferred` steps (CREATE DATABASE, the swap) that must not be cut in
  half; it derives from KeyboardInterrupt so ``except Exception`` never swallows it.
  Fits a single-threaded flow of child processes and short SQL steps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from sentinel_backup import log
from sentinel_backup.errors import Interrupted

logger = log.get("interrupt")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL = 0.1  # how often the watcher looks at the event
GRACE = (1.5, 3.0)  # seconds after SIGINT, then after SIGTERM, before the next escalation


class Stopper:
    """A run's stop request: ``requested``, ``check()``, children to stop, and callbacks."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()
        self.signum: int | None = None  # the signal that asked, when one did
        self._flag = False  # set synchronously by a signal handler
        self._children: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._guard = threading.Lock()
        self._fired = False

    # --- asking -------------------------------------------------------------------
    def request(self, signum: int | None = None) -> None:
        """Ask the run to stop (safe from any thread; not from a signal handler: use signal_stop)."""
        if self.signum is None:
            self.signum = signum
        self._flag = True
        self.event.set()

    @property
    def requested(self) -> bool:
        return self._flag or self.event.is_set()

    def settle(self, seconds: float = 0.5) -> bool:
        """``requested``, after waiting up to ``seconds`` for a request: a child killed by a
        process-group signal can die just before our own handler has run."""
        return self.requested or self.event.wait(seconds)

    def error(self, what: str = "the run") -> Interrupted:
        name = signal.Signals(self.signum).name if self.signum else "a stop request"
        return Interrupted(f"{what} was interrupted by {name}",
                           "nothing unfinished was committed: partial files were removed and uploads aborted; "
                           "run it again")

    def check(self, what: str = "the run") -> None:
        """Raise Interrupted when a stop was requested."""
        if self.requested:
            raise self.error(what)

    # --- reacting -------------------------------------------------------------------
    def adopt(self, proc: subprocess.Popen[Any]) -> None:
        """Stop ``proc`` (SIGINT, SIGTERM, SIGKILL) when a stop is requested while it runs."""
        if self._fired:
            return  # started after the request: part of the cleanup
        with self._guard:
            self._children.add(proc)

    @contextlib.contextmanager
    def on_stop(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run ``callback`` (in the watcher thread) if a stop is requested during the block."""
        key = id(callback)
        with self._guard:
            self._callbacks[key] = callback
        try:
            yield
        finally:
            with self._guard:
                self._callbacks.pop(key, None)

    @contextlib.contextmanager
    def watching(self) -> Iterator[Stopper]:
        """Watch for a request in a thread for the block (the children and callbacks are stopped once)."""
        done = threading.Event()
        thread = threading.Thread(target=self._watch, args=(done,), name="sentinel-stop-watch", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join(timeout=10)

    def _watch(self, done: threading.Event) -> None:
        while not done.is_set():
            if self.requested:
                self._fire()
                return
            self.event.wait(POLL)

    def _fire(self) -> None:
        with self._guard:
            if self._fired:
                return
            self._fired = True
            children = [p for p in self._children if p.poll() is None]
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # a callback must not keep the others from running
                logger.warning(f"Stopping: {type(exc).__name__}: {exc}")
        stop_children(children)


def stop_children(children: list[subprocess.Popen[Any]]) -> None:
    """SIGINT, then SIGTERM, then SIGKILL, each after a grace period, until every child exited."""
    for sig, grace in ((signal.SIGINT, GRACE[0]), (signal.SIGTERM, GRACE[1]), (signal.SIGKILL, 0.0)):
        running = [p for p in children if p.poll() is None]
        if not running:
            return
        for proc in running:
            with contextlib.suppress(OSError):
                proc.send_signal(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            time.sleep(0.05)


@contextlib.contextmanager
def signal_stop(stopper: Stopper, what: str = "the run") -> Iterator[Stopper]:
    """SIGTERM/SIGINT request a stop of ``stopper`` during the block (main thread only; else
    a no-op); the previous handlers come back afterwards. Further signals are logged only."""
    if threading.current_thread() is not threading.main_thread():
        yield stopper
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        again = stopper.requested
        if stopper.signum is None:
            stopper.signum = signum
        stopper._flag = True
        threading.Thread(target=_announce, args=(stopper, signum, again, what), name="sentinel-stop",
                         daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stopper
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _announce(stopper: Stopper, signum: int, again: bool, what: str) -> None:
    name = signal.Signals(signum).name
    if again:
        logger.warning(f"{name} again: still cleaning up, {what} stops as soon as that is done")
    else:
        logger.warning(f"{name} received: stopping {what}, removing its unfinished files")
    stopper.event.set()


RAISING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived: unwind, clean up, exit 130."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopSignals:
    """``with StopSignals() as stop:`` -- SIGINT/SIGTERM/SIGHUP stop the block (see the module doc)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._delivered = False
        self._depth = 0
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def __enter__(self) -> StopSignals:
        for sig in RAISING_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            logger.warning(f"Received {name} again: already stopping, cleaning up first")
            return
        self.signum = signum
        if self._depth:
            logger.warning(f"Received {name}: stopping after the current step")
            return
        logger.warning(f"Received {name}: stopping and cleaning up")
        self._delivered = True
        raise StopRequested(signum)

    def check(self) -> None:
        """Raise StopRequested now if a signal arrived and was not delivered yet."""
        if self.signum is not None and not self._delivered:
            self._delivered = True
            raise StopRequested(self.signum)

    @contextlib.contextmanager
    def deferred(self, *, deliver: bool = True) -> Iterator[None]:
        """Record signals instead of raising them; on leaving the outermost block, deliver a
        recorded one (unless ``deliver`` is false: cleanup that runs while an error unwinds)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if deliver and not self._depth:
            self.check()


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
