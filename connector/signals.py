"""SIGINT and SIGTERM for the commands that make calls: the handlers only set the stop event.

Everything that waits (the limiter, backoff, the daemon's interval, a call in flight) ends
its wait when the event is set, so a stop takes effect at once, wherever the main thread is.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While entered, SIGINT and SIGTERM set `stop` instead of interrupting the process.

    The first signal is kept in `received`, for the exit code; any later one is as harmless
    as the first. The previous handlers are put back on exit.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report a
        process ended by it; None when no signal came."""
        return None if self.received is None else 128 + self.received.value

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum)
        if self.received is None:
            self.received = name
        # Set from another thread: this handler runs on the main thread, which may be inside
        # stop.wait() holding the event's own lock, and that lock is not reentrant.
        threading.Thread(target=self._set_stop, args=(name,), name="lsq-sync-stop").start()

    def _set_stop(self, name: signal.Signals) -> None:
        self.stop.set()
        log.info(
            "stop requested: no new call starts; calls in flight may finish",
            extra={"signal": name.name},
        )
