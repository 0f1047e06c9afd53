"""AccountLimiter on a real database: one window shared by every process using the same keys."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from connector import migrate
from connector.clock import SystemClock
from connector.config import LeadSquaredConfig
from connector.database import create_engine
from connector.errors import BudgetExhaustedError
from connector.pacing import RECOVERY_WINDOWS, next_utc_midnight
from connector.ratelimit import AccountLimiter
from connector.schema import account, call

WINDOW = 0.4
CALLS = 3


def leadsquared(**rate_limit: Any) -> LeadSquaredConfig:
    return LeadSquaredConfig.model_validate(
        {
            "host": "http://127.0.0.1:9",
            "access_key": "ak$/+=",
            "secret_key": "sk",
            "rate_limit": {"calls": CALLS, "window_seconds": WINDOW, **rate_limit},
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


def limiter(engine: sa.Engine, stop: threading.Event | None = None, **rate: Any) -> AccountLimiter:
    stop = stop or threading.Event()
    return AccountLimiter(engine, leadsquared(**rate), SystemClock(stop), stop)


def call_starts(engine: sa.Engine) -> list[datetime]:
    with engine.connect() as connection:
        return sorted(connection.scalars(sa.select(call.c.started_at)))


def test_two_processes_share_one_window(engines: list[sa.Engine]) -> None:
    limiters = [limiter(engine, margin_seconds=0.0) for engine in engines]

    def take(one: AccountLimiter) -> None:
        for _ in range(6):
            assert one.acquire()

    threads = [threading.Thread(target=take, args=(one,)) for one in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    starts = call_starts(engines[0])
    assert len(starts) == 12
    for i in range(len(starts) - CALLS):
        assert starts[i + CALLS] - starts[i] >= timedelta(seconds=WINDOW)


def test_a_throttle_seen_by_one_process_holds_back_the_other(engines: list[sa.Engine]) -> None:
    first, second = (limiter(engine) for engine in engines)
    assert first.acquire()
    first.throttled(retry_after=0.3)
    with engines[0].connect() as connection:
        blocked_until = connection.scalar(sa.select(account.c.blocked_until))
    assert blocked_until is not None

    assert second.acquire()

    assert call_starts(engines[0])[-1] >= blocked_until


def test_throttling_slows_this_process_then_it_recovers(engines: list[sa.Engine]) -> None:
    one = limiter(engines[0], calls=10)
    one.throttled(retry_after=0.0)
    with engines[0].connect() as connection:
        moment = connection.scalar(sa.select(account.c.blocked_until))
    assert moment is not None
    assert one.calls_at(moment) == 8
    # A second throttle within the same window does not slow it further: calls in flight
    # together are often throttled together.
    one.throttled(retry_after=0.0)
    assert one.calls_at(moment) == 8
    later = moment + one.window * RECOVERY_WINDOWS * 2
    assert one.calls_at(later) == 10


def test_the_daily_budget_stops_calls_until_the_next_day(engines: list[sa.Engine]) -> None:
    one = limiter(engines[0], daily_budget=2, calls=100)
    assert one.acquire()
    assert one.acquire()
    with pytest.raises(BudgetExhaustedError) as raised:
        one.acquire()
    now = datetime.now(UTC)
    assert raised.value.resume_at == next_utc_midnight(now)
    assert "daily budget of 2" in str(raised.value)
    # Another process with the same keys is held to the same budget.
    with pytest.raises(BudgetExhaustedError):
        limiter(engines[1], daily_budget=2, calls=100).acquire()
    assert len(call_starts(engines[0])) == 2

    with engines[0].begin() as connection:
        connection.execute(sa.update(account).values(budget_day="2000-01-01"))
    assert one.acquire()


class SignallingClock(SystemClock):
    """Says when a sleep begins, so a test can act while the limiter is waiting."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(stop)
        self.sleeping = threading.Event()

    def sleep(self, seconds: float) -> bool:
        self.sleeping.set()
        return super().sleep(seconds)


def test_stopping_ends_a_wait_for_a_slot(engines: list[sa.Engine]) -> None:
    stop = threading.Event()
    clock = SignallingClock(stop)
    one = AccountLimiter(engines[0], leadsquared(calls=1, window_seconds=60), clock, stop)
    assert one.acquire()
    waited: list[object] = []
    thread = threading.Thread(target=lambda: waited.append(one.acquire()))
    thread.start()
    assert clock.sleeping.wait(timeout=10)
    stop.set()
    thread.join(timeout=10)
    assert waited == [None]
    assert len(call_starts(engines[0])) == 1


def test_accounts_do_not_share_a_window(engines: list[sa.Engine]) -> None:
    one = limiter(engines[0], calls=1, window_seconds=60)
    other = AccountLimiter(
        engines[1],
        leadsquared(calls=1, window_seconds=60).model_copy(update={"host": "http://other"}),
        SystemClock(),
        threading.Event(),
    )
    assert one.acquire()
    assert other.acquire()  # would wait a minute if it shared the first account's window
    with engines[0].connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(account)) == 2


class ShiftedClock(SystemClock):
    """A monotonic clock a test can push forward, as a stalled process would see it."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.shift


def test_a_call_sent_late_moves_its_slot_to_when_it_goes_out(engines: list[sa.Engine]) -> None:
    clock = ShiftedClock()
    one = AccountLimiter(engines[0], leadsquared(), clock, threading.Event())
    on_time = one.acquire()
    assert on_time is not None
    one.going_out(on_time)  # sent at once: the slot stays
    late = one.acquire()
    assert late is not None
    clock.shift = 0.3  # the process stalled between taking the slot and sending

    one.going_out(late)

    starts = call_starts(engines[0])
    assert starts[0] == on_time.started_at
    assert starts[1] >= late.started_at + timedelta(seconds=0.3)
