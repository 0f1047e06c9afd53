"""The sliding-window arithmetic (connector.pacing) and the account digest (connector.ratelimit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.pacing import next_utc_midnight, window_delay
from connector.ratelimit import account_id

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=5)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def schedule(calls: int, window: timedelta, asks: list[float]) -> list[datetime]:
    """Start a call at each moment asked for, or as soon after it as window_delay allows."""
    starts: list[datetime] = []
    now = T0
    for ask in asks:
        now = max(now, at(ask))
        now += timedelta(seconds=window_delay(starts, now, calls, window))
        starts.append(now)
    return starts


def test_calls_go_at_once_while_the_window_has_room() -> None:
    assert window_delay([at(0), at(1)], at(2), 3, WINDOW) == 0.0


def test_a_full_window_waits_until_its_oldest_call_leaves_it() -> None:
    starts = [at(1), at(2), at(3)]
    assert window_delay(starts, at(3), 3, WINDOW) == pytest.approx(3.0)
    assert window_delay(starts, at(5.5), 3, WINDOW) == pytest.approx(0.5)
    assert window_delay(starts, at(6), 3, WINDOW) == 0.0


def test_only_the_last_n_calls_count_and_order_does_not_matter() -> None:
    assert window_delay([at(2), at(0), at(1)], at(2), 2, WINDOW) == pytest.approx(4.0)


def test_calls_older_than_the_window_are_ignored() -> None:
    assert window_delay([at(-10), at(-6), at(0)], at(0), 2, WINDOW) == 0.0


@given(
    calls=st.integers(min_value=1, max_value=10),
    window_seconds=st.floats(min_value=0.1, max_value=10.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=80),
)
def test_never_more_than_n_starts_in_any_window(
    calls: int, window_seconds: float, gaps: list[float]
) -> None:
    window = timedelta(seconds=window_seconds)
    asks = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    starts = schedule(calls, window, asks)
    for i in range(len(starts) - calls):
        assert starts[i + calls] - starts[i] >= window
    # ...and it never waits when the window has room: the first N go when asked.
    assert starts[:calls] == [at(ask) for ask in asks[:calls]]


def test_a_backlog_is_paced_at_the_limit_not_below_it() -> None:
    starts = schedule(25, WINDOW, [0.0] * 200)
    # 200 calls at 25 per 5 s: the last batch starts 7 windows after the first.
    assert starts[-1] - starts[0] == 7 * WINDOW


def test_the_account_digest_hides_the_key_and_tells_accounts_apart() -> None:
    digest = account_id("https://api.leadsquared.com", "u$er/key+1=")
    assert "u$er" not in digest
    assert len(digest) == 64
    assert digest == account_id("https://api.leadsquared.com", "u$er/key+1=")
    assert digest != account_id("https://api-in21.leadsquared.com", "u$er/key+1=")
    assert digest != account_id("https://api.leadsquared.com", "other")


def test_the_budget_resumes_at_the_next_utc_midnight() -> None:
    assert next_utc_midnight(at(0)) == datetime(2026, 11, 30, tzinfo=UTC)
