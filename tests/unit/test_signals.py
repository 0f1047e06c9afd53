"""connector.signals.StopSignals: a signal sets the stop event, and nothing more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

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


def test_a_host_programs_own_handler_hears_the_signal_once_the_stop_is_done() -> None:
    """A program running lsq-sync inside itself keeps its signals: while it runs they only
    stop it, and then the program's own handler gets the signal too, once."""
    stop, heard = threading.Event(), []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
    try:
        with StopSignals(stop):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(10)
            os.kill(os.getpid(), signal.SIGTERM)
            assert heard == [], "not while the stop is under way"
        # The handler runs on the main thread once it looks: within the next statements.
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the condition above
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert heard == [signal.SIGTERM]


# Enters StopSignals, says so, and reports the stop (or its absence) within a generous bound.
WAITS_FOR_A_STOP = """
import sys, threading
from connector.signals import StopSignals
stop = threading.Event()
with StopSignals(stop) as signals:
    print("ready", flush=True)
    stopped = stop.wait(float(sys.argv[1]))
print("stopped" if stopped else "not stopped", signals.exit_code, flush=True)
"""


def wait_until_state(pid: int, states: str) -> None:
    """Poll /proc until the process is in one of `states` (T: stopped)."""
    deadline = time.monotonic() + 30
    while True:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        if state in states:
            return
        assert time.monotonic() < deadline, f"process {pid} stayed in state {state}"
        time.sleep(0.01)  # polling the condition above


def test_a_stop_and_continue_of_the_process_does_not_lose_the_signals() -> None:
    """Ctrl-Z then `fg` (SIGSTOP, SIGCONT) cuts the signal thread's timed wait short; CPython
    then returns a siginfo it never filled in. Taken as a signal, its garbage number killed the
    thread, and SIGINT and SIGTERM, blocked everywhere else, were never seen again."""
    bound = 30
    with subprocess.Popen(
        [sys.executable, "-c", WAITS_FOR_A_STOP, str(bound)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "ready"
            for _ in range(3):
                child.send_signal(signal.SIGSTOP)
                wait_until_state(child.pid, "T")
                # Stopped for longer than the signal thread's look, so its wait times out.
                time.sleep(0.3)
                child.send_signal(signal.SIGCONT)
                wait_until_state(child.pid, "RSD")
            child.send_signal(signal.SIGTERM)
            output, errors = child.communicate(timeout=bound + 30)
        finally:
            child.kill()
    assert output.strip() == "stopped 143", errors
    assert "Traceback" not in errors
