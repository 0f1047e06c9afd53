"""Every query on the connector's own tables, for one connector name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from connector.leads import DesiredChange, LeadState, after_push
from connector.schema import capture_state, change, cursor, lead, run
from connector.values import Values, dumps, loads

_IDS_PER_QUERY = 2000


@dataclass(frozen=True, order=True)
class ChangeCursor:
    """Position in the change table: (transaction id, change id), compared as a pair."""

    tx_id: int
    change_id: int


START = ChangeCursor(-1, -1)


@dataclass(frozen=True)
class ChangeBatch:
    row_keys: list[str]
    last: ChangeCursor
    size: int


@dataclass(frozen=True)
class RunStats:
    changes_ingested: int = 0
    leads_pushed: int = 0
    leads_failed: int = 0
    calls: int = 0


class Store:
    def __init__(self, engine: Engine, connector: str) -> None:
        self.engine = engine
        self.connector = connector
        self._postgres = engine.dialect.name == "postgresql"

    # -- change capture and cursor -------------------------------------------------------

    def load_cursor(self, connection: Connection) -> ChangeCursor:
        row = connection.execute(
            sa.select(cursor.c.tx_id, cursor.c.change_id).where(
                cursor.c.connector == self.connector
            )
        ).first()
        return START if row is None else ChangeCursor(row.tx_id, row.change_id)

    def read_changes(
        self, connection: Connection, after: ChangeCursor, limit: int
    ) -> ChangeBatch | None:
        """The next change rows after `after`, in commit-safe order.

        On PostgreSQL only rows of transactions older than every transaction still running
        are read: a transaction that took a lower id but commits later is then never skipped,
        it is simply read once it has committed.
        """
        position = sa.tuple_(change.c.tx_id, change.c.change_id)
        query = (
            sa.select(change.c.tx_id, change.c.change_id, change.c.row_key)
            .where(change.c.connector == self.connector)
            .where(position > sa.tuple_(sa.literal(after.tx_id), sa.literal(after.change_id)))
            .order_by(change.c.tx_id, change.c.change_id)
            .limit(limit)
        )
        if self._postgres:
            query = query.where(
                change.c.tx_id
                < sa.literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            )
        rows = connection.execute(query).all()
        if not rows:
            return None
        keys = list(dict.fromkeys(row.row_key for row in rows))
        return ChangeBatch(keys, ChangeCursor(rows[-1].tx_id, rows[-1].change_id), len(rows))

    def consume_through(self, connection: Connection, last: ChangeCursor, now: datetime) -> None:
        """Advance the cursor and drop the change rows it has passed."""
        position = sa.tuple_(change.c.tx_id, change.c.change_id)
        connection.execute(
            sa.delete(change)
            .where(change.c.connector == self.connector)
            .where(position <= sa.tuple_(sa.literal(last.tx_id), sa.literal(last.change_id)))
        )
        self._upsert(
            connection,
            cursor,
            {
                "connector": self.connector,
                "tx_id": last.tx_id,
                "change_id": last.change_id,
                "updated_at": now,
            },
            ["connector"],
        )

    def pending_changes(self, connection: Connection) -> int:
        return connection.execute(
            sa.select(sa.func.count()).where(change.c.connector == self.connector)
        ).scalar_one()

    def save_capture(
        self, connection: Connection, source_table: str, signature: str, now: datetime
    ) -> None:
        self._upsert(
            connection,
            capture_state,
            {
                "connector": self.connector,
                "source_table": source_table,
                "signature": signature,
                "installed_at": now,
            },
            ["connector"],
        )

    def capture_signature(self, connection: Connection) -> str | None:
        return connection.execute(
            sa.select(capture_state.c.signature).where(capture_state.c.connector == self.connector)
        ).scalar_one_or_none()

    # -- per-lead state ---------------------------------------------------------------------

    def load_leads(
        self, connection: Connection, lead_ids: Iterable[str], *, lock: bool = False
    ) -> dict[str, LeadState]:
        """`lock` holds the rows until commit, so a push recorded meanwhile cannot be lost."""
        ids = list(lead_ids)
        found: dict[str, LeadState] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            query = sa.select(lead).where(
                lead.c.connector == self.connector, lead.c.lead_id.in_(chunk)
            )
            if lock and self._postgres:
                query = query.with_for_update()
            for row in connection.execute(query):
                found[row.lead_id] = _lead_state(row)
        return found

    def write_desired(
        self, connection: Connection, changes: Sequence[DesiredChange], now: datetime
    ) -> None:
        """New desired values; a change of values lifts any rejection and retry delay."""
        if not changes:
            return
        rows = [
            {
                "connector": self.connector,
                "lead_id": c.lead_id,
                "source_key": c.source_key,
                "desired": dumps(c.desired),
                "pushed": "{}",
                "pending": c.pending or c.problem is not None,
                "rejected": c.problem is not None,
                "attempts": 0,
                "last_error": c.problem,
                "next_attempt_at": None,
                "updated_at": now,
            }
            for c in changes
        ]
        insert = self._insert(lead)
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=[lead.c.connector, lead.c.lead_id],
                set_={
                    name: insert.excluded[name]
                    for name in (
                        "source_key",
                        "desired",
                        "pending",
                        "rejected",
                        "attempts",
                        "last_error",
                        "next_attempt_at",
                        "updated_at",
                    )
                },
            ),
            rows,
        )

    def pending_leads(
        self, connection: Connection, now: datetime, after_lead_id: str | None, limit: int
    ) -> list[LeadState]:
        query = (
            sa.select(lead)
            .where(
                lead.c.connector == self.connector,
                lead.c.pending,
                sa.not_(lead.c.rejected),
                sa.or_(lead.c.next_attempt_at.is_(None), lead.c.next_attempt_at <= now),
            )
            .order_by(lead.c.lead_id)
            .limit(limit)
        )
        if after_lead_id is not None:
            query = query.where(lead.c.lead_id > after_lead_id)
        return [_lead_state(row) for row in connection.execute(query)]

    def record_pushed(
        self, lead_id: str, sent: Values, attributes: frozenset[str], now: datetime
    ) -> None:
        """Record exactly the attributes sent, in one transaction."""
        with self.engine.begin() as connection:
            row = self._locked_lead(connection, lead_id)
            pushed, pending = after_push(loads(row.desired), loads(row.pushed), sent, attributes)
            connection.execute(
                self._lead_row(lead_id).values(
                    pushed=dumps(pushed),
                    pending=pending,
                    attempts=0,
                    last_error=None,
                    next_attempt_at=None,
                    pushed_at=now,
                    updated_at=now,
                )
            )

    def record_failure(
        self,
        lead_id: str,
        planned_from: Values,
        error: str,
        now: datetime,
        *,
        rejected: bool,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Keep the lead pending with its error; a rejection holds only for the values it saw."""
        with self.engine.begin() as connection:
            row = self._locked_lead(connection, lead_id)
            still_same = loads(row.desired) == planned_from
            connection.execute(
                self._lead_row(lead_id).values(
                    attempts=row.attempts + 1,
                    last_error=error,
                    rejected=rejected and still_same,
                    next_attempt_at=next_attempt_at if still_same else None,
                    updated_at=now,
                )
            )

    def all_leads(self, connection: Connection) -> list[LeadState]:
        query = sa.select(lead).where(lead.c.connector == self.connector).order_by(lead.c.lead_id)
        return [_lead_state(row) for row in connection.execute(query)]

    # -- run history ------------------------------------------------------------------------

    def start_run(self, now: datetime) -> int:
        with self.engine.begin() as connection:
            run_id: int = connection.execute(
                sa.insert(run)
                .values(connector=self.connector, started_at=now, status="running")
                .returning(run.c.run_id)
            ).scalar_one()
        return run_id

    def close_abandoned_runs(self, now: datetime) -> int:
        """Runs still marked running when the run lock is free died without finishing."""
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.update(run)
                .where(run.c.connector == self.connector, run.c.status == "running")
                .values(
                    status="abandoned",
                    finished_at=now,
                    error="the process ended before the run finished (killed or crashed)",
                )
            )
        return result.rowcount

    def finish_run(
        self, run_id: int, now: datetime, status: str, stats: RunStats, error: str | None
    ) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(run)
                .where(run.c.run_id == run_id)
                .values(
                    finished_at=now,
                    status=status,
                    error=error,
                    changes_ingested=stats.changes_ingested,
                    leads_pushed=stats.leads_pushed,
                    leads_failed=stats.leads_failed,
                    calls=stats.calls,
                )
            )

    def runs(self, connection: Connection, limit: int = 20) -> list[sa.Row[Any]]:
        query = (
            sa.select(run)
            .where(run.c.connector == self.connector)
            .order_by(run.c.run_id.desc())
            .limit(limit)
        )
        return list(connection.execute(query))

    # -- helpers ----------------------------------------------------------------------------

    def _lead_row(self, lead_id: str) -> sa.Update:
        return sa.update(lead).where(lead.c.connector == self.connector, lead.c.lead_id == lead_id)

    def _locked_lead(self, connection: Connection, lead_id: str) -> sa.Row[Any]:
        query = sa.select(lead).where(lead.c.connector == self.connector, lead.c.lead_id == lead_id)
        if self._postgres:
            query = query.with_for_update()
        return connection.execute(query).one()

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self._postgres else sqlite.insert)(table)

    def _upsert(
        self, connection: Connection, table: sa.Table, values: dict[str, Any], keys: list[str]
    ) -> None:
        insert = self._insert(table).values(values)
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=keys,
                set_={k: insert.excluded[k] for k in values if k not in keys},
            )
        )


def _lead_state(row: sa.Row[Any]) -> LeadState:
    return LeadState(
        lead_id=row.lead_id,
        source_key=row.source_key,
        desired=loads(row.desired),
        pushed=loads(row.pushed),
        pending=row.pending,
        rejected=row.rejected,
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at,
        pushed_at=row.pushed_at,
    )
