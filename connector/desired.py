"""Desired values: what ingest writes into each lead's state, in one statement per batch.

Every method runs in the caller's transaction (ingest's batch). A lead whose desired values and
hold did not move is left untouched, so a rejection or a retry delay holds until the values
really change. The two databases compute a batch's rows differently: PostgreSQL in one
statement with a writing CTE, SQLite through a temporary table of the folded rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from connector.database import is_postgres
from connector.leadrows import waiting_since
from connector.leads import DesiredChange
from connector.schema import lead
from connector.sqlfold import BATCH_FOR_PYTHON
from connector.values import dumps

SourceRows = sa.Select[str, str | None, str | None]


def desired_values(engine: Engine, connector: str) -> DesiredValues:
    """Where ingest writes `connector`'s desired values, for the engine's database."""
    kind = PostgresDesiredValues if is_postgres(engine) else SqliteDesiredValues
    return kind(connector)


class DesiredValues:
    _insert: Any  # the dialect's INSERT, which takes ON CONFLICT
    _aggregate: Any  # the dialect's aggregate into a JSON array

    def __init__(self, connector: str) -> None:
        self.connector = connector

    def write_desired(
        self, connection: Connection, changes: Sequence[DesiredChange], now: datetime
    ) -> None:
        """Store new desired values, flagging the lead for the push phase."""
        if not changes:
            return
        rows = [_row(c) for c in changes]
        # One statement and one JSON parameter, not a round trip or bound row per lead.
        incoming = self._json_rows(rows)
        constants = self._constants(now)
        insert: Any = self._insert(lead).from_select(
            [*constants, *incoming],
            sa.select(*constants.values(), *incoming.values())
            # SQLite needs a WHERE to tell the upsert's ON CONFLICT from a join's ON.
            .where(sa.true()),
        )
        connection.execute(self._when_desired_moved(insert))

    def write_desired_from(
        self, connection: Connection, source_rows: SourceRows, now: datetime
    ) -> tuple[int, list[str]]:
        """write_desired for leads whose values the database computes itself.

        `source_rows` gives (source_key, lead_id, desired) per source row, as
        SourceTable.desired_query does. Returns how many of those rows have no lead id, and
        the keys of the rows it leaves to write_desired: those of every lead with a row
        whose desired is NULL, so that each lead is written once, by one side; all of them,
        writing nothing, when a row says the whole batch needs Python.

        One row per lead, as fold_rows keeps; which of several wins is arbitrary there too,
        and another of them is kept as other_key, which holds the lead back. Each row would
        be an upsert of its own, which can reset a lead's rejection even when the last row
        puts its values back.
        """
        raise NotImplementedError

    def leads_outgrew_statistics(self, connection: Connection) -> bool:
        """Whether the lead table holds many more rows than its statistics say."""
        return False

    def analyze_leads(self, connection: Connection) -> None:
        """Fresh statistics after a large ingest keep lead lookups on the primary key."""

    def _json_rows(self, rows: list[dict[str, Any]]) -> dict[str, sa.ColumnElement[Any]]:
        """The rows' fields as columns of a table read from one JSON parameter."""
        raise NotImplementedError

    def _constants(self, now: datetime) -> dict[str, sa.ColumnElement[Any]]:
        values = {
            "connector": self.connector,
            "pending": True,
            "updated_at": now,
            "pending_since": now,
        }
        return {name: sa.literal(value, lead.c[name].type) for name, value in values.items()}

    def _latest(
        self,
        rows: Any,
        now: datetime,
        low: sa.ColumnElement[Any],
        high: sa.ColumnElement[Any],
        for_python: sa.ScalarSelect[Any],
    ) -> sa.Select[Any, Any]:
        """Each lead's row to store: every row with a lead id no row leaves to Python."""
        return sa.select(
            *self._constants(now).values(),
            rows.c.lead_id,
            rows.c.source_key,
            rows.c.desired,
            sa.null(),
            _another(rows.c.source_key, low, high),
        ).where(rows.c.lead_id.is_not(None), rows.c.lead_id.not_in(for_python))

    def _upsert_latest(self, latest: sa.Select[Any, Any], now: datetime) -> Any:
        columns = [*self._constants(now), "lead_id", "source_key", "desired", "hold", "other_key"]
        return self._when_desired_moved(self._insert(lead).from_select(columns, latest))

    def _outcome(self, rows: Any, for_python: sa.ScalarSelect[Any]) -> sa.Select[Any, Any]:
        """How many rows have no lead id, and the keys left to Python (as a JSON array)."""
        return sa.select(
            sa.func.count().filter(rows.c.lead_id.is_(None)),
            self._aggregate(rows.c.source_key, type_=sa.JSON).filter(
                rows.c.lead_id.in_(for_python)
            ),
        )

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
                "pending_since": waiting_since(new.pending_since),
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


def _row(change: DesiredChange) -> dict[str, Any]:
    return {
        "lead_id": change.lead_id,
        "source_key": change.source_key,
        "desired": dumps(change.desired),
        "hold": change.hold,
        "other_key": change.other_key,
    }


def _left_to_python(rows: Any) -> sa.ScalarSelect[Any]:
    """The leads with a row whose desired values Python must fold."""
    python_rows = rows.alias("python_rows")
    return (
        sa.select(python_rows.c.lead_id)
        .where(python_rows.c.lead_id.is_not(None), python_rows.c.desired.is_(None))
        .scalar_subquery()
    )


class PostgresDesiredValues(DesiredValues):
    _insert = staticmethod(postgresql.insert)
    _aggregate = sa.func.json_agg

    def write_desired_from(
        self, connection: Connection, source_rows: SourceRows, now: datetime
    ) -> tuple[int, list[str]]:
        rows = source_rows.cte("source_rows")
        for_python = _left_to_python(rows)
        low = sa.func.min(rows.c.source_key).over(partition_by=rows.c.lead_id)
        high = sa.func.max(rows.c.source_key).over(partition_by=rows.c.lead_id)
        latest = self._latest(rows, now, low, high, for_python)
        upsert = self._upsert_latest(latest.ext(postgresql.distinct_on(rows.c.lead_id)), now)
        # One statement, so the source rows are read once.
        outcome = self._outcome(rows, for_python).add_cte(upsert.cte("written"))
        without_lead, left = connection.execute(outcome).one()
        return without_lead, left or []

    def leads_outgrew_statistics(self, connection: Connection) -> bool:
        """True after a first sync or a backfill; false after rewriting leads that already
        existed, which leaves the statistics as true as they were."""
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
        connection.exec_driver_sql(f"ANALYZE {lead.name}")

    def _json_rows(self, rows: list[dict[str, Any]]) -> dict[str, sa.ColumnElement[Any]]:
        payload = sa.bindparam(None, json.dumps(rows), sa.Text())
        names = list(rows[0])
        table = (
            sa.func.json_to_recordset(sa.cast(payload, postgresql.JSON))
            .table_valued(*(sa.column(name, lead.c[name].type) for name in names))
            .render_derived(with_types=True)
        )
        return {name: table.c[name] for name in names}


# A batch's folded source rows, per connection (see write_desired_from). Its schema is `temp`,
# so the name can shadow nothing.
_folded = sa.Table(
    f"{lead.name}_folded",
    sa.MetaData(),
    sa.Column("position", sa.Integer(), primary_key=True),  # the order rows were folded in
    sa.Column("source_key", sa.Text()),
    sa.Column("lead_id", sa.Text()),
    sa.Column("desired", sa.Text()),
    schema="temp",
)


class SqliteDesiredValues(DesiredValues):
    _insert = staticmethod(sqlite.insert)
    _aggregate = sa.func.json_group_array

    def write_desired(
        self, connection: Connection, changes: Sequence[DesiredChange], now: datetime
    ) -> None:
        if not any(
            "\x00" in f"{c.lead_id}{c.source_key}{c.hold or ''}{c.other_key or ''}" for c in changes
        ):
            super().write_desired(connection, changes, now)
            return
        # SQLite's JSON functions end a string at its first NUL: bind these rows instead.
        same = {
            "connector": self.connector,
            "pending": True,
            "updated_at": now,
            "pending_since": now,
        }
        bound = [{**same, **_row(c)} for c in changes]
        connection.execute(self._when_desired_moved(sqlite.insert(lead)), bound)

    def write_desired_from(
        self, connection: Connection, source_rows: SourceRows, now: datetime
    ) -> tuple[int, list[str]]:
        # SQLite has no writing CTE, and the rows are needed twice: computed once, kept in
        # this connection's own temporary table.
        connection.execute(sa.schema.CreateTable(_folded, if_not_exists=True))
        connection.execute(sa.delete(_folded))
        columns = ["source_key", "lead_id", "desired"]
        connection.execute(sa.insert(_folded).from_select(columns, source_rows))
        whole_batch = sa.select(_folded.c.desired).where(_folded.c.desired == BATCH_FOR_PYTHON)
        if connection.execute(whole_batch.limit(1)).first() is not None:
            keys = connection.scalars(sa.select(_folded.c.source_key)).all()
            return 0, list(keys)
        for_python = _left_to_python(_folded)
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
        latest = self._latest(_folded, now, per_lead.c.low, per_lead.c.high, for_python)
        latest = latest.select_from(_folded.join(per_lead, _folded.c.position == per_lead.c.last))
        connection.execute(self._upsert_latest(latest, now))
        without_lead, left = connection.execute(self._outcome(_folded, for_python)).one()
        return without_lead, left or []

    def _json_rows(self, rows: list[dict[str, Any]]) -> dict[str, sa.ColumnElement[Any]]:
        payload = sa.bindparam(None, json.dumps(rows), sa.Text())
        items = sa.func.json_each(payload).table_valued("value")
        return {
            name: sa.func.json_extract(items.c.value, f"$.{name}").label(name) for name in rows[0]
        }


def _another(
    key: sa.ColumnElement[Any], low: sa.ColumnElement[Any], high: sa.ColumnElement[Any]
) -> sa.ColumnElement[Any]:
    """Another key of the same lead, given the lowest and highest; NULL when it has one."""
    return sa.case((low != high, sa.case((key == low, high), else_=low)))
