"""Where a connector stands, read from its tables in bounded time and memory (`lsq-sync
status`): totals counted in SQL, lists capped, whatever the number of leads.

Read-only: nothing here writes to any table. `connector.report` shows it, as text or JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector import pacing
from connector.leadrows import LeadCounts
from connector.leads import LeadState, RowProblem
from connector.schema import account, call, lease
from connector.sync import Connector

DEFAULT_LIMIT = 20

T = TypeVar("T")


@dataclass(frozen=True)
class RunInFlight:
    """A run holding the run lock now: its heartbeat is fresh."""

    run_id: int | None  # None when its record is not (yet) to be seen
    started_at: datetime | None
    heartbeat_age_seconds: float
    seen_at: datetime  # when status looked


@dataclass(frozen=True)
class CallsUsed:
    """Calls of one LeadSquared account, as pacing recorded them (`lsq_sync_call`,
    `lsq_sync_account`), against the configured limits."""

    in_window: int
    limit: int
    window_seconds: float
    today: int
    daily_budget: int | None
    blocked_until: datetime | None  # a throttle holds every process back until then


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    changes_ingested: int
    leads_pushed: int
    leads_rejected: int
    calls: int
    error: str | None


@dataclass(frozen=True)
class Status:
    connector: str
    now: datetime
    limit: int
    changes_not_ingested: int
    leads: LeadCounts
    oldest_waiting: datetime | None  # see LeadRows.oldest_waiting
    rows_without_lead_id: int
    rows_held_back: int  # at ingest (lsq_sync_row_problem)
    run_in_flight: RunInFlight | None
    calls: CallsUsed
    bulk_calls: CallsUsed | None
    not_in_sync: list[LeadState] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)

    @property
    def lag_seconds(self) -> float | None:
        """The age of the oldest change not yet pushed, as far as it is known: changes not yet
        ingested carry no time of their own, so they are counted, not timed."""
        if self.oldest_waiting is None:
            return None
        return max(0.0, (self.now - self.oldest_waiting).total_seconds())


def read_status(connector: Connector, limit: int = DEFAULT_LIMIT) -> Status:
    """The connector's status, with at most `limit` entries in each list."""
    connector.check_ready()
    tables = connector.tables
    config = connector.config
    # Before the connection below: on SQLite, reading the table's columns takes one of its
    # own, which would wait for that one's transaction.
    source = connector.source
    with connector.engine.connect() as connection:
        read = _Reader(connection)
        now = read(_database_now, connector)
        status = Status(
            connector=config.name,
            now=now,
            limit=limit,
            changes_not_ingested=read(tables.changes.pending_changes),
            leads=read(tables.leads.counts, now),
            oldest_waiting=read(tables.leads.oldest_waiting),
            rows_without_lead_id=read(source.rows_without_lead_id),
            rows_held_back=read(tables.problems.count),
            run_in_flight=read(_run_in_flight, connector, now),
            calls=read(
                _calls_used,
                account_id=connector.limiter.account,
                limit=config.leadsquared.rate_limit.calls,
                window_seconds=config.leadsquared.rate_limit.window_seconds,
                daily_budget=config.leadsquared.rate_limit.daily_budget,
                now=now,
            ),
            bulk_calls=None
            if config.leadsquared.bulk.mode == "off"
            else read(
                _calls_used,
                account_id=connector.bulk_limiter.account,
                limit=config.leadsquared.bulk.rate_limit.calls,
                window_seconds=config.leadsquared.bulk.rate_limit.window_seconds,
                daily_budget=None,
                now=now,
            ),
            not_in_sync=read(tables.leads.not_in_sync, limit) if limit else [],
            problems=read(tables.problems.row_problems, limit) if limit else [],
        )
    runs = [_run_summary(row) for row in tables.runs.recent_runs(limit)] if limit else []
    return replace(status, runs=runs)


class _Reader:
    """Runs each query in a transaction of its own. On SQLite every transaction holds the
    database's write lock (connector.database), so one transaction for all of them would
    keep the application's writers waiting for the whole of `status`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __call__(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return query(self.connection, *args, **kwargs)
        finally:
            self.connection.rollback()


def _database_now(connection: Connection, connector: Connector) -> datetime:
    """Now by the clock the records were timed by: PostgreSQL's (pacing and the lease time
    themselves by it, hosts may disagree), the connector's clock on SQLite."""
    if connection.dialect.name == "postgresql":
        moment: datetime = connection.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
        return moment.astimezone(UTC)
    return connector.clock.now()


def _run_in_flight(
    connection: Connection, connector: Connector, now: datetime
) -> RunInFlight | None:
    """The run holding the run lock, if one does: the lease's heartbeat is fresh (a run
    releases it as it ends, and one that died stops beating)."""
    heartbeat = connection.execute(
        sa.select(lease.c.heartbeat_at).where(lease.c.connector == connector.config.name)
    ).scalar_one_or_none()
    if heartbeat is None:
        return None
    age = (now - heartbeat).total_seconds()
    if not -connector.lease_timing.stale_seconds < age < connector.lease_timing.stale_seconds:
        return None
    running = connector.tables.runs.in_progress(connection)
    return RunInFlight(
        run_id=None if running is None else running.run_id,
        started_at=None if running is None else running.started_at,
        heartbeat_age_seconds=round(max(age, 0.0), 3),
        seen_at=now,
    )


def _calls_used(
    connection: Connection,
    *,
    account_id: str,
    limit: int,
    window_seconds: float,
    daily_budget: int | None,
    now: datetime,
) -> CallsUsed:
    in_window = connection.execute(
        sa.select(sa.func.count()).where(
            call.c.account == account_id,
            call.c.started_at > now - timedelta(seconds=window_seconds),
        )
    ).scalar_one()
    row = connection.execute(
        sa.select(account.c.blocked_until, account.c.budget_day, account.c.budget_used).where(
            account.c.account == account_id
        )
    ).one_or_none()
    today = blocked_until = None
    if row is not None:
        today = pacing.calls_today(row.budget_day, row.budget_used, now)
        if pacing.held_back(row.blocked_until, now) > 0:
            blocked_until = row.blocked_until
    return CallsUsed(
        in_window=int(in_window),
        limit=limit,
        window_seconds=window_seconds,
        today=today or 0,
        daily_budget=daily_budget,
        blocked_until=blocked_until,
    )


def _run_summary(row: sa.Row[Any]) -> RunSummary:
    return RunSummary(
        run_id=row.run_id,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        changes_ingested=row.changes_ingested,
        leads_pushed=row.leads_pushed,
        leads_rejected=row.leads_rejected,
        calls=row.calls,
        error=row.error,
    )
