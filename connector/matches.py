"""The ProspectId each email address or phone number was found to have (`lsq_sync_match`).

A connector with `lead_id.match: EmailAddress` or `Phone` keeps its leads under the row's
value; a single update needs the ProspectId, which a lookup call finds. It is kept here, so
that each value is looked up once, not once per change. Each method is one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connector.database import upsert
from connector.schema import lead, match


@dataclass(frozen=True)
class Found:
    prospect_id: str
    found_at: datetime


class MatchCache:
    def __init__(self, engine: Engine, connector: str) -> None:
        self.engine = engine
        self.connector = connector

    def _row(self, lead_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(match.c.connector == self.connector, match.c.lead_id == lead_id)

    def get(self, lead_id: str) -> Found | None:
        query = sa.select(match.c.prospect_id, match.c.found_at).where(self._row(lead_id))
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else Found(row.prospect_id, row.found_at)

    def others(self, prospect_id: str, lead_id: str) -> list[str]:
        """Other values of this connector's rows that found the same lead: email addresses
        that differ only in case, a phone number that is another row's Mobile. A lead no
        row feeds any more (held back, detached) does not count."""
        query = (
            sa.select(match.c.lead_id)
            .join(
                lead,
                sa.and_(lead.c.connector == match.c.connector, lead.c.lead_id == match.c.lead_id),
            )
            .where(
                match.c.connector == self.connector,
                match.c.prospect_id == prospect_id,
                match.c.lead_id != lead_id,
                lead.c.hold.is_(None),
            )
            .order_by(match.c.lead_id)
            .limit(5)
        )
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def save(self, lead_id: str, prospect_id: str, now: datetime) -> None:
        values = {
            "connector": self.connector,
            "lead_id": lead_id,
            "prospect_id": prospect_id,
            "found_at": now,
        }
        with self.engine.begin() as connection:
            upsert(connection, match, values, ["connector", "lead_id"])

    def drop(self, lead_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.delete(match).where(self._row(lead_id)))
