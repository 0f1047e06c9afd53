"""SIGINT and SIGTERM for the commands that make calls: all they do is set the stop event.

Everything that waits (the limiter, backoff, the daemon's interval, a call in flight) ends
its wait when the event is set, so a stop takes effect at once, wherever the main thread is.

The signals are taken by a thread of their own, with `sigwait`, rather than by a Python
signal handler: a handler runs only on the main thread, and only once the main thread wakes,
while the kernel may deliver the signal to any thread; with the main thread asleep on a call
in flight, a Ctrl-C could go unseen until that call ended.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
# How often the signal thread looks up from its wait to see whether it is still needed.
_LOOK_SECONDS = 0.1


class StopSignals:
    """While entered, SIGINT and SIGTERM set `stop` instead of interrupting the process.

    The first signal is kept in `received`, for the exit code; any later one is as harmless
    as the first. A handler a host program had installed gets the first signal on exit.
    Enter it on the main thread before starting other threads: they inherit the blocked
    signals, which is what leaves them all to the signal thread.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: signal.Signals | None = None
        self._closing = threading.Event()
        self._previous_mask: set[int | signal.Signals] = set()
        self._handlers: dict[signal.Signals, Any] = {}
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StopSignals:
        self._handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self._thread = threading.Thread(target=self._take, name="lsq-sync-signals", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._closing.set()
            self._thread.join()
            self._thread = None
        # A signal that comes after the signal thread's last look is delivered now, as usual.
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
        if self.received is not None and _installed_by_a_host(self._handlers[self.received]):
            # A program running lsq-sync inside itself must not lose its own signal: it
            # hears it now that the stop is done.
            signal.raise_signal(self.received)

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report a
        process ended by it; None when no signal came."""
        return None if self.received is None else 128 + self.received.value

    def _take(self) -> None:
        while not self._closing.is_set():
            self._received(signal.sigtimedwait(STOP_SIGNALS, _LOOK_SECONDS))
        # Those sent before the closing, still pending, count too.
        while self._received(signal.sigtimedwait(STOP_SIGNALS, 0)):
            pass

    def _received(self, info: signal.struct_siginfo | None) -> bool:
        # A wait cut short past its timeout (the process was stopped, then continued) returns
        # a siginfo CPython never filled in, whose number is garbage: not a signal at all.
        if info is None or info.si_signo not in STOP_SIGNALS:
            return False
        signum = signal.Signals(info.si_signo)
        if self.received is None:
            self.received = signum
        self.stop.set()
        log.info(
            "stop requested: no new call starts; calls in flight may finish",
            extra={"signal": signum.name},
        )
        return True


def _installed_by_a_host(handler: Any) -> bool:
    """A handler other than Python's own defaults (KeyboardInterrupt for SIGINT, SIG_DFL,
    SIG_IGN), which the CLI leaves in place."""
    return callable(handler) and handler is not signal.default_int_handler
