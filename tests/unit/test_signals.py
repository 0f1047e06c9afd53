"""connector.signals.StopSignals: a signal sets the stop event, and nothing more."""

from __future__ import annotations

import signal
import threading

import pytest

from connector.signals import StopSignals


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_sets_stop_and_a_second_one_changes_nothing(
    signum: signal.Signals, code: int
) -> None:
    stop = threading.Event()
    other = signal.SIGTERM if signum == signal.SIGINT else signal.SIGINT
    # raise_signal runs the Python handler before it returns, so none is left pending when
    # the handlers are put back.
    with StopSignals(stop) as signals:
        assert signals.exit_code is None
        signal.raise_signal(signum)
        assert stop.wait(10)
        signal.raise_signal(other)
        signal.raise_signal(signum)
        assert signals.received is signum, "the first signal is the one kept"
        assert signals.exit_code == code


def test_the_previous_handlers_are_put_back() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals(threading.Event()):
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {signum: signal.getsignal(signum) for signum in before} == before
