"""How far behind a connector is, read from its tables in a few bounded queries, and whether
that is progress: what /healthz answers and what the backlog gauges show.

Progress means both: the last successful cycle ended recently, and no change has waited too
long (the lag). A daemon that runs its cycles while LeadSquared refuses every call is alive,
and its lag grows: that is not progress.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connector.changelog import ChangeCursor
from connector.database import translate_errors
from connector.schema import lead, run
from connector.tables import ConnectorTables

# Notes kept by ChangeAges while ingest does not catch up: a day of refreshes every few
# seconds is far more than needed, since only the first note says the age.
_MOST_NOTES = 1000

# The oldest and newest changes not yet ingested, or None when there are none.
ChangeSpan = tuple[ChangeCursor, ChangeCursor] | None


@dataclass(frozen=True)
class Backlog:
    """What waits, counted in SQL; the times are those the connector's clock wrote."""

    changes_pending: int  # captured, not yet ingested
    leads_pending: int  # waiting for a push (retry delays included)
    leads_rejected: int  # LeadSquared refused their values; they wait for new ones
    leads_held_back: int  # pending, but held back by the connector (see `lsq-sync status`)
    oldest_waiting_lead: datetime | None  # since when the longest-waiting lead has waited
    last_success: datetime | None  # when the last run with status ok ended


def read_backlog(engine: Engine, tables: ConnectorTables) -> tuple[Backlog, ChangeSpan]:
    """The backlog and the span of pending changes: one aggregate over the connector's
    pending leads (by its index), two index lookups in the change table, one count."""
    name = tables.connector
    waiting = sa.and_(sa.not_(lead.c.rejected), lead.c.hold.is_(None))
    leads_query = sa.select(
        sa.func.count().filter(waiting),
        sa.func.count().filter(lead.c.rejected),
        sa.func.count().filter(lead.c.hold.is_not(None)),
        sa.func.min(sa.func.coalesce(lead.c.pending_since, lead.c.updated_at)).filter(waiting),
    ).where(lead.c.connector == name, lead.c.pending)
    success_query = sa.select(sa.func.max(run.c.finished_at)).where(
        run.c.connector == name, run.c.status == "ok"
    )
    with translate_errors("reading the connector's backlog"), engine.connect() as connection:
        pending, rejected, held, oldest = connection.execute(leads_query).one()
        last_success = connection.execute(success_query).scalar_one()
        span = tables.changes.pending_span(connection)
        changes = tables.changes.pending_changes(connection) if span is not None else 0
    backlog = Backlog(
        changes_pending=changes,
        leads_pending=pending,
        leads_rejected=rejected,
        leads_held_back=held,
        oldest_waiting_lead=oldest,
        last_success=last_success,
    )
    return backlog, span


class ChangeAges:
    """Since when the oldest pending change has been seen.

    Change rows carry no time (a timestamp per captured row would cost capture), so each
    refresh notes the newest pending change it sees; a change is at least as old as the first
    note that covered it. Notes the cursor has passed are dropped.
    """

    def __init__(self) -> None:
        self._notes: deque[tuple[datetime, ChangeCursor]] = deque()

    def oldest_seen(self, now: datetime, span: ChangeSpan) -> datetime | None:
        if span is None:
            self._notes.clear()
            return None
        oldest, newest = span
        while self._notes and self._notes[0][1] < oldest:
            self._notes.popleft()
        if not self._notes or self._notes[-1][1] < newest:
            self._notes.append((now, newest))
        if len(self._notes) > _MOST_NOTES:
            del self._notes[1]  # the first note says the age; later ones only replace it
        return self._notes[0][0]


@dataclass(frozen=True)
class Bounds:
    max_lag_seconds: float
    max_cycle_age_seconds: float


@dataclass(frozen=True)
class Health:
    """One connector's verdict at one moment."""

    connector: str
    healthy: bool
    reason: str | None
    lag_seconds: float
    last_success: datetime | None
    backlog: Backlog | None

    def as_json(self) -> dict[str, object]:
        backlog = self.backlog
        return {
            "connector": self.connector,
            "healthy": self.healthy,
            "reason": self.reason,
            "lag_seconds": round(self.lag_seconds, 3),
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "changes_pending": backlog.changes_pending if backlog else None,
            "leads_pending": backlog.leads_pending if backlog else None,
            "leads_rejected": backlog.leads_rejected if backlog else None,
            "leads_held_back": backlog.leads_held_back if backlog else None,
        }


def lag_seconds(now: datetime, backlog: Backlog, oldest_change: datetime | None) -> float:
    """The age of the oldest change not yet pushed: a lead waiting, or a change not ingested.
    Rejected and held-back leads wait for new values, not for the connector: not lag."""
    times = [t for t in (backlog.oldest_waiting_lead, oldest_change) if t is not None]
    return max(0.0, (now - min(times)).total_seconds()) if times else 0.0


def judge(
    connector: str,
    *,
    now: datetime,
    backlog: Backlog,
    oldest_change: datetime | None,
    watching_since: datetime,
    bounds: Bounds,
) -> Health:
    """Healthy when the last success is recent and the lag below its bound. Before any run
    succeeded, the time since `watching_since` (the daemon's start) stands for its age."""
    lag = lag_seconds(now, backlog, oldest_change)
    since = backlog.last_success or watching_since
    age = (now - since).total_seconds()
    reasons = []
    if age > bounds.max_cycle_age_seconds:
        said = (
            f"the last successful cycle ended {age:.0f} s ago"
            if backlog.last_success
            else f"no cycle has succeeded in the {age:.0f} s since the daemon started"
        )
        reasons.append(f"{said} (metrics.max_cycle_age_seconds: {bounds.max_cycle_age_seconds:g})")
    if lag > bounds.max_lag_seconds:
        reasons.append(
            f"changes have waited {lag:.0f} s to be pushed (metrics.max_lag_seconds: "
            f"{bounds.max_lag_seconds:g})"
        )
    return Health(
        connector=connector,
        healthy=not reasons,
        reason="; ".join(reasons) or None,
        lag_seconds=lag,
        last_success=backlog.last_success,
        backlog=backlog,
    )


def unreadable(connector: str, error: str) -> Health:
    return Health(
        connector=connector,
        healthy=False,
        reason=f"cannot read the connector's tables: {error}",
        lag_seconds=0.0,
        last_success=None,
        backlog=None,
    )
