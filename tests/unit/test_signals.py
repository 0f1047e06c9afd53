"""connector.signals.StopSignals: a signal sets the stop event, and nothing more."""

from __future__ import annotations

import os
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
    # Sent to the process, as kill(1) and a terminal's Ctrl-C do, not to this thread.
    with StopSignals(stop) as signals:
        assert signals.exit_code is None
        os.kill(os.getpid(), signum)
        assert stop.wait(10)
        os.kill(os.getpid(), other)
        os.kill(os.getpid(), signum)
        assert signals.received is signum, "the first signal is the one kept"
        assert signals.exit_code == code


def test_the_signals_are_taken_by_their_own_thread_and_given_back_on_exit() -> None:
    stop = threading.Event()
    with StopSignals(stop):
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        taker = [t for t in threading.enumerate() if t.name == "lsq-sync-signals"]
    assert {signal.SIGINT, signal.SIGTERM} <= blocked
    assert len(taker) == 1
    assert not taker[0].is_alive()
    assert not stop.is_set(), "closing is not a stop"
    assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_signal_reaches_the_stop_while_every_thread_is_asleep() -> None:
    stop, asleep = threading.Event(), threading.Event()
    with StopSignals(stop) as signals:
        # Threads started inside inherit the blocked signals: none of them can take one.
        sleeper = threading.Thread(target=asleep.wait, daemon=True)
        sleeper.start()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(10)
        asleep.set()
        sleeper.join()
    assert signals.received is signal.SIGTERM
