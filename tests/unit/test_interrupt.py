"""StopSignals with real signals sent to this process."""

from __future__ import annotations

import os
import signal

import pytest

from sentinel_backup.interrupt import StopRequested, StopSignals
from sentinel_backup.logical.scratch import OLD_SUFFIX, SCRATCH_SUFFIX, derived_name


def test_a_signal_raises_where_the_work_is_and_a_second_one_does_not() -> None:
    with StopSignals() as stop:
        with pytest.raises(StopRequested) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # blocked like a wait for a child; the handler raises here
        assert caught.value.name == "SIGTERM" and stop.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # while cleaning up: only logged
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the previous handler is back


def test_a_signal_in_a_deferred_step_is_delivered_after_it() -> None:
    steps = []
    with StopSignals() as stop, pytest.raises(StopRequested):
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("finished the step")
        steps.append("went on after the step")
    assert steps == ["finished the step"]


def test_a_deferred_cleanup_does_not_deliver() -> None:
    with StopSignals() as stop:
        with stop.deferred(deliver=False):
            os.kill(os.getpid(), signal.SIGHUP)
        assert stop.name == "SIGHUP"
        with pytest.raises(StopRequested):
            stop.check()


def test_derived_names_fit_in_63_bytes_at_a_character_boundary() -> None:
    target = "é" * 31 + "x"  # 63 bytes
    for suffix in (SCRATCH_SUFFIX, OLD_SUFFIX):
        name = derived_name(target, suffix)
        assert len(name.encode()) <= 63 and name.endswith(suffix) and name.startswith("é")
    assert derived_name("shop", OLD_SUFFIX) == "shop__sentinel_old"
