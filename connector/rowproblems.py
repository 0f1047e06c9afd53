"""Rows held back at ingest: a row that cannot be read or stored, kept with the reason until it
changes, and the lead it fed held back meanwhile.

Every method runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.database import among, upsert
from connector.leadrows import IDS_PER_QUERY, lead_row
from connector.leads import RowProblem
from connector.schema import lead, row_problem


class RowProblems:
    def __init__(self, connector: str) -> None:
        self.connector = connector

    def has_row_problems(self, connection: Connection) -> bool:
        query = sa.select(row_problem.c.source_key).where(row_problem.c.connector == self.connector)
        return connection.execute(query.limit(1)).first() is not None

    def count(self, connection: Connection) -> int:
        query = sa.select(sa.func.count()).where(row_problem.c.connector == self.connector)
        return int(connection.execute(query).scalar_one())

    def row_problems(self, connection: Connection, limit: int | None = None) -> list[RowProblem]:
        """The rows held back at ingest, in key order: all of them, or the first `limit`."""
        query = (
            sa.select(row_problem)
            .where(row_problem.c.connector == self.connector)
            .order_by(row_problem.c.source_key)
            .limit(limit)
        )
        return [
            RowProblem(row.source_key, row.reason, row.lead_id, row.column_name)
            for row in connection.execute(query)
        ]

    def rows_held_back_with(
        self, connection: Connection, lead_ids: Sequence[str]
    ) -> dict[str, str]:
        """lead id -> the key of a row held back at ingest with that lead id, for those of
        these lead ids that have one."""
        found: dict[str, str] = {}
        for start in range(0, len(lead_ids), IDS_PER_QUERY):
            chunk = list(lead_ids[start : start + IDS_PER_QUERY])
            query = sa.select(row_problem.c.lead_id, row_problem.c.source_key).where(
                row_problem.c.connector == self.connector,
                among(row_problem.c.lead_id, chunk, connection),
            )
            found.update((lead_id, key) for lead_id, key in connection.execute(query))
        return found

    def note_row_problems(
        self,
        connection: Connection,
        read: Sequence[str],
        problems: Sequence[RowProblem],
        now: datetime,
        *,
        forget: bool,
    ) -> None:
        """Record the rows that could not be ingested, and hold back the lead each one fed.

        With `forget`, first forget what was recorded for the rows just `read` (the caller
        knows whether anything may have been): a row held back goes on once it ingests.
        """
        if forget:
            self.forget_row_problems(connection, read)
        for problem in problems:
            upsert(
                connection,
                row_problem,
                {
                    "connector": self.connector,
                    "source_key": problem.key,
                    "lead_id": problem.lead_id,
                    "column_name": problem.column,
                    "reason": problem.reason,
                    "noted_at": now,
                },
                ["connector", "source_key"],
            )
            if problem.lead_id is not None:
                # Its last known values are no longer the row's: nothing is sent meanwhile.
                # Pending, so that the push phase notices when the row leaves the lead.
                connection.execute(
                    lead_row(self.connector, problem.lead_id)
                    .where(lead.c.source_key == problem.key)
                    .values(hold=problem.described(), pending=True, updated_at=now)
                )

    def forget_row_problems(self, connection: Connection, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), IDS_PER_QUERY):
            chunk = list(keys[start : start + IDS_PER_QUERY])
            connection.execute(
                sa.delete(row_problem).where(
                    row_problem.c.connector == self.connector,
                    among(row_problem.c.source_key, chunk, connection),
                )
            )
