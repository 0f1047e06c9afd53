"""The arithmetic of pacing LeadSquared calls: when the next call may start, how wide a margin
the spread of the calls' own timings calls for, how a throttle slows the account's calls down
and how they recover, and the daily budget's day.

Pure: every function takes the times and counts it works on, reads no clock and does no I/O.
`connector.ratelimit` keeps the record of calls in the database and asks this module what
those records mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# When throttled below the configured limit, the pace drops to this share, at most once per
# window, and climbs back by one call per RECOVERY_WINDOWS quiet windows (a daemon must not
# stay slow for good because another program once used the account's calls).
THROTTLED_SHARE = 0.8
RECOVERY_WINDOWS = 12

# The learned margin. A call's delay from its slot to its arrival at LeadSquared varies, and
# a call that arrives late followed N calls later by one that arrives early puts N calls in
# less than a window: the margin must cover the spread of that delay. The arrival cannot be
# seen, only the answer; the spread of the times from slot to answer holds the spread of the
# way there (and some of the server's own), so it is an estimate from above. Quantiles, not the
# extremes, so that one answer held up by the server does not slow every later call.
SPREAD_QUANTILES = (0.03, 0.97)
# Fewer timings than this say too little: until then, the widest margin allowed.
MIN_TIMINGS = 16
# The most recent timings are the ones kept: the network of an hour ago says little.
KEPT_TIMINGS = 200
# However spread the timings, the margin never takes more than this, nor half the window.
MAX_MARGIN_SECONDS = 1.0


def window_delay(starts: Sequence[datetime], now: datetime, calls: int, window: timedelta) -> float:
    """Seconds from `now` until a call may start, given when recent calls started.

    `window` already includes the margin.
    """
    recent = sorted(start for start in starts if start > now - window)
    if len(recent) < calls:
        return 0.0
    return max(0.0, (recent[-calls] + window - now).total_seconds())


def held_back(blocked_until: datetime | None, now: datetime) -> float:
    """Seconds the account is still held back after a throttle; 0 once it is free."""
    if blocked_until is None or blocked_until <= now:
        return 0.0
    return (blocked_until - now).total_seconds()


def hold_until(now: datetime, retry_after: float | None, window: timedelta) -> datetime:
    """Until when a throttle holds the account back: its Retry-After, or else a whole window."""
    return now + (timedelta(seconds=retry_after) if retry_after is not None else window)


def sent_late(late_seconds: float, margin_seconds: float) -> bool:
    """Whether a call going out this long after its slot was taken must move its slot to now.
    Half the margin may go this way; the other half still covers the call's way there."""
    return late_seconds > margin_seconds / 2


def quantile(values: Sequence[float], share: float) -> float:
    """The `share` quantile of `values` (not empty), interpolating between neighbours."""
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def timing_spread(timings: Sequence[float]) -> float | None:
    """How widely the times from a slot to its answer vary; None while too few are known."""
    if len(timings) < MIN_TIMINGS:
        return None
    low, high = SPREAD_QUANTILES
    return quantile(timings, high) - quantile(timings, low)


def margin_bounds(configured: float, window_seconds: float) -> tuple[float, float]:
    """The least and the most margin: never below the configured one, and never above
    MAX_MARGIN_SECONDS or half the window (unless the configured margin is wider)."""
    ceiling = min(MAX_MARGIN_SECONDS, window_seconds / 2)
    return configured, max(configured, ceiling)


def learned_margin(spread: float | None, configured: float, window_seconds: float) -> float:
    """The margin for the next slot: the spread, within `margin_bounds`. An unknown spread
    gets the widest, since a margin too narrow costs a throttle and one too wide only a
    moment of the first windows."""
    floor, ceiling = margin_bounds(configured, window_seconds)
    if spread is None:
        return ceiling
    return min(ceiling, max(floor, spread))


def budget_day(now: datetime) -> str:
    """The day a call counts against the daily budget; `now` is in UTC, as the budget is."""
    return now.date().isoformat()


def calls_today(recorded_day: str | None, recorded_calls: int, now: datetime) -> int:
    """The account's calls so far today: the recorded count is of its own day only."""
    return recorded_calls if recorded_day == budget_day(now) else 0


def next_utc_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


@dataclass(frozen=True)
class Slowdown:
    """The pace a throttle set, and when."""

    calls: int
    at: datetime


@dataclass(frozen=True)
class Pace:
    """The calls per window the account's calls allow themselves: the configured number until
    LeadSquared throttles one, then lower, climbing back by one for every RECOVERY_WINDOWS
    windows."""

    configured: int
    window: timedelta
    slowdown: Slowdown | None = None

    def calls_at(self, now: datetime) -> int:
        period = self.window * RECOVERY_WINDOWS
        # Without a window there is nothing to recover over (and nothing to divide by).
        if self.slowdown is None or period <= timedelta(0):
            return self.configured
        # A clock set back (the database server's) must not take away calls already given.
        windows = max(0, int((now - self.slowdown.at) / period))
        return min(self.configured, self.slowdown.calls + windows)

    def throttled(self, now: datetime) -> Pace:
        """The pace after a throttle at `now`: a share lower than now, at most once a window,
        since calls in flight together are often throttled together."""
        if self.slowdown is not None and now - self.slowdown.at < self.window:
            return self
        slower = max(1, int(self.calls_at(now) * THROTTLED_SHARE))
        return Pace(self.configured, self.window, Slowdown(slower, now))
