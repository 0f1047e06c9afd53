"""Progress of a long run, as an instrumentation (connector.instrumentation): leads done out of
those due, the rate, and the time left.

On a terminal, one line on stderr rewritten in place; elsewhere (cron, a daemon's log), one
log line every LOG_EVERY_SECONDS, never one per lead. Timed by the connector's clock, so a
test drives it with a fake one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from connector.clock import Clock, SystemClock
from connector.instrumentation import Instrumentation, LeadOutcome

log = logging.getLogger(__name__)

# How often the terminal line is rewritten, and a summary line logged off a terminal.
DRAW_EVERY_SECONDS = 0.2
LOG_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class Snapshot:
    """The push phase so far. Pure arithmetic over what the events told."""

    done: int
    due: int
    seconds: float

    @property
    def rate(self) -> float | None:
        """Leads per second; None before there is anything to go by."""
        if self.done == 0 or self.seconds <= 0:
            return None
        return self.done / self.seconds

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        if rate is None:
            return None
        return max(0, self.due - self.done) / rate

    def fields(self) -> dict[str, object]:
        """The log line's structured fields."""
        rate, left = self.rate, self.seconds_left
        return {
            "leads_done": self.done,
            "leads_due": self.due,
            "leads_per_second": None if rate is None else round(rate, 2),
            "seconds_left": None if left is None else round(left),
        }

    def text(self) -> str:
        shown = f"pushed {self.done} of {self.due} {'lead' if self.due == 1 else 'leads'}"
        if self.due:
            shown += f" ({min(self.done, self.due) * 100 // self.due}%)"
        rate, left = self.rate, self.seconds_left
        if rate is None or left is None:
            return shown
        return f"{shown}, {rate:.1f} leads/s, about {_duration(left)} left"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class Progress(Instrumentation):
    """Shows a run's progress on `stream` (a terminal) or in the log (anything else)."""

    def __init__(self, clock: Clock, stream: TextIO, *, terminal: bool | None = None) -> None:
        """`terminal`: whether `stream` is one (default: ask it)."""
        self.clock = clock
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self._every = DRAW_EVERY_SECONDS if self.terminal else LOG_EVERY_SECONDS
        self._lock = threading.Lock()
        self._started: float | None = None
        self._due = 0
        self._done = 0
        self._ingested = 0
        self._shown_at = clock.monotonic()
        self._drawn = False

    @classmethod
    def on(cls, stream: TextIO) -> Progress:
        """The CLI's: timed by the system's clock, as the connector it watches is."""
        return cls(SystemClock(), stream)

    def ingested(self, changes: int, rows_without_lead_id: int, rows_held_back: int) -> None:
        with self._lock:
            self._ingested += changes
            if self._due_to_show():
                self._show(f"ingested {self._ingested} changes", {"changes": self._ingested})

    def push_started(self, leads: int) -> None:
        with self._lock:
            self._started = self._shown_at = self.clock.monotonic()
            self._due, self._done = leads, 0

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        with self._lock:
            if self._started is None:
                return
            self._done += 1
            if self._due_to_show():
                snapshot = self._snapshot()
                self._show(snapshot.text(), snapshot.fields())

    def run_finished(self, status: str, counts: object, error: str | None) -> None:
        with self._lock:
            if self.terminal and self._drawn:
                if self._started is not None:
                    self._draw(self._snapshot().text())
                self.stream.write("\n")
                self.stream.flush()
            self._started, self._drawn, self._ingested = None, False, 0

    def snapshot(self) -> Snapshot | None:
        """Where the push phase stands; None outside one."""
        with self._lock:
            return None if self._started is None else self._snapshot()

    def _snapshot(self) -> Snapshot:
        started = self.clock.monotonic() if self._started is None else self._started
        return Snapshot(self._done, self._due, self.clock.monotonic() - started)

    def _due_to_show(self) -> bool:
        now = self.clock.monotonic()
        if now - self._shown_at < self._every:
            return False
        self._shown_at = now
        return True

    def _show(self, text: str, fields: dict[str, object]) -> None:
        if self.terminal:
            self._draw(text)
        else:
            log.info(text, extra=fields)

    def _draw(self, text: str) -> None:
        # Back to the line's start, the text, then clear what a longer line left behind.
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()
        self._drawn = True
