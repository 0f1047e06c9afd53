"""The run history: a row per run, with how it ended and its counts.

Each method is a transaction of its own; those that write are fenced, so a run that lost the
run lock cannot overwrite the history of the run that took it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from connector.counts import RunCounts
from connector.runlock import Fence
from connector.schema import run


class RunLog:
    def __init__(self, engine: Engine, connector: str, fence: Fence) -> None:
        self.engine = engine
        self.connector = connector
        self.fence = fence

    def start_run(self, now: datetime) -> int:
        with self.engine.begin() as connection:
            self.fence.check(connection)
            run_id: int = connection.execute(
                sa.insert(run)
                .values(connector=self.connector, started_at=now, status="running")
                .returning(run.c.run_id)
            ).scalar_one()
        return run_id

    def close_abandoned_runs(self, now: datetime) -> int:
        """Runs still marked running once this run holds the lease died without finishing.

        Only then: a run that lost its lock may still be finishing its calls, and records its
        own end before the lease passes on.
        """
        with self.engine.begin() as connection:
            self.fence.check(connection)
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
        self, run_id: int, now: datetime, status: str, counts: RunCounts, error: str | None
    ) -> None:
        with self.engine.begin() as connection:
            self.fence.check(connection)
            connection.execute(
                sa.update(run)
                .where(run.c.run_id == run_id)
                .values(
                    finished_at=now,
                    status=status,
                    error=error,
                    changes_ingested=counts.changes_ingested,
                    leads_pushed=counts.leads_pushed,
                    leads_rejected=counts.leads_rejected,
                    calls=counts.calls_made,
                )
            )

    def prune(self, before: datetime) -> int:
        """Forget runs that started before `before` and have ended; returns how many."""
        with self.engine.begin() as connection:
            self.fence.check(connection)
            result = connection.execute(
                sa.delete(run).where(
                    run.c.connector == self.connector,
                    run.c.started_at < before,
                    run.c.status != "running",
                )
            )
        return result.rowcount

    def recent_runs(self, limit: int = 20) -> list[sa.Row[Any]]:
        """The last `limit` runs, newest first."""
        query = (
            sa.select(run)
            .where(run.c.connector == self.connector)
            .order_by(run.c.run_id.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return list(connection.execute(query))

    def in_progress(self, connection: Connection) -> sa.Row[Any] | None:
        """The newest run still marked running (in the caller's transaction). Whether it
        really is in progress, the run lock's lease tells: a killed run stays marked running
        until the next run closes it."""
        query = (
            sa.select(run)
            .where(run.c.connector == self.connector, run.c.status == "running")
            .order_by(run.c.run_id.desc())
            .limit(1)
        )
        return connection.execute(query).first()
