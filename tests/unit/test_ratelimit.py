"""connector.ratelimit.SlidingWindow, driven by a fake clock of plain floats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.ratelimit import SlidingWindow


def run_calls(
    window: SlidingWindow, latencies: list[float], gaps: list[float] | None = None
) -> tuple[list[float], list[float]]:
    """Make one call after another, each starting when `delay()` allows; returns starts, ends."""
    now = 0.0
    starts: list[float] = []
    completions: list[float] = []
    for i, latency in enumerate(latencies):
        start = now + window.delay(now)
        completed = start + latency
        window.record(completed)
        starts.append(start)
        completions.append(completed)
        now = completed + (gaps[i] if gaps else 0.0)
    return starts, completions


def test_first_calls_go_at_once() -> None:
    window = SlidingWindow(3, 5.0)
    for moment in (0.0, 0.1, 0.2):
        assert window.delay(moment) == 0.0
        window.record(moment)


def test_full_window_waits_until_the_oldest_completion_leaves_it() -> None:
    window = SlidingWindow(3, 5.0, margin=0.0)
    for moment in (1.0, 2.0, 3.0):
        window.record(moment)
    assert window.delay(3.0) == pytest.approx(3.0)
    assert window.delay(5.5) == pytest.approx(0.5)
    assert window.delay(6.0) == 0.0
    assert window.delay(100.0) == 0.0


def test_margin_is_added_to_the_wait() -> None:
    window = SlidingWindow(1, 5.0, margin=0.25)
    window.record(10.0)
    assert window.delay(10.0) == pytest.approx(5.25)


def test_only_the_last_n_completions_count() -> None:
    window = SlidingWindow(2, 5.0, margin=0.0)
    for moment in (0.0, 1.0, 2.0):
        window.record(moment)
    assert window.delay(2.0) == pytest.approx(4.0)


@pytest.mark.parametrize(("calls", "window_seconds"), [(0, 5.0), (-1, 5.0), (3, 0.0), (3, -1.0)])
def test_invalid_limits_are_refused(calls: int, window_seconds: float) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        SlidingWindow(calls, window_seconds)


def test_never_more_than_n_starts_in_any_window() -> None:
    window = SlidingWindow(25, 5.0)
    starts, _ = run_calls(window, [0.01] * 200)
    for i in range(len(starts) - 25):
        assert starts[i + 25] - starts[i] >= 5.0
    # ...and it paces rather than stalls: 200 calls in 8 windows, give or take the margins.
    assert starts[-1] < 8 * 5.0 + 8 * 0.1


def test_back_off_blocks_until_the_given_moment() -> None:
    window = SlidingWindow(3, 5.0)
    window.record(1.0)
    window.back_off(until=11.0)
    assert window.delay(1.0) == pytest.approx(10.0)
    assert window.delay(10.5) == pytest.approx(0.5)
    assert window.delay(11.0) == pytest.approx(0.0, abs=1e-9)


def test_after_back_off_the_window_refills_one_call_at_a_time() -> None:
    window = SlidingWindow(2, 5.0, margin=0.0)
    window.back_off(until=10.0)
    assert window.delay(10.0) == pytest.approx(0.0, abs=1e-9)
    window.record(10.1)
    # One slot is still held by the back-off, which ended at 10: the next call may go.
    assert window.delay(10.1) == pytest.approx(0.0, abs=1e-9)
    window.record(10.2)
    assert window.delay(10.2) == pytest.approx(4.9)


def test_back_off_never_shortens_the_wait_the_window_already_imposes() -> None:
    window = SlidingWindow(2, 5.0)
    window.record(0.0)
    window.record(0.1)
    before = window.delay(0.1)
    window.back_off(until=1.0)  # the server said "Retry-After: 0.9"
    assert window.delay(0.1) >= before


latencies_st = st.lists(
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False), min_size=1, max_size=120
)


@given(
    calls=st.integers(min_value=1, max_value=10),
    window_seconds=st.floats(min_value=0.1, max_value=10.0),
    latencies=latencies_st,
    gap=st.floats(min_value=0.0, max_value=2.0),
)
def test_every_start_is_a_window_after_the_completion_n_calls_before(
    calls: int, window_seconds: float, latencies: list[float], gap: float
) -> None:
    window = SlidingWindow(calls, window_seconds)
    starts, completions = run_calls(window, latencies, [gap] * len(latencies))
    for i in range(len(starts) - calls):
        assert starts[i + calls] >= completions[i] + window_seconds
    # No wait while the window is not yet full: each of the first N starts when asked.
    asked = [0.0] + [done + gap for done in completions[:-1]]
    assert starts[:calls] == asked[:calls]
