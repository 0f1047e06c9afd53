"""Client-side pacing: at most N calls in any sliding window of W seconds.

Pure maths over timestamps the caller supplies; the caller owns the clock and the sleeping.
"""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """Tracks recent calls and says how long to wait before the next one may start.

    A call is recorded when it *completes*: the server saw it at some moment before that,
    so spacing the next starts from completions keeps every server-side window within the
    limit, whatever the latency.
    """

    def __init__(self, calls: int, window: float, margin: float = 0.05) -> None:
        if calls < 1 or window <= 0:
            raise ValueError("a rate limit needs calls >= 1 and window > 0")
        self.calls = calls
        self.window = window
        self.margin = margin
        self._completed: deque[float] = deque(maxlen=calls)

    def delay(self, now: float) -> float:
        """Seconds to wait from `now` before starting the next call."""
        if len(self._completed) < self.calls:
            return 0.0
        return max(0.0, self._completed[0] + self.window + self.margin - now)

    def record(self, completed_at: float) -> None:
        self._completed.append(completed_at)

    def back_off(self, until: float) -> None:
        """Treat the window as full until `until` (after the server said we were throttled).

        Only ever lengthens the wait: a short Retry-After must not free slots that the
        window still holds.
        """
        floor = until - self.window - self.margin
        slots = [max(t, floor) for t in self._completed]
        slots = [floor] * (self.calls - len(slots)) + slots
        self._completed = deque(sorted(slots), maxlen=self.calls)
