"""The connector's lead table as push's LeadQueue (connector.push): the leads due, which of
them their rows still own, and what each push came to.

Each method is a transaction of its own, fenced: a run that lost the run lock records nothing.
What a push's outcome does to a lead is decided in the pure core (connector.leads); here the
lead's row is read under a lock, and the decision written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from connector.leadrows import LeadRows, lead_row, lead_state, loads_reasons, locked_lead
from connector.leads import LeadState, after_failure, after_push, reasons_kept
from connector.ownership import Checked, check_owners
from connector.rowproblems import RowProblems
from connector.runlock import Fence
from connector.schema import lead
from connector.source import SourceTable
from connector.values import Values, dumps, loads

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _place(state: LeadState | None, end: datetime) -> tuple[datetime, str]:
    """A lead's place in the queue; an open bound is an end of time, which no lead reaches."""
    if state is None:
        return end, ""
    return state.waiting_since or _EARLIEST, state.lead_id


class SqlLeadQueue:
    def __init__(
        self,
        engine: Engine,
        *,
        connector: str,
        fence: Fence,
        source: SourceTable,
        rows: LeadRows,
        problems: RowProblems,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.fence = fence
        self.source = source
        self.rows = rows
        self.problems = problems

    def _due(self, now: datetime) -> sa.ColumnElement[bool]:
        return sa.and_(
            lead.c.connector == self.connector,
            lead.c.pending,
            sa.not_(lead.c.rejected),
            # A held lead comes too, never to be sent: the push phase checks that its rows
            # still have its lead id, and settles or detaches it (connector.ownership).
            sa.or_(lead.c.next_attempt_at.is_(None), lead.c.next_attempt_at <= now),
        )

    def due_count(self, now: datetime, up_to: int | None = None) -> int:
        """How many leads are due for a push, counted up to `up_to` (enough to decide on), or
        all of them."""
        with self.engine.connect() as connection:
            return self.count_due(connection, now, up_to)

    def count_due(self, connection: Connection, now: datetime, up_to: int | None = None) -> int:
        """`due_count` in the caller's transaction."""
        due = sa.select(lead.c.lead_id).where(self._due(now)).limit(up_to).subquery()
        count: int = connection.execute(sa.select(sa.func.count()).select_from(due)).scalar_one()
        return count

    def pending_leads(
        self,
        now: datetime,
        after: LeadState | None,
        limit: int,
        *,
        before: LeadState | None = None,
        newer_than: datetime | None = None,
        until: datetime | None = None,
        newest_first: bool = False,
    ) -> list[LeadState]:
        # Every lead made pending has a `pending_since` (migration 0007 gave older ones theirs):
        # the plain column, so that its index gives the order.
        since = lead.c.pending_since
        order = (since.desc(), lead.c.lead_id.desc()) if newest_first else (since, lead.c.lead_id)
        # Every bound is always there (open ones as the ends of time), so that a push's many
        # reads are two statements, each compiled once.
        low_since, low_id = _place(after, _EARLIEST)
        high_since, high_id = _place(before, _LATEST)
        query = (
            sa.select(lead)
            .where(
                self._due(now),
                since > (newer_than or _EARLIEST),
                since <= (until or _LATEST),
                sa.or_(since > low_since, sa.and_(since == low_since, lead.c.lead_id > low_id)),
                sa.or_(since < high_since, sa.and_(since == high_since, lead.c.lead_id < high_id)),
            )
            .order_by(*order)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [lead_state(row) for row in connection.execute(query)]

    def due_leads(
        self, connection: Connection, now: datetime, after: str | None, limit: int
    ) -> list[LeadState]:
        """Leads due for a push, by lead id, in the caller's transaction (a dry run's plan)."""
        query = sa.select(lead).where(self._due(now)).order_by(lead.c.lead_id).limit(limit)
        if after is not None:
            query = query.where(lead.c.lead_id > after)
        return [lead_state(row) for row in connection.execute(query)]

    def owned(self, leads: Sequence[LeadState], now: datetime) -> Checked:
        with self.engine.begin() as connection:
            # It may hold, share or rewrite leads: run state, fenced like every other write.
            self.fence.check(connection)
            return check_owners(
                connection,
                rows=self.rows,
                problems=self.problems,
                source=self.source,
                leads=leads,
                now=now,
            )

    def record_pushed(
        self,
        lead_id: str,
        update: Values,
        attributes: frozenset[str],
        now: datetime,
        *,
        error: str | None = None,
    ) -> None:
        """Record exactly the attributes sent. `error` says why attributes were set aside on
        the way; it stays while they do."""
        with self.engine.begin() as connection:
            row = locked_lead(connection, self.connector, self.fence, lead_id)
            pushed, set_aside, pending = after_push(
                loads(row.desired),
                loads(row.pushed),
                update,
                attributes,
                loads(row.set_aside),
                kept_when_empty=self.source.config.kept_when_empty,
            )
            connection.execute(
                lead_row(self.connector, lead_id).values(
                    pushed=dumps(pushed),
                    set_aside=dumps(set_aside),
                    pending=pending,
                    # Still pending: it changed while its call was in flight, a change as new
                    # as any the push is taking in now (see connector.pushorder).
                    pending_since=now if pending else row.pending_since,
                    attempts=0,
                    last_error=error if set_aside else None,
                    aside_reason=(
                        dumps(reasons_kept(loads_reasons(row.aside_reason), set_aside))
                        if set_aside
                        else None
                    ),
                    next_attempt_at=None,
                    pushed_at=now,
                    updated_at=now,
                )
            )

    def record_failure(
        self,
        lead_id: str,
        desired: Values,
        error: str,
        now: datetime,
        *,
        rejected: bool,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Keep the lead pending with its error (connector.leads.after_failure)."""
        with self.engine.begin() as connection:
            row = locked_lead(connection, self.connector, self.fence, lead_id)
            attempts, still_rejected, retry_at = after_failure(
                loads(row.desired),
                desired,
                row.attempts,
                rejected=rejected,
                next_attempt_at=next_attempt_at,
            )
            connection.execute(
                lead_row(self.connector, lead_id).values(
                    attempts=attempts,
                    last_error=error,
                    rejected=still_rejected,
                    next_attempt_at=retry_at,
                    # updated_at is left: it says since when the lead's values wait, which a
                    # failed push does not change (connector.health reads the lag from it).
                )
            )

    def set_aside(self, lead_id: str, refused: Values, error: str, now: datetime) -> None:
        """Hold back attributes LeadSquared does not know, for the values it refused."""
        with self.engine.begin() as connection:
            row = locked_lead(connection, self.connector, self.fence, lead_id)
            connection.execute(
                lead_row(self.connector, lead_id).values(
                    set_aside=dumps({**loads(row.set_aside), **refused}),
                    last_error=error,
                    aside_reason=dumps(
                        {**loads_reasons(row.aside_reason), **dict.fromkeys(refused, error)}
                    ),
                )
            )
