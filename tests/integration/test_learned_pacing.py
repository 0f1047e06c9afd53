"""What AccountLimiter learns, on a real database: the margin from its calls' timings, the
slower pace after a throttle (kept per account for every process), and a throttle's hold for
calls that had already taken their slot."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from connector import migrate
from connector.clock import SystemClock
from connector.config import LeadSquaredConfig
from connector.database import create_engine
from connector.pacing import MIN_TIMINGS, RECOVERY_WINDOWS, margin_bounds
from connector.ratelimit import AccountLimiter, Slot
from connector.schema import account, call


def leadsquared(**rate_limit: Any) -> LeadSquaredConfig:
    return LeadSquaredConfig.model_validate(
        {
            "host": "http://127.0.0.1:9",
            "access_key": "ak",
            "secret_key": "sk",
            "rate_limit": {"calls": 10, "window_seconds": 60, **rate_limit},
        }
    )


@pytest.fixture
def engines(db_url: str) -> Iterator[list[sa.Engine]]:
    """Two engines on one database: two processes, as far as the database can tell."""
    made = [create_engine(db_url), create_engine(db_url)]
    migrate.upgrade(made[0])
    yield made
    for engine in made:
        engine.dispose()


class ControlledClock(SystemClock):
    """The system's clock, with a monotonic clock a test can push forward (a call's time to
    its answer), and a signal when a sleep begins."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        super().__init__(stop)
        self.shift = 0.0
        self.sleeping = threading.Event()

    def monotonic(self) -> float:
        return super().monotonic() + self.shift

    def sleep(self, seconds: float) -> bool:
        self.sleeping.set()
        return super().sleep(seconds)


def limiter(engine: sa.Engine, clock: SystemClock | None = None, **rate: Any) -> AccountLimiter:
    clock = clock or SystemClock()
    return AccountLimiter(engine, leadsquared(**rate), clock, clock.stop)


def account_row(engine: sa.Engine) -> sa.Row[Any]:
    with engine.connect() as connection:
        return connection.execute(sa.select(account)).one()


def call_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as connection:
        return sorted(connection.scalars(sa.select(call.c.call_id)))


def taken(one: AccountLimiter) -> Slot:
    slot = one.acquire()
    assert slot is not None
    return slot


# -- the learned margin ------------------------------------------------------------------------


def answer_calls(one: AccountLimiter, clock: ControlledClock, seconds: list[float]) -> None:
    """One call per entry, each answered that long after its slot."""
    for answer in seconds:
        slot = taken(one)
        clock.shift += answer
        one.answered(slot)


def test_the_margin_widens_to_the_spread_of_the_calls_timings(engines: list[sa.Engine]) -> None:
    clock = ControlledClock()
    one = limiter(engines[0], clock, calls=100, window_seconds=5)
    floor, ceiling = margin_bounds(0.05, 5)
    # Until enough calls are timed, the widest margin: a narrow one would cost a throttle.
    assert one.margin == ceiling
    # Answers 0.2 to 0.5 s after their slot: 0.3 s of spread, for the way there and back.
    answer_calls(one, clock, [0.2 + 0.3 * i / 39 for i in range(40)])
    assert 0.25 < one.margin < 0.3 + 0.05
    assert floor < one.margin < ceiling


def test_steady_timings_keep_the_configured_margin(engines: list[sa.Engine]) -> None:
    clock = ControlledClock()
    one = limiter(engines[0], clock, calls=100, window_seconds=5, margin_seconds=0.08)
    answer_calls(one, clock, [0.25] * MIN_TIMINGS)
    assert one.margin == 0.08


def test_a_new_process_starts_from_the_margin_learned_before(engines: list[sa.Engine]) -> None:
    clock = ControlledClock()
    first = limiter(engines[0], clock, calls=100, window_seconds=5)
    answer_calls(first, clock, [0.1 + 0.01 * (i % 20) for i in range(40)])
    taken(first)  # its slot records the margin learned so far
    learned = first.margin
    assert account_row(engines[0]).margin_seconds == pytest.approx(learned)

    later = limiter(engines[1], calls=100, window_seconds=5)
    assert later.margin == margin_bounds(0.05, 5)[1]  # nothing read yet
    taken(later)
    assert later.margin == pytest.approx(learned)


# -- the slower pace after a throttle ----------------------------------------------------------


def test_the_slower_pace_is_kept_for_every_process_and_recovers(engines: list[sa.Engine]) -> None:
    first = limiter(engines[0])
    first.throttled(retry_after=0.0)
    row = account_row(engines[0])
    assert (row.slow_calls, row.slow_since) == (8, row.blocked_until)

    # Another process, started after the throttle, paces by it from its first call.
    stop = threading.Event()
    clock = ControlledClock(stop)
    later = limiter(engines[1], clock)
    assert later.calls_at(row.slow_since) == 8
    for _ in range(8):
        taken(later)
    ninth: list[Slot | None] = []
    waiting = threading.Thread(target=lambda: ninth.append(later.acquire()))
    waiting.start()
    assert clock.sleeping.wait(timeout=10), "the ninth call in the window must wait"
    stop.set()
    waiting.join(timeout=10)
    assert ninth == [None]
    assert len(call_ids(engines[0])) == 8
    # It recovers as before: one call back per RECOVERY_WINDOWS quiet windows.
    recovered = row.slow_since + later.window * RECOVERY_WINDOWS * 2
    assert later.calls_at(recovered) == 10
    assert first.calls_at(recovered) == 10


def test_throttles_seen_by_two_processes_at_once_lower_the_pace_once(
    engines: list[sa.Engine],
) -> None:
    first, second = limiter(engines[0]), limiter(engines[1])
    first.throttled(retry_after=0.0)
    second.throttled(retry_after=0.0)
    row = account_row(engines[0])
    assert row.slow_calls == 8
    assert second.calls_at(row.slow_since) == first.calls_at(row.slow_since) == 8


# -- a throttle's hold, for calls that already took their slot ---------------------------------


def blocked_until(engine: sa.Engine) -> Any:
    moment = account_row(engine).blocked_until
    assert moment is not None
    return moment


def test_a_call_holding_a_slot_waits_out_the_retry_after(engines: list[sa.Engine]) -> None:
    one = limiter(engines[0], calls=100)
    throttled_call = taken(one)
    waiting_call = taken(one)  # took its slot before the throttled answer came back
    one.going_out(throttled_call)
    one.throttled(retry_after=0.3)
    held_until = blocked_until(engines[0])

    sent = one.going_out(waiting_call)

    assert sent is not None
    # It goes out under a new slot, timed from after the hold; the old one is forgotten.
    assert sent.started_at >= held_until
    assert call_ids(engines[0]) == [throttled_call.call_id, sent.call_id]
    assert account_row(engines[0]).budget_used == 2
    # A slot taken once the hold is over goes out as it is.
    after = taken(one)
    assert one.going_out(after) == after


def test_stopping_ends_the_wait_for_a_hold(engines: list[sa.Engine]) -> None:
    stop = threading.Event()
    clock = ControlledClock(stop)
    one = limiter(engines[0], clock, calls=100)
    waiting_call = taken(one)
    one.throttled(retry_after=60)
    result: list[Slot | None] = []
    thread = threading.Thread(target=lambda: result.append(one.going_out(waiting_call)))
    thread.start()
    assert clock.sleeping.wait(timeout=10)
    stop.set()
    thread.join(timeout=10)
    assert result == [None]
    # The call never went out: its slot and its count against the day's budget are given back.
    with engines[0].connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(call)) == 0
        assert connection.scalar(sa.select(account.c.budget_used)) == 0


def test_a_throttle_without_retry_after_holds_calls_for_a_window(
    engines: list[sa.Engine],
) -> None:
    one = limiter(engines[0], calls=100, window_seconds=0.3, margin_seconds=0.0)
    waiting_call = taken(one)
    one.throttled(retry_after=None)
    held_until = blocked_until(engines[0])
    sent = one.going_out(waiting_call)
    assert sent is not None
    assert sent.started_at >= held_until
    assert held_until - waiting_call.started_at >= timedelta(seconds=0.3)


@pytest.mark.parametrize("margin", [-5.0, 1e9, float("nan")])
def test_hostile_values_in_the_accounts_row_keep_pacing_within_bounds(
    engines: list[sa.Engine], margin: float
) -> None:
    limiter(engines[0], calls=3, window_seconds=5).throttled(retry_after=0.0)
    hostile = {"slow_calls": -4, "margin_seconds": margin}
    with engines[0].begin() as connection:
        connection.execute(sa.update(account).values(**hostile))
    later = limiter(engines[1], calls=3, window_seconds=5)
    assert later.acquire() is not None  # one call per window still goes
    floor, ceiling = margin_bounds(0.05, 5)
    assert floor <= later.margin <= ceiling
