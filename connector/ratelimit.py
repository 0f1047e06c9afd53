"""Pacing every LeadSquared call: at most N in any sliding window of W seconds, and a daily cap.

The limit belongs to the LeadSquared account, not to one process: a manual run straight after
cron's, a restart, or two connectors sharing keys must all keep to it together. So the calls
of the recent past live in the database (`lsq_sync_call`), and every process takes its slot
there, in a transaction that holds the account's row. On PostgreSQL the server's clock times
the slots, so processes on several hosts agree on what "the last 5 seconds" means.

A slot is taken when a call *starts*: LeadSquared counts a call when it arrives, which is
between its start and its answer, and counting from starts is what lets the window be used
in full while answers take 100-500 ms. The margin covers the time from taking a slot to the
call's arrival, and as that time varies (a network's jitter), the limiter times every call from
its slot to its answer and widens the margin to the spread of those timings
(`pacing.learned_margin`).

What pacing learns is the account's, so it is kept in the account's row: the slower pace a
throttle set (every process paces by it, and it recovers as time passes), and the learned
margin (a process that has timed no call of its own yet starts from it).

What those records mean (how long to wait, how a throttle slows the calls down) is worked
out by the pure `connector.pacing`; this module reads and writes the records.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from connector import pacing
from connector.clock import Clock
from connector.config import LeadSquaredConfig
from connector.errors import BudgetExhaustedError
from connector.schema import account, call

log = logging.getLogger(__name__)

# Calls older than this are of no use to any window; they are deleted as new ones are made.
_KEEP_CALLS = timedelta(hours=1)
# A slot is moved at most this often before its call goes out; each move is one short commit.
_MAX_SLOT_MOVES = 3


@dataclass(frozen=True)
class Slot:
    """A call's place in the window: when it counts from, in the database's time, and when
    that was on this process's monotonic clock."""

    call_id: int
    started_at: datetime
    taken: float

    def later_by(self, seconds: float) -> Slot:
        moved = self.started_at + timedelta(seconds=seconds)
        return Slot(self.call_id, moved, self.taken + seconds)


def account_id(host: str, access_key: str) -> str:
    """Names an account in the database without storing its key."""
    return hashlib.sha256(f"{host}\n{access_key}".encode()).hexdigest()


class AccountLimiter:
    """Takes a slot for every call of one account, shared with every other process.

    Thread-safe: each `acquire` is its own short transaction.
    """

    def __init__(
        self,
        engine: Engine,
        config: LeadSquaredConfig,
        clock: Clock,
        stop: threading.Event,
        *,
        bulk: bool = False,
    ) -> None:
        """With `bulk`, the limiter of the account's bulk calls (leadsquared.bulk.rate_limit),
        which also take a slot from the account's own limiter."""
        self.engine = engine
        host = f"{config.host} bulk" if bulk else config.host
        self.account = account_id(host, config.access_key.get_secret_value())
        rate = config.bulk.rate_limit if bulk else config.rate_limit
        self.configured_calls = rate.calls
        # The window with the configured margin: a throttle's hold and the pace's recovery are
        # timed in it. Slots are spaced by the window with the learned margin (`margin`).
        self.window = timedelta(seconds=rate.window_seconds + rate.margin_seconds)
        self.window_seconds = rate.window_seconds
        self.configured_margin = rate.margin_seconds
        # The bulk calls are counted in the account's own budget.
        self.daily_budget = None if bulk else config.rate_limit.daily_budget
        self.clock = clock
        self.stop = stop
        self._postgres = engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        # Seconds from each recent slot to its call's answer, on the monotonic clock.
        self._timings: deque[float] = deque(maxlen=pacing.KEPT_TIMINGS)
        # The margin the account's row held when last read: until this process has timed
        # enough calls of its own, it paces by what earlier ones learned.
        self._stored_margin: float | None = None
        # On the monotonic clock: calls that took their slot before a throttle's answer came
        # back do not go out before its hold ends.
        self._held_until = float("-inf")
        # Set while a run holds the run lock (runlock.Lease.call_delay): asked in each slot's
        # transaction, it gives seconds to wait before a call may start, or raises when the
        # run may start no call at all.
        self.gate: Callable[[Connection], float] | None = None

    def calls_at(self, now: datetime) -> int:
        """The calls per window the account's calls allow themselves at `now`: lower after
        throttling, and back up by one for every RECOVERY_WINDOWS windows without a throttle."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(account.c.slow_calls, account.c.slow_since).where(
                    account.c.account == self.account
                )
            ).one_or_none()
        return self._pace(row).calls_at(now)

    @property
    def margin(self) -> float:
        """The margin the next slot is spaced by: the spread of this process's timings, or
        the account's stored margin until it has enough, within `pacing.margin_bounds`."""
        with self._lock:
            spread = pacing.timing_spread(self._timings)
            if spread is None:
                spread = self._stored_margin
        return pacing.learned_margin(spread, self.configured_margin, self.window_seconds)

    def answered(self, slot: Slot) -> None:
        """The call of `slot` has its answer: its time from the slot is one more timing."""
        seconds = self.clock.monotonic() - slot.taken
        if seconds >= 0:
            with self._lock:
                self._timings.append(seconds)

    def acquire(self) -> Slot | None:
        """Wait for a slot and take it. None when stopping cut the wait short.

        Raises BudgetExhaustedError when the daily budget is spent.
        """
        while not self.stop.is_set():
            taken = self._try_take()
            if isinstance(taken, Slot):
                return taken
            if not self.clock.sleep(taken):
                return None
        return None

    def going_out(self, slot: Slot) -> Slot | None:
        """Call just before the request is sent; send it with the slot returned. None when
        stopping cut a wait short.

        If a throttle's hold began after the slot was taken, wait it out, then take a new slot:
        the old one was counted from before the hold, and moving it past the calls that took
        their slots as the hold ended would crowd their window.

        If the call goes out later than its slot says (a slow commit, a busy process), move
        the slot to now. A slot counts from when it was taken, and LeadSquared counts a call
        from when it arrives; a call sent late would otherwise let the call N slots later
        arrive less than a window after it. Moving the slot keeps the window true whatever
        the delay.
        """
        with self._lock:
            held = self._held_until - self.clock.monotonic()
            before_hold = slot.taken < self._held_until
        if held > 0 and before_hold:
            stopped = not self.clock.sleep(held)
            self._give_back(slot)  # its call never goes out under it, stopped or not
            return None if stopped else self.acquire()
        margin = self.margin
        for _ in range(_MAX_SLOT_MOVES):
            late = self.clock.monotonic() - slot.taken
            if not pacing.sent_late(late, margin):
                return slot
            slot = slot.later_by(late)
            with self.engine.begin() as connection:
                if self._postgres:
                    connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
                connection.execute(
                    sa.update(call)
                    .where(call.c.call_id == slot.call_id)
                    .values(started_at=slot.started_at)
                )
        return slot

    def throttled(self, retry_after: float | None) -> None:
        """LeadSquared throttled a call: hold every process back, and slow the account's calls
        down.

        Without a Retry-After the account waits a whole window. Being throttled at all means
        the account allows fewer calls than configured (other programs share the keys, or the
        plan's limit is lower), so its calls are paced lower, at most once a window; the slower
        pace is kept in the account's row, for every process and every later run.
        """
        hold = self.window.total_seconds() if retry_after is None else retry_after
        with self._lock:
            self._held_until = max(self._held_until, self.clock.monotonic() + hold)
        with self.engine.begin() as connection:
            row = self._locked_account(connection)
            now = self._now(connection)
            until = pacing.hold_until(now, retry_after, self.window)
            before = self._pace(row)
            after = before.throttled(now)
            values: dict[str, Any] = {}
            if row.blocked_until is None or row.blocked_until < until:
                values["blocked_until"] = until
            if after.slowdown is not None and after != before:
                values.update(slow_calls=after.slowdown.calls, slow_since=after.slowdown.at)
            if values:
                connection.execute(
                    sa.update(account).where(account.c.account == self.account).values(**values)
                )
        current, slower = before.calls_at(now), after.calls_at(now)
        if slower < current:
            log.warning(
                "throttled by LeadSquared below the configured rate limit; "
                "pacing lower for a while",
                extra={"calls": slower, "configured_calls": self.configured_calls},
            )

    def _try_take(self) -> Slot | float:
        """Take a slot now, or say how many seconds to wait before trying again."""
        with self.engine.begin() as connection:
            if self._postgres:
                # The call goes out after this commit but counts from `now`, so the commit
                # must not wait for the WAL to reach the disk: on a busy server that takes
                # longer than the margin. A server crash may lose a slot or two; not a call.
                connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            if self.gate is not None and (wait := self.gate(connection)) > 0:
                return wait
            row = self._locked_account(connection)
            # Read the clock once the account is ours: a slot timed from before a wait for
            # the lock would start earlier than it really does, and crowd the next window.
            now = self._now(connection)
            taken = self.clock.monotonic()
            if (blocked := pacing.held_back(row.blocked_until, now)) > 0:
                return blocked
            used = pacing.calls_today(row.budget_day, row.budget_used, now)
            if self.daily_budget is not None and used >= self.daily_budget:
                raise BudgetExhaustedError(self.daily_budget, pacing.next_utc_midnight(now))
            calls = self._pace(row).calls_at(now)
            with self._lock:
                self._stored_margin = row.margin_seconds
                own = pacing.timing_spread(self._timings)
            window = timedelta(seconds=self.window_seconds + self.margin)
            starts = connection.scalars(
                sa.select(call.c.started_at)
                .where(call.c.account == self.account, call.c.started_at > now - window)
                .order_by(call.c.started_at.desc())
                .limit(calls)
            ).all()
            delay = pacing.window_delay(starts, now, calls, window)
            if delay > 0:
                return delay
            call_id: int = connection.execute(
                sa.insert(call)
                .values(account=self.account, started_at=now)
                .returning(call.c.call_id)
            ).scalar_one()
            # The margin is always written (the stored one until this process has learned
            # its own), so that this is one statement for the life of the process.
            margin = (
                row.margin_seconds
                if own is None
                else pacing.learned_margin(own, self.configured_margin, self.window_seconds)
            )
            connection.execute(
                sa.update(account)
                .where(account.c.account == self.account)
                .values(
                    budget_day=pacing.budget_day(now), budget_used=used + 1, margin_seconds=margin
                )
            )
            connection.execute(
                sa.delete(call).where(
                    call.c.account == self.account, call.c.started_at < now - _KEEP_CALLS
                )
            )
            return Slot(call_id, now, taken)

    def _give_back(self, slot: Slot) -> None:
        """Forget a slot whose call never went out, and the call it counted in the budget."""
        with self.engine.begin() as connection:
            connection.execute(sa.delete(call).where(call.c.call_id == slot.call_id))
            connection.execute(
                sa.update(account)
                .where(
                    account.c.account == self.account,
                    account.c.budget_used > 0,
                    # Given back after midnight, it was counted in the day before.
                    account.c.budget_day == pacing.budget_day(slot.started_at),
                )
                .values(budget_used=account.c.budget_used - 1)
            )

    def _pace(self, row: Any) -> pacing.Pace:
        """The account's pace, as its row (None if not yet made) keeps it."""
        if row is None or row.slow_calls is None or row.slow_since is None:
            return pacing.Pace(self.configured_calls, self.window)
        # A row edited by hand must not stop every call: at least one per window.
        slowdown = pacing.Slowdown(max(1, row.slow_calls), row.slow_since)
        return pacing.Pace(self.configured_calls, self.window, slowdown)

    def _now(self, connection: Connection) -> datetime:
        if self._postgres:
            moment: datetime = connection.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
            return moment.astimezone(UTC)
        return self.clock.now()

    def _locked_account(self, connection: Connection) -> Any:
        self._ensure_account_row(connection)
        query = sa.select(
            account.c.blocked_until,
            account.c.budget_day,
            account.c.budget_used,
            account.c.slow_calls,
            account.c.slow_since,
            account.c.margin_seconds,
        ).where(account.c.account == self.account)
        if self._postgres:
            # Every process taking a slot for this account queues here, so two never both
            # see the last free slot. SQLite's BEGIN IMMEDIATE already serialises them.
            query = query.with_for_update()
        return connection.execute(query).one()

    def _ensure_account_row(self, connection: Connection) -> None:
        insert = (postgresql.insert if self._postgres else sqlite.insert)(account)
        connection.execute(
            insert.values(account=self.account, budget_used=0).on_conflict_do_nothing()
        )
