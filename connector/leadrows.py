"""Lead rows as the connector's own steps rewrite them, in the caller's transaction: which row
owns a lead (connector.ownership), retries a user asks for, and reading leads back.

Also the helpers every module that writes lead rows shares: the UPDATE of one lead, the lead
row locked behind the run's fence, and a row read back as a LeadState.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.database import among, is_postgres
from connector.leads import LeadState, SourceRow
from connector.runlock import Fence
from connector.schema import lead
from connector.values import FORGOTTEN, dumps, loads

# Lead ids or keys per IN list: well below every database's limit on bound parameters.
IDS_PER_QUERY = 2000


@dataclass(frozen=True)
class LeadCounts:
    """How many leads stand where, counted in SQL (`lsq-sync status`). A lead counts once
    among pending, rejected, held back and conflicts; `attributes_set_aside` overlaps them."""

    known: int = 0
    not_in_sync: int = 0  # any of the below
    pending: int = 0  # waiting for a push, now or after a retry delay (not rejected or held)
    retrying_later: int = 0  # among them, with a retry time still to come
    rejected: int = 0
    held_back: int = 0  # the connector holds it back (a value that cannot be sent, detached)
    conflicts: int = 0  # several rows have its lead id
    attributes_set_aside: int = 0  # leads with attributes held back


def _not_in_sync() -> sa.ColumnElement[bool]:
    return sa.or_(
        lead.c.pending,
        lead.c.rejected,
        lead.c.set_aside != "{}",
        lead.c.hold.is_not(None),
        lead.c.other_key.is_not(None),
    )


def _waiting() -> sa.ColumnElement[bool]:
    """Leads a run is to push: pending, neither rejected nor held back by the connector."""
    return sa.and_(
        lead.c.pending,
        sa.not_(lead.c.rejected),
        lead.c.hold.is_(None),
        lead.c.other_key.is_(None),
    )


def waiting_since(now: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """`pending_since` for a lead made pending at `now`: unchanged while it was already
    waiting its turn, so that changing again and again never sends a lead to the back."""
    waiting = sa.and_(lead.c.pending, sa.not_(lead.c.rejected), lead.c.pending_since.is_not(None))
    return sa.case((waiting, lead.c.pending_since), else_=now)


def _now(now: datetime) -> sa.ColumnElement[Any]:
    return sa.literal(now, lead.c.pending_since.type)


class LeadRows:
    def __init__(self, connector: str, fence: Fence) -> None:
        self.connector = connector
        self.fence = fence

    def all_leads(self, connection: Connection) -> list[LeadState]:
        query = sa.select(lead).where(lead.c.connector == self.connector).order_by(lead.c.lead_id)
        return [lead_state(row) for row in connection.execute(query)]

    def counts(self, connection: Connection, now: datetime) -> LeadCounts:
        """Every count of LeadCounts in one pass over the connector's leads."""

        def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        query = sa.select(
            sa.func.count(),
            count(_not_in_sync()),
            count(_waiting()),
            count(sa.and_(_waiting(), lead.c.next_attempt_at > now)),
            count(lead.c.rejected),
            count(sa.and_(lead.c.hold.is_not(None), lead.c.other_key.is_(None))),
            count(lead.c.other_key.is_not(None)),
            count(lead.c.set_aside != "{}"),
        ).where(lead.c.connector == self.connector)
        return LeadCounts(*(int(n) for n in connection.execute(query).one()))

    def not_in_sync(self, connection: Connection, limit: int) -> list[LeadState]:
        """Up to `limit` leads not in sync: those with a problem first (rejected, held back,
        attributes set aside), then those merely waiting for a push, each in lead id order."""
        problem = sa.or_(
            lead.c.rejected,
            lead.c.set_aside != "{}",
            lead.c.hold.is_not(None),
            lead.c.other_key.is_not(None),
        )
        query = (
            sa.select(lead)
            .where(lead.c.connector == self.connector, _not_in_sync())
            .order_by(sa.case((problem, 0), else_=1), lead.c.lead_id)
            .limit(limit)
        )
        return [lead_state(row) for row in connection.execute(query)]

    def oldest_waiting(self, connection: Connection) -> datetime | None:
        """Since when the longest-waiting lead still to push has waited: when its oldest
        change not yet pushed was ingested (leads from before migration 0007: when last
        written). None when none waits."""
        since = sa.func.coalesce(lead.c.pending_since, lead.c.updated_at)
        query = sa.select(sa.func.min(since)).where(lead.c.connector == self.connector, _waiting())
        oldest: datetime | None = connection.execute(query).scalar_one()
        return oldest

    def detach_lead(self, connection: Connection, lead_id: str, reason: str, now: datetime) -> None:
        """Hold back a lead no row has the id of, until ingest rewrites it: no longer
        pending, since only a row taking its lead id again can change that."""
        connection.execute(
            lead_row(self.connector, lead_id).values(
                hold=reason, other_key=None, pending=False, updated_at=now
            )
        )

    def share_lead(
        self, connection: Connection, lead_id: str, other_key: str | None, now: datetime
    ) -> None:
        """Record the other row that has the lead's id too, or (None) that none does."""
        connection.execute(
            lead_row(self.connector, lead_id).values(other_key=other_key, updated_at=now)
        )

    def adopt_row(
        self,
        connection: Connection,
        lead_id: str,
        row: SourceRow,
        other_key: str | None,
        now: datetime,
    ) -> LeadState:
        """Store a lead from another of its rows, as ingest of that row alone would."""
        connection.execute(
            lead_row(self.connector, lead_id).values(
                source_key=row.key,
                desired=dumps(row.values),
                hold=row.hold,
                other_key=other_key,
                pending=True,
                pending_since=waiting_since(_now(now)),
                rejected=False,
                attempts=0,
                last_error=None,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        return lead_state(locked_lead(connection, self.connector, self.fence, lead_id))

    def retry(self, connection: Connection, lead_ids: Sequence[str] | None, now: datetime) -> int:
        """Make failed leads (all, or these) pending again, as if their values had changed.

        Clears rejections, set-aside attributes and retry delays; returns how many leads. A
        lead the connector holds back waits for its row, not for LeadSquared: left alone.
        """
        failed = sa.or_(
            lead.c.rejected, lead.c.set_aside != "{}", lead.c.next_attempt_at.is_not(None)
        )
        query = sa.update(lead).where(
            lead.c.connector == self.connector, failed, lead.c.hold.is_(None)
        )
        if lead_ids is not None:
            query = query.where(among(lead.c.lead_id, list(lead_ids), connection))
        result = connection.execute(
            query.values(
                rejected=False,
                set_aside="{}",
                aside_reason=None,
                next_attempt_at=None,
                attempts=0,
                pending=True,
                pending_since=waiting_since(_now(now)),
                updated_at=now,
            )
        )
        return result.rowcount

    def unknown(self, connection: Connection, lead_ids: Sequence[str]) -> list[str]:
        """Those of `lead_ids` this connector has no lead for."""
        query = sa.select(lead.c.lead_id).where(
            lead.c.connector == self.connector, among(lead.c.lead_id, list(lead_ids), connection)
        )
        known = set(connection.execute(query).scalars())
        return [lead_id for lead_id in dict.fromkeys(lead_ids) if lead_id not in known]

    def resync_page(
        self,
        connection: Connection,
        *,
        lead_ids: Sequence[str] | None,
        attributes: Collection[str],
        after: str | None,
        now: datetime,
    ) -> tuple[str, int] | None:
        """Forget what was pushed to one page of these leads (all of them, or these), for
        these attributes, so that the next run sends their current values again, an empty
        one included: for leads someone edited by hand in LeadSquared. Returns the page's
        last lead id, to start the next page after, and its number of leads; None when
        there was none.

        Pages, each the caller's transaction, hold the database (SQLite: the whole file)
        briefly, whatever the number of leads."""
        query = sa.select(lead.c.lead_id, lead.c.pushed).where(lead.c.connector == self.connector)
        if lead_ids is not None:
            query = query.where(among(lead.c.lead_id, list(lead_ids), connection))
        if after is not None:
            query = query.where(lead.c.lead_id > after)
        page = connection.execute(query.order_by(lead.c.lead_id).limit(IDS_PER_QUERY)).all()
        if not page:
            return None
        forgotten = dict.fromkeys(attributes, FORGOTTEN)
        rewrite = (
            sa.update(lead)
            .where(lead.c.connector == self.connector, lead.c.lead_id == sa.bindparam("key"))
            .values(
                pushed=sa.bindparam("forgotten"),
                pending=True,
                pending_since=waiting_since(_now(now)),
                attempts=0,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        connection.execute(
            rewrite,
            [
                {"key": lead_id, "forgotten": dumps({**loads(pushed), **forgotten})}
                for lead_id, pushed in page
            ],
        )
        last: str = page[-1].lead_id
        return last, len(page)


def lead_row(connector: str, lead_id: str) -> sa.Update:
    """An UPDATE of one lead's row."""
    return sa.update(lead).where(lead.c.connector == connector, lead.c.lead_id == lead_id)


def locked_lead(connection: Connection, connector: str, fence: Fence, lead_id: str) -> sa.Row[Any]:
    """The lead's row, locked for this transaction, once the fence let it be written."""
    epoch = fence.epoch_column().label("fence_epoch")
    query = sa.select(lead, epoch).where(lead.c.connector == connector, lead.c.lead_id == lead_id)
    if is_postgres(connection):
        query = query.with_for_update(of=lead)
    row = connection.execute(query).one()
    fence.verify(row.fence_epoch)
    return row


def lead_state(row: sa.Row[Any]) -> LeadState:
    return LeadState(
        lead_id=row.lead_id,
        source_key=row.source_key,
        desired=loads(row.desired),
        pushed=loads(row.pushed),
        pending=row.pending,
        waiting_since=row.pending_since or row.updated_at,
        rejected=row.rejected,
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at,
        pushed_at=row.pushed_at,
        set_aside=loads(row.set_aside),
        aside_reasons=loads_reasons(row.aside_reason),
        hold=row.hold,
        other_key=row.other_key,
    )


def loads_reasons(text: str | None) -> dict[str, str]:
    """`lsq_sync_lead.aside_reason`: a JSON object, attribute -> why it is set aside."""
    if not text:
        return {}
    return {name: str(reason) for name, reason in loads(text).items()}
