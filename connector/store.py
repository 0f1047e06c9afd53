"""Every query on the connector's own tables, for one connector name."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from connector.counts import RunCounts
from connector.database import among
from connector.leads import DesiredChange, LeadState, RowProblem, SourceRow, after_push
from connector.quarantine import is_data_error
from connector.runlock import UNFENCED, Fence
from connector.schema import capture_state, change, cursor, lead, row_problem, run
from connector.sqlfold import BATCH_FOR_PYTHON
from connector.values import Values, dumps, loads

_IDS_PER_QUERY = 2000


@dataclass(frozen=True, order=True)
class ChangeCursor:
    """Position in the change table: (transaction id, change id), compared as a pair."""

    tx_id: int
    change_id: int


START = ChangeCursor(-1, -1)


# SQLite: a batch's folded source rows, per connection (see write_desired_from). Its
# schema is `temp`, so the name can shadow nothing.
_folded = sa.Table(
    f"{lead.name}_folded",
    sa.MetaData(),
    sa.Column("position", sa.Integer(), primary_key=True),  # the order rows were folded in
    sa.Column("source_key", sa.Text()),
    sa.Column("lead_id", sa.Text()),
    sa.Column("desired", sa.Text()),
    schema="temp",
)


@dataclass(frozen=True)
class ChangeBatch:
    keys: list[str]  # the row key of every change row in the batch, in no particular order
    after: ChangeCursor
    last: ChangeCursor
    # SQLite: keys that are not UTF-8 text, spelled with escapes; such a row cannot be read.
    unreadable_keys: tuple[str, ...] = ()


class Store:
    def __init__(self, engine: Engine, connector: str) -> None:
        self.engine = engine
        self.connector = connector
        # The run's lease while a run holds the run lock: every write of run state checks it
        # in its own transaction, so a run that lost the lock records nothing after a takeover.
        self.fence: Fence = UNFENCED
        self._postgres = engine.dialect.name == "postgresql"
        # Built once: building these costs more than running them, once per ingest batch.
        self._next_changes = self._next_changes_query()
        self._advance_cursor = self._advance_cursor_statement()

    # -- change capture and cursor -------------------------------------------------------

    def load_cursor(self, connection: Connection) -> ChangeCursor:
        row = connection.execute(
            sa.select(cursor.c.tx_id, cursor.c.change_id).where(
                cursor.c.connector == self.connector
            )
        ).first()
        return START if row is None else ChangeCursor(row.tx_id, row.change_id)

    def snapshot_bound(self, connection: Connection) -> ChangeCursor:
        """Every change at or before this position was committed before this call."""
        if self._postgres:
            xmin = connection.execute(
                sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            ).scalar_one()
            return ChangeCursor(xmin - 1, 2**63 - 1)
        newest = connection.execute(sa.select(sa.func.max(change.c.change_id))).scalar_one()
        return ChangeCursor(0, newest or 0)

    def read_changes(
        self, connection: Connection, after: ChangeCursor, limit: int
    ) -> ChangeBatch | None:
        """The next change rows after `after`, in commit-safe order.

        On PostgreSQL only rows of transactions older than every transaction still running
        are read: a transaction that took a lower id but commits later is then never skipped,
        it is simply read once it has committed. On SQLite writers are serialised, so the
        AUTOINCREMENT id alone is in commit order (and tx_id is always 0).
        """
        parameters = {"after_tx_id": after.tx_id, "after_change_id": after.change_id}
        try:
            result = connection.execute(self._next_changes, {**parameters, "limit": limit})
            keys, last = result.one()
        except sa.exc.DBAPIError as exc:
            if self._postgres or not is_data_error(exc):
                raise
            return self._read_changes_bytewise(connection, after, limit)
        if not keys:  # NULL on PostgreSQL, [] on SQLite
            return None
        return ChangeBatch(keys, after, ChangeCursor(*last))

    def _read_changes_bytewise(
        self, connection: Connection, after: ChangeCursor, limit: int
    ) -> ChangeBatch | None:
        """read_changes for a SQLite batch holding a key that is not UTF-8 (a text key can
        hold any bytes there): row by row, so one such key stops nothing else."""
        query = (
            sa.select(change.c.tx_id, change.c.change_id, sa.cast(change.c.row_key, sa.LargeBinary))
            .where(change.c.connector == self.connector, change.c.change_id > after.change_id)
            .order_by(change.c.change_id)
            .limit(limit)
        )
        rows = connection.execute(query).all()
        if not rows:
            return None
        keys: list[str] = []
        unreadable: list[str] = []
        for _, _, raw in rows:
            try:
                keys.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                unreadable.append(raw.decode("utf-8", "backslashreplace"))
        last = ChangeCursor(rows[-1].tx_id, rows[-1].change_id)
        return ChangeBatch(keys, after, last, tuple(sorted(set(unreadable))))

    def consume(self, connection: Connection, batch: ChangeBatch, now: datetime) -> None:
        """Advance the cursor past the batch; `discard_consumed` deletes its rows later.

        Rows at or before the cursor are never read again, so deleting them can wait: one
        DELETE of many batches costs a fraction of one DELETE per batch.
        """
        parameters = {"tx_id": batch.last.tx_id, "change_id": batch.last.change_id, "now": now}
        connection.execute(self._advance_cursor, parameters)

    def discard_consumed(
        self, connection: Connection, after: ChangeCursor, through: ChangeCursor
    ) -> None:
        """Delete the change rows in (after, through], which the cursor has passed.

        Pass START as `after` to also catch rows a crash left behind after their batch
        committed; a later `after` lets the DELETE skip the rows this ingest already deleted.
        """
        if self._postgres:
            # Everything at or before the cursor was committed before it was read, so no row
            # can appear in this range any more. The plain tx_id range lets the planner see
            # how many rows that is; the row comparison alone it misjudges, and scans the
            # whole table.
            position = sa.tuple_(change.c.tx_id, change.c.change_id)
            matches = sa.and_(
                change.c.tx_id.between(after.tx_id, through.tx_id),
                position > sa.tuple_(sa.literal(after.tx_id), sa.literal(after.change_id)),
                position <= sa.tuple_(sa.literal(through.tx_id), sa.literal(through.change_id)),
            )
        else:
            matches = change.c.change_id.between(after.change_id + 1, through.change_id)
        connection.execute(sa.delete(change).where(change.c.connector == self.connector, matches))

    def commit_without_waiting(self, connection: Connection) -> None:
        """Let this transaction's commit return before its WAL is flushed (PostgreSQL).

        Only for work that can be redone from the change rows. A server crash can then lose
        the last few such commits, each whole and in commit order, and none that a later
        synchronous commit (a push being recorded, say) followed, since that flush covers all
        WAL before it. A lost batch loses its desired values and its cursor advance together,
        and its change rows are simply read again; a lost DELETE of consumed rows is redone
        by the next ingest. Nothing durable is given up; a WAL flush per batch is saved.
        """
        if self._postgres:
            connection.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def pending_changes(self, connection: Connection) -> int:
        """Captured changes the cursor has not passed.

        Not every change row: consumed rows wait for `discard_consumed`, during an ingest or
        after one that died before deleting them.
        """
        after = self.load_cursor(connection)
        query = sa.select(sa.func.count()).where(change.c.connector == self.connector)
        if self._postgres:
            position = sa.tuple_(change.c.tx_id, change.c.change_id)
            query = query.where(
                position > sa.tuple_(sa.literal(after.tx_id), sa.literal(after.change_id))
            )
        else:
            query = query.where(change.c.change_id > after.change_id)
        return connection.execute(query).scalar_one()

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

    def load_leads(self, connection: Connection, lead_ids: Iterable[str]) -> dict[str, LeadState]:
        ids = list(lead_ids)
        found: dict[str, LeadState] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            query = sa.select(lead).where(
                lead.c.connector == self.connector, among(lead.c.lead_id, chunk, connection)
            )
            for row in connection.execute(query):
                found[row.lead_id] = _lead_state(row)
        return found

    def write_desired(
        self, connection: Connection, changes: Sequence[DesiredChange], now: datetime
    ) -> None:
        """Store new desired values, flagging the lead for the push phase.

        A lead whose desired values and hold did not move is left untouched (the upsert's
        WHERE), so a rejection or a retry delay holds until the values really change.
        """
        if not changes:
            return
        rows = [
            {
                "lead_id": c.lead_id,
                "source_key": c.source_key,
                "desired": dumps(c.desired),
                "hold": c.hold,
                "other_key": c.other_key,
            }
            for c in changes
        ]
        if not self._postgres and any(
            "\x00" in f"{c.lead_id}{c.source_key}{c.hold or ''}{c.other_key or ''}" for c in changes
        ):
            # SQLite's JSON functions end a string at its first NUL: bind these rows instead.
            same = {"connector": self.connector, "pending": True, "updated_at": now}
            bound = [{**same, **row} for row in rows]
            connection.execute(self._when_desired_moved(sqlite.insert(lead)), bound)
            return
        # One statement and one JSON parameter, not a round trip or bound row per lead.
        incoming = self._json_rows(rows)
        constants = self._desired_constants(now)
        insert: Any = self._insert(lead).from_select(
            [*constants, *incoming],
            sa.select(*constants.values(), *incoming.values())
            # SQLite needs a WHERE to tell the upsert's ON CONFLICT from a join's ON.
            .where(sa.true()),
        )
        connection.execute(self._when_desired_moved(insert))

    def write_desired_from(
        self,
        connection: Connection,
        source_rows: sa.Select[str, str | None, str | None],
        now: datetime,
    ) -> tuple[int, list[str]]:
        """write_desired for leads whose values the database computes itself.

        `source_rows` gives (source_key, lead_id, desired) per source row, as
        SourceTable.desired_query does. Returns how many of those rows have no lead id, and
        the keys of the rows it leaves to write_desired: those of every lead with a row
        whose desired is NULL, so that each lead is written once, by one side; all of them,
        writing nothing, when a row says the whole batch needs Python.
        """
        rows: Any
        if self._postgres:
            rows = source_rows.cte("source_rows")
        else:
            # SQLite has no writing CTE, and the rows are needed twice: computed once, kept in
            # this connection's own temporary table.
            connection.execute(sa.schema.CreateTable(_folded, if_not_exists=True))
            connection.execute(sa.delete(_folded))
            columns = ["source_key", "lead_id", "desired"]
            connection.execute(sa.insert(_folded).from_select(columns, source_rows))
            rows = _folded
            whole_batch = sa.select(_folded.c.desired).where(_folded.c.desired == BATCH_FOR_PYTHON)
            if connection.execute(whole_batch.limit(1)).first() is not None:
                keys = connection.scalars(sa.select(_folded.c.source_key)).all()
                return 0, list(keys)
        has_lead = rows.c.lead_id.is_not(None)
        python_rows = rows.alias("python_rows")
        for_python = (
            sa.select(python_rows.c.lead_id)
            .where(python_rows.c.lead_id.is_not(None), python_rows.c.desired.is_(None))
            .scalar_subquery()
        )
        constants = self._desired_constants(now)
        # One row per lead, as fold_rows keeps; which of several wins is arbitrary there too,
        # and another of them is kept as other_key, which holds the lead back. Each row would
        # be an upsert of its own, which can reset a lead's rejection even when the last row
        # puts its values back.
        low: sa.ColumnElement[Any]
        high: sa.ColumnElement[Any]
        if self._postgres:
            low = sa.func.min(rows.c.source_key).over(partition_by=rows.c.lead_id)
            high = sa.func.max(rows.c.source_key).over(partition_by=rows.c.lead_id)
        else:
            each = _folded.alias("each_lead")
            per_lead = (
                sa.select(
                    sa.func.max(each.c.position).label("last"),
                    sa.func.min(each.c.source_key).label("low"),
                    sa.func.max(each.c.source_key).label("high"),
                )
                .where(each.c.lead_id.is_not(None))
                .group_by(each.c.lead_id)
                .subquery("per_lead")
            )
            low, high = per_lead.c.low, per_lead.c.high
        latest = sa.select(
            *constants.values(),
            rows.c.lead_id,
            rows.c.source_key,
            rows.c.desired,
            sa.null(),
            _another(rows.c.source_key, low, high),
        ).where(has_lead, rows.c.lead_id.not_in(for_python))
        if self._postgres:
            latest = latest.ext(postgresql.distinct_on(rows.c.lead_id))
        else:
            latest = latest.select_from(
                _folded.join(per_lead, _folded.c.position == per_lead.c.last)
            )
        upsert = self._when_desired_moved(
            self._insert(lead).from_select(
                [*constants, "lead_id", "source_key", "desired", "hold", "other_key"], latest
            )
        )
        aggregate = sa.func.json_agg if self._postgres else sa.func.json_group_array
        outcome = sa.select(
            sa.func.count().filter(sa.not_(has_lead)),
            aggregate(rows.c.source_key, type_=sa.JSON).filter(rows.c.lead_id.in_(for_python)),
        )
        if self._postgres:
            # One statement, so the source rows are read once.
            outcome = outcome.add_cte(upsert.cte("written"))
        else:
            connection.execute(upsert)
        without_lead, left = connection.execute(outcome).one()
        return without_lead, left or []

    def _desired_constants(self, now: datetime) -> dict[str, sa.ColumnElement[Any]]:
        values = {"connector": self.connector, "pending": True, "updated_at": now}
        return {name: sa.literal(value, lead.c[name].type) for name, value in values.items()}

    def _when_desired_moved(self, insert: Any) -> Any:
        """The upsert of desired values that leaves leads whose values did not move alone.

        A lead's hold follows its row: set while a value cannot be sent, gone once it can.
        A row other than the one the lead was stored from makes the lead shared (`other_key`,
        the row it was stored from): the push phase checks which rows still point to it.
        """
        new = insert.excluded
        other_key = sa.case(
            (new.other_key.is_not(None), new.other_key),
            (lead.c.source_key != new.source_key, lead.c.source_key),
            else_=lead.c.other_key,
        )
        return insert.on_conflict_do_update(
            index_elements=[lead.c.connector, lead.c.lead_id],
            set_={
                "source_key": new.source_key,
                "desired": new.desired,
                "pending": True,
                "rejected": False,
                "attempts": 0,
                "last_error": None,
                "next_attempt_at": None,
                "updated_at": new.updated_at,
                "hold": new.hold,
                "other_key": other_key,
            },
            where=sa.or_(
                lead.c.desired != new.desired,
                lead.c.source_key != new.source_key,
                lead.c.hold.is_distinct_from(new.hold),
                new.other_key.is_not(None),
            ),
        )

    # -- rows held back at ingest ---------------------------------------------------------

    def has_row_problems(self, connection: Connection) -> bool:
        query = sa.select(row_problem.c.source_key).where(row_problem.c.connector == self.connector)
        return connection.execute(query.limit(1)).first() is not None

    def row_problems(self, connection: Connection) -> list[RowProblem]:
        query = (
            sa.select(row_problem)
            .where(row_problem.c.connector == self.connector)
            .order_by(row_problem.c.source_key)
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
        for start in range(0, len(lead_ids), _IDS_PER_QUERY):
            chunk = list(lead_ids[start : start + _IDS_PER_QUERY])
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
            self._upsert(
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
                    self._lead_row(problem.lead_id)
                    .where(lead.c.source_key == problem.key)
                    .values(hold=problem.described(), pending=True, updated_at=now)
                )

    def forget_row_problems(self, connection: Connection, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _IDS_PER_QUERY):
            chunk = list(keys[start : start + _IDS_PER_QUERY])
            connection.execute(
                sa.delete(row_problem).where(
                    row_problem.c.connector == self.connector,
                    among(row_problem.c.source_key, chunk, connection),
                )
            )

    # -- which row owns a lead (connector.ownership) ----------------------------------------

    def detach_lead(self, connection: Connection, lead_id: str, reason: str, now: datetime) -> None:
        """Hold back a lead no row has the id of, until ingest rewrites it: no longer
        pending, since only a row taking its lead id again can change that."""
        connection.execute(
            self._lead_row(lead_id).values(
                hold=reason, other_key=None, pending=False, updated_at=now
            )
        )

    def share_lead(
        self, connection: Connection, lead_id: str, other_key: str | None, now: datetime
    ) -> None:
        """Record the other row that has the lead's id too, or (None) that none does."""
        connection.execute(self._lead_row(lead_id).values(other_key=other_key, updated_at=now))

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
            self._lead_row(lead_id).values(
                source_key=row.key,
                desired=dumps(row.values),
                hold=row.hold,
                other_key=other_key,
                pending=True,
                rejected=False,
                attempts=0,
                last_error=None,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        return _lead_state(self._locked_lead(connection, lead_id))

    def pending_leads(
        self, connection: Connection, now: datetime, after_lead_id: str | None, limit: int
    ) -> list[LeadState]:
        query = (
            sa.select(lead)
            .where(
                lead.c.connector == self.connector,
                lead.c.pending,
                sa.not_(lead.c.rejected),
                # A held lead comes too, never to be sent: the push phase checks that its rows
                # still have its lead id, and settles or detaches it (connector.ownership).
                sa.or_(lead.c.next_attempt_at.is_(None), lead.c.next_attempt_at <= now),
            )
            .order_by(lead.c.lead_id)
            .limit(limit)
        )
        if after_lead_id is not None:
            query = query.where(lead.c.lead_id > after_lead_id)
        return [_lead_state(row) for row in connection.execute(query)]

    def record_pushed(
        self,
        lead_id: str,
        sent: Values,
        attributes: frozenset[str],
        now: datetime,
        *,
        error: str | None = None,
    ) -> None:
        """Record exactly the attributes sent, in one transaction.

        `error` says why attributes were set aside on the way; it stays while they do.
        """
        with self.engine.begin() as connection:
            row = self._locked_lead(connection, lead_id)
            pushed, set_aside, pending = after_push(
                loads(row.desired), loads(row.pushed), sent, attributes, loads(row.set_aside)
            )
            connection.execute(
                self._lead_row(lead_id).values(
                    pushed=dumps(pushed),
                    set_aside=dumps(set_aside),
                    pending=pending,
                    attempts=0,
                    last_error=error if set_aside else None,
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

    def set_aside(self, lead_id: str, refused: Values, error: str, now: datetime) -> None:
        """Hold back attributes LeadSquared does not know, for the values it refused."""
        with self.engine.begin() as connection:
            row = self._locked_lead(connection, lead_id)
            connection.execute(
                self._lead_row(lead_id).values(
                    set_aside=dumps({**loads(row.set_aside), **refused}),
                    last_error=error,
                    updated_at=now,
                )
            )

    def retry(self, lead_ids: Sequence[str] | None, now: datetime) -> int:
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
        with self.engine.begin() as connection:
            if lead_ids is not None:
                query = query.where(among(lead.c.lead_id, list(lead_ids), connection))
            result = connection.execute(
                query.values(
                    rejected=False,
                    set_aside="{}",
                    next_attempt_at=None,
                    attempts=0,
                    pending=True,
                    updated_at=now,
                )
            )
        return result.rowcount

    def all_leads(self, connection: Connection) -> list[LeadState]:
        query = sa.select(lead).where(lead.c.connector == self.connector).order_by(lead.c.lead_id)
        return [_lead_state(row) for row in connection.execute(query)]

    # -- run history ------------------------------------------------------------------------

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
                    leads_failed=counts.leads_rejected,
                    calls=counts.calls_made,
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

    def leads_outgrew_statistics(self, connection: Connection) -> bool:
        """Whether the lead table holds many more rows than its statistics say (PostgreSQL).

        True after a first sync or a backfill; false after rewriting leads that already
        existed, which leaves the statistics as true as they were.
        """
        if not self._postgres:
            return False
        counted, live = connection.execute(
            sa.text(
                "SELECT c.reltuples, s.n_live_tup FROM pg_class c "
                "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.oid = CAST(:table AS regclass)"
            ),
            {"table": lead.name},
        ).one()
        # -1: never analyzed. The margin is autovacuum's default (10%, plus 50 rows).
        return counted < 0 or live is None or live > 1.1 * counted + 50

    def analyze_leads(self, connection: Connection) -> None:
        """Fresh statistics after a large ingest keep lead lookups on the primary key."""
        if self._postgres:
            connection.exec_driver_sql(f"ANALYZE {lead.name}")

    # -- helpers ----------------------------------------------------------------------------

    def _lead_row(self, lead_id: str) -> sa.Update:
        return sa.update(lead).where(lead.c.connector == self.connector, lead.c.lead_id == lead_id)

    def _locked_lead(self, connection: Connection, lead_id: str) -> sa.Row[Any]:
        """The lead's row, locked for this transaction, once the fence let it be written."""
        epoch = self.fence.epoch_column().label("fence_epoch")
        query = sa.select(lead, epoch).where(
            lead.c.connector == self.connector, lead.c.lead_id == lead_id
        )
        if self._postgres:
            query = query.with_for_update(of=lead)
        row = connection.execute(query).one()
        self.fence.verify(row.fence_epoch)
        return row

    def _next_changes_query(self) -> sa.Select[Any, Any]:
        """read_changes' query: the batch's keys, and its last position."""
        query = sa.select(change.c.tx_id, change.c.change_id, change.c.row_key).where(
            change.c.connector == self.connector
        )
        if self._postgres:
            position = sa.tuple_(change.c.tx_id, change.c.change_id)
            after = sa.tuple_(
                sa.bindparam("after_tx_id", type_=sa.BigInteger()),
                sa.bindparam("after_change_id", type_=sa.BigInteger()),
            )
            query = query.where(
                position > after,
                change.c.tx_id
                < sa.literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint"),
            ).order_by(change.c.tx_id, change.c.change_id)
        else:
            # A plain rowid range: SQLite keeps no secondary index on this table.
            after_change_id = sa.bindparam("after_change_id", type_=sa.BigInteger())
            query = query.where(change.c.change_id > after_change_id).order_by(change.c.change_id)
        batch = query.limit(sa.bindparam("limit", type_=sa.Integer())).subquery("batch")
        # The keys come as one JSON array: a row apiece costs several times the query itself.
        keys: sa.ColumnElement[Any]
        last: sa.ColumnElement[Any]
        if self._postgres:
            keys = sa.func.json_agg(batch.c.row_key)
            # Arrays compare element by element, so this is the batch's last position.
            pairs = postgresql.array([batch.c.tx_id, batch.c.change_id])
            last = sa.func.max(pairs, type_=postgresql.ARRAY(sa.BigInteger()))
        else:
            keys = sa.func.json_group_array(batch.c.row_key)
            last = sa.func.json_array(
                sa.func.max(batch.c.tx_id), sa.func.max(batch.c.change_id), type_=sa.JSON()
            )
        return sa.select(sa.type_coerce(keys, sa.JSON).label("keys"), last.label("last"))

    def _advance_cursor_statement(self) -> Any:
        insert = self._insert(cursor).values(
            connector=self.connector,
            tx_id=sa.bindparam("tx_id"),
            change_id=sa.bindparam("change_id"),
            updated_at=sa.bindparam("now", type_=cursor.c.updated_at.type),
        )
        new = insert.excluded
        return insert.on_conflict_do_update(
            index_elements=[cursor.c.connector],
            set_={"tx_id": new.tx_id, "change_id": new.change_id, "updated_at": new.updated_at},
        )

    def _json_rows(self, rows: list[dict[str, Any]]) -> dict[str, sa.ColumnElement[Any]]:
        """The rows' fields as columns of a table read from one JSON parameter."""
        payload = sa.bindparam(None, json.dumps(rows), sa.Text())
        names = list(rows[0])
        if self._postgres:
            table = (
                sa.func.json_to_recordset(sa.cast(payload, postgresql.JSON))
                .table_valued(*(sa.column(name, lead.c[name].type) for name in names))
                .render_derived(with_types=True)
            )
            return {name: table.c[name] for name in names}
        items = sa.func.json_each(payload).table_valued("value")
        return {
            name: sa.func.json_extract(items.c.value, f"$.{name}").label(name) for name in names
        }

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


def _another(
    key: sa.ColumnElement[Any], low: sa.ColumnElement[Any], high: sa.ColumnElement[Any]
) -> sa.ColumnElement[Any]:
    """Another key of the same lead, given the lowest and highest; NULL when it has one."""
    return sa.case((low != high, sa.case((key == low, high), else_=low)))


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
        set_aside=loads(row.set_aside),
        hold=row.hold,
        other_key=row.other_key,
    )
