"""The change log: the change rows capture writes, and this connector's cursor through them.

Every method runs in the caller's transaction (ingest makes a batch's read, its desired values
and its cursor advance one transaction). PostgreSQL orders changes by transaction id, so that a
transaction that commits late is never skipped; SQLite serialises writers, so the change id
alone is in commit order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from connector.database import is_postgres
from connector.quarantine import is_data_error
from connector.schema import change, cursor


@dataclass(frozen=True, order=True)
class ChangeCursor:
    """Position in the change table: (transaction id, change id), compared as a pair."""

    tx_id: int
    change_id: int


START = ChangeCursor(-1, -1)


@dataclass(frozen=True)
class ChangeBatch:
    keys: list[str]  # the row key of every change row in the batch, in no particular order
    after: ChangeCursor
    last: ChangeCursor
    # SQLite: keys that are not UTF-8 text, spelled with escapes; such a row cannot be read.
    unreadable_keys: tuple[str, ...] = ()


def change_log(engine: Engine, connector: str) -> ChangeLog:
    """The change log of `connector`, for the engine's database."""
    kind = PostgresChangeLog if is_postgres(engine) else SqliteChangeLog
    return kind(connector)


class ChangeLog:
    _insert: Any  # the dialect's INSERT, which takes ON CONFLICT

    def __init__(self, connector: str) -> None:
        self.connector = connector
        # Built once: building these costs more than running them, once per ingest batch.
        self._next_changes = self._batch_query(self._after_cursor())
        self._advance_cursor = self._advance_statement()

    def load_cursor(self, connection: Connection) -> ChangeCursor:
        row = connection.execute(
            sa.select(cursor.c.tx_id, cursor.c.change_id).where(
                cursor.c.connector == self.connector
            )
        ).first()
        return START if row is None else ChangeCursor(row.tx_id, row.change_id)

    def snapshot_bound(self, connection: Connection) -> ChangeCursor:
        """Every change at or before this position was committed before this call."""
        raise NotImplementedError

    def read_changes(
        self, connection: Connection, after: ChangeCursor, limit: int
    ) -> ChangeBatch | None:
        """The next change rows after `after`, in commit-safe order (see the subclasses)."""
        parameters = {"after_tx_id": after.tx_id, "after_change_id": after.change_id}
        result = connection.execute(self._next_changes, {**parameters, "limit": limit})
        keys, last = result.one()
        if not keys:  # NULL on PostgreSQL, [] on SQLite
            return None
        return ChangeBatch(keys, after, ChangeCursor(*last))

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
        matches = self._between(after, through)
        connection.execute(sa.delete(change).where(change.c.connector == self.connector, matches))

    def commit_without_waiting(self, connection: Connection) -> None:
        """Let this transaction's commit return before its WAL is flushed (PostgreSQL only)."""

    def pending_changes(self, connection: Connection) -> int:
        """Captured changes the cursor has not passed.

        Not every change row: consumed rows wait for `discard_consumed`, during an ingest or
        after one that died before deleting them.
        """
        after = self.load_cursor(connection)
        query = sa.select(sa.func.count()).where(
            change.c.connector == self.connector, self._past(after)
        )
        return connection.execute(query).scalar_one()

    def pending_span(self, connection: Connection) -> tuple[ChangeCursor, ChangeCursor] | None:
        """The oldest and newest captured changes the cursor has not passed; None if none.
        Two index lookups, whatever the backlog."""
        after = self.load_cursor(connection)
        past = sa.and_(change.c.connector == self.connector, self._past(after))
        ends = []
        for order in (sa.asc, sa.desc):
            query = (
                sa.select(change.c.tx_id, change.c.change_id)
                .where(past)
                .order_by(order(change.c.tx_id), order(change.c.change_id))
                .limit(1)
            )
            row = connection.execute(query).first()
            if row is None:
                return None
            ends.append(ChangeCursor(row.tx_id, row.change_id))
        return ends[0], ends[1]

    def _advance_statement(self) -> Any:
        statement = self._insert(cursor).values(
            connector=self.connector,
            tx_id=sa.bindparam("tx_id"),
            change_id=sa.bindparam("change_id"),
            updated_at=sa.bindparam("now", type_=cursor.c.updated_at.type),
        )
        new = statement.excluded
        return statement.on_conflict_do_update(
            index_elements=[cursor.c.connector],
            set_={"tx_id": new.tx_id, "change_id": new.change_id, "updated_at": new.updated_at},
        )

    def _after_cursor(self) -> sa.ColumnElement[bool]:
        """read_changes' condition on the change rows, given the bound cursor."""
        raise NotImplementedError

    def _past(self, after: ChangeCursor) -> sa.ColumnElement[bool]:
        raise NotImplementedError

    def _between(self, after: ChangeCursor, through: ChangeCursor) -> sa.ColumnElement[bool]:
        raise NotImplementedError

    def _batch_query(self, condition: sa.ColumnElement[bool]) -> sa.Select[Any, Any]:
        """read_changes' query: the batch's keys, as one JSON array (a row apiece costs several
        times the query itself), and its last position."""
        raise NotImplementedError

    def _batch(
        self, condition: sa.ColumnElement[bool], *order: sa.ColumnElement[Any]
    ) -> sa.Subquery:
        query = (
            sa.select(change.c.tx_id, change.c.change_id, change.c.row_key)
            .where(change.c.connector == self.connector, condition)
            .order_by(*order)
        )
        return query.limit(sa.bindparam("limit", type_=sa.Integer())).subquery("batch")


_AFTER_CHANGE_ID = sa.bindparam("after_change_id", type_=sa.BigInteger())


class PostgresChangeLog(ChangeLog):
    """Only rows of transactions older than every transaction still running are read: a
    transaction that took a lower id but commits later is then never skipped, it is simply
    read once it has committed."""

    _insert = staticmethod(postgresql.insert)

    def snapshot_bound(self, connection: Connection) -> ChangeCursor:
        xmin: int = connection.execute(
            sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        ).scalar_one()
        return ChangeCursor(xmin - 1, 2**63 - 1)

    def commit_without_waiting(self, connection: Connection) -> None:
        """Only for work that can be redone from the change rows. A server crash can then lose
        the last few such commits, each whole and in commit order, and none that a later
        synchronous commit (a push being recorded, say) followed, since that flush covers all
        WAL before it. A lost batch loses its desired values and its cursor advance together,
        and its change rows are simply read again; a lost DELETE of consumed rows is redone
        by the next ingest. Nothing durable is given up; a WAL flush per batch is saved.
        """
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def _after_cursor(self) -> sa.ColumnElement[bool]:
        position = sa.tuple_(change.c.tx_id, change.c.change_id)
        after = sa.tuple_(sa.bindparam("after_tx_id", type_=sa.BigInteger()), _AFTER_CHANGE_ID)
        xmin: sa.ColumnElement[int] = sa.literal_column(
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint", sa.BigInteger()
        )
        return sa.and_(position > after, change.c.tx_id < xmin)

    def _past(self, after: ChangeCursor) -> sa.ColumnElement[bool]:
        position = sa.tuple_(change.c.tx_id, change.c.change_id)
        return position > sa.tuple_(sa.literal(after.tx_id), sa.literal(after.change_id))

    def _between(self, after: ChangeCursor, through: ChangeCursor) -> sa.ColumnElement[bool]:
        # Everything at or before the cursor was committed before it was read, so no row can
        # appear in this range any more. The plain tx_id range lets the planner see how many
        # rows that is; the row comparison alone it misjudges, and scans the whole table.
        position = sa.tuple_(change.c.tx_id, change.c.change_id)
        return sa.and_(
            change.c.tx_id.between(after.tx_id, through.tx_id),
            self._past(after),
            position <= sa.tuple_(sa.literal(through.tx_id), sa.literal(through.change_id)),
        )

    def _batch_query(self, condition: sa.ColumnElement[bool]) -> sa.Select[Any, Any]:
        batch = self._batch(condition, change.c.tx_id, change.c.change_id)
        keys = sa.func.json_agg(batch.c.row_key)
        # Arrays compare element by element, so this is the batch's last position.
        pairs = postgresql.array([batch.c.tx_id, batch.c.change_id])
        last = sa.func.max(pairs, type_=postgresql.ARRAY(sa.BigInteger()))
        return sa.select(sa.type_coerce(keys, sa.JSON).label("keys"), last.label("last"))


class SqliteChangeLog(ChangeLog):
    """Writers are serialised, so the AUTOINCREMENT id alone is in commit order (and tx_id is
    always 0)."""

    _insert = staticmethod(sqlite.insert)

    def snapshot_bound(self, connection: Connection) -> ChangeCursor:
        newest = connection.execute(sa.select(sa.func.max(change.c.change_id))).scalar_one()
        return ChangeCursor(0, newest or 0)

    def read_changes(
        self, connection: Connection, after: ChangeCursor, limit: int
    ) -> ChangeBatch | None:
        try:
            return super().read_changes(connection, after, limit)
        except sa.exc.DBAPIError as exc:
            if not is_data_error(exc):
                raise
            return self._read_changes_bytewise(connection, after, limit)

    def _read_changes_bytewise(
        self, connection: Connection, after: ChangeCursor, limit: int
    ) -> ChangeBatch | None:
        """read_changes for a batch holding a key that is not UTF-8 (a text key can hold any
        bytes here): row by row, so one such key stops nothing else."""
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

    def _after_cursor(self) -> sa.ColumnElement[bool]:
        # A plain rowid range: SQLite keeps no secondary index on this table.
        return change.c.change_id > _AFTER_CHANGE_ID

    def _past(self, after: ChangeCursor) -> sa.ColumnElement[bool]:
        return change.c.change_id > after.change_id

    def _between(self, after: ChangeCursor, through: ChangeCursor) -> sa.ColumnElement[bool]:
        return change.c.change_id.between(after.change_id + 1, through.change_id)

    def _batch_query(self, condition: sa.ColumnElement[bool]) -> sa.Select[Any, Any]:
        batch = self._batch(condition, change.c.change_id)
        keys = sa.func.json_group_array(batch.c.row_key)
        last = sa.func.json_array(
            sa.func.max(batch.c.tx_id), sa.func.max(batch.c.change_id), type_=sa.JSON()
        )
        return sa.select(sa.type_coerce(keys, sa.JSON).label("keys"), last.label("last"))
