"""Stop signals for work that must unwind and clean up: SIGINT, SIGTERM (and SIGHUP).

:class:`StopSignals` installs handlers for the duration of a ``with`` block. The first
signal raises :class:`StopRequested` in the main thread, right where it is blocked
(waiting for a child, writing into its stdin, reading from a store), so the work stops
within moments and its ``finally`` blocks clean up. It derives from KeyboardInterrupt, so
``except Exception`` / ``except SentinelError`` handlers on the way never swallow it.

Inside :meth:`StopSignals.deferred` (short steps that must not be cut in half, such as
CREATE DATABASE or the final rename), a signal is only recorded; it is delivered when the
outermost deferred block ends. Later signals only log that the stop is under way, so
the cleanup itself is never interrupted. The handlers are installed explicitly, also
when SIGINT was inherited as ignored (a background job of a non-interactive shell).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

from . import log

logger = log.get("interrupt")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
        for sig in STOP_SIGNALS:
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

    @contextmanager
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
