"""Ingest: turn captured changes into per-lead desired values, in bounded batches."""

from __future__ import annotations

import functools
import logging
import operator
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Connection

from connector.changelog import START, ChangeBatch, ChangeCursor
from connector.clock import Clock
from connector.desired import DesiredValues
from connector.instrumentation import Instrumentation
from connector.leads import RowProblem, fold_rows
from connector.quarantine import isolate
from connector.source import SourceTable
from connector.tables import ConnectorTables

log = logging.getLogger(__name__)


class Transactions(Protocol):
    """Where ingest opens its transactions: the engine, or (`run --dry-run`) savepoints of one
    transaction that is rolled back."""

    def connect(self) -> AbstractContextManager[Connection]: ...

    def begin(self) -> AbstractContextManager[Connection]: ...


@dataclass(frozen=True)
class _Written:
    """What writing one batch's desired values found."""

    rows_without_lead: int = 0
    rows_holding_lead: int = 0
    problems: tuple[RowProblem, ...] = ()

    def __add__(self, other: _Written) -> _Written:
        return _Written(
            self.rows_without_lead + other.rows_without_lead,
            self.rows_holding_lead + other.rows_holding_lead,
            self.problems + other.problems,
        )


# Keys remembered per ingest call; past this the memory is released and dedupe starts over.
MAX_REMEMBERED_KEYS = 500_000
# An ingest this large (a first sync, a backfill) can leave PostgreSQL's statistics behind.
ANALYZE_AFTER_CHANGES = 10_000
# Consumed change rows are deleted in one statement per this many, and when ingest ends: so a
# backlog that keeps growing still gets its rows deleted, and no DELETE runs for long.
DISCARD_AFTER_CHANGES = 500_000


def ingest(
    engine: Transactions,
    *,
    tables: ConnectorTables,
    source: SourceTable,
    clock: Clock,
    batch_size: int,
    stop: threading.Event | None = None,
    events: Instrumentation | None = None,
) -> None:
    """Read every committed change, batch by batch.

    Each batch folds the rows' current values into desired values and advances the cursor in
    ONE transaction, so a crash leaves either both or neither. Change rows the cursor has
    passed are deleted afterwards, several batches at a time. Memory is bounded by the batch
    and by MAX_REMEMBERED_KEYS.

    A row changed many times has many change rows, but one read of its current values after
    they all committed covers them all: a key read during this call is not read again for
    changes committed before the call began.
    """
    events = events or Instrumentation()
    changes = 0
    with engine.connect() as connection:
        snapshot = tables.changes.snapshot_bound(connection)
        # One run at a time per connector (the run lock), so the cursor only moves here.
        position = tables.changes.load_cursor(connection)
        # Checked once: while there are none, ingest spends nothing on forgetting them.
        problems_noted = tables.problems.has_row_problems(connection)
    if problems_noted:
        _forget_deleted_rows(engine, tables, source)
    discarded = START
    undiscarded = 0
    read_keys: set[str] = set()
    while stop is None or not stop.is_set():
        tables.fence.ensure_held()
        with engine.begin() as connection:
            tables.changes.commit_without_waiting(connection)
            batch = tables.changes.read_changes(connection, position, batch_size)
            if batch is None:
                break
            # A run that lost the run lock writes no desired values and moves no cursor. Not
            # before the read: the check's row lock takes a transaction id, and changes
            # committed by transactions younger than that would wait for the next batch.
            tables.fence.check(connection)
            keys = _keys_to_read(batch, read_keys, snapshot)
            now = clock.now()
            written = _BatchWriter(connection, tables.desired, source, now).write(keys)
            written += _unreadable_keys(batch, source)
            if written.problems or problems_noted:
                tables.problems.note_row_problems(
                    connection, keys, written.problems, now, forget=problems_noted
                )
                problems_noted = True
            tables.changes.consume(connection, batch, now)
        position = batch.last
        if len(read_keys) > MAX_REMEMBERED_KEYS:
            read_keys.clear()
        read_keys.update(keys)
        changes += len(batch.keys)
        held_back = written.rows_holding_lead + len(written.problems)
        events.ingested(len(batch.keys), written.rows_without_lead, held_back)
        undiscarded += len(batch.keys)
        if undiscarded >= DISCARD_AFTER_CHANGES:
            discarded = _discard(engine, tables, discarded, position)
            undiscarded = 0
    if position != discarded:
        _discard(engine, tables, discarded, position)
    if changes >= ANALYZE_AFTER_CHANGES:
        with engine.begin() as connection:
            if tables.desired.leads_outgrew_statistics(connection):
                tables.desired.analyze_leads(connection)


def _forget_deleted_rows(
    engine: Transactions, tables: ConnectorTables, source: SourceTable
) -> None:
    """Forget the rows held back at ingest that have since been deleted: deletes are not
    captured, so nothing else would. A row whose key could not be read cannot be looked up
    by it, and stays."""
    with engine.begin() as connection:
        keys = [
            problem.key
            for problem in tables.problems.row_problems(connection)
            if problem.column != source.key_column.name
        ]
        present = source.keys_present(connection, keys)
        tables.problems.forget_row_problems(connection, [key for key in keys if key not in present])


def _keys_to_read(batch: ChangeBatch, read_keys: set[str], bound: ChangeCursor) -> list[str]:
    """The batch's keys, once each, less those read during this call that need no new read."""
    if batch.last <= bound:
        return list(set(batch.keys).difference(read_keys))
    # Some of these changes committed after this call began, so their rows may have changed
    # since they were read; reading the batch's other rows again as well is merely redundant.
    return list(set(batch.keys))


@dataclass(frozen=True)
class _BatchWriter:
    """Writes one batch's desired values, in the batch's transaction."""

    connection: Connection
    desired: DesiredValues
    source: SourceTable
    now: datetime

    def write(self, keys: list[str]) -> _Written:
        """Fold the rows with these keys into desired values.

        A row that cannot be read or stored fails the statement it is in; the keys are then
        split until each such row stands alone (connector.quarantine), and it is diagnosed and
        returned as a problem while every other row is written.
        """
        if not keys:
            return _Written()
        isolated = isolate(self.connection, keys, lambda part: self._write_keys(list(part)))
        written = functools.reduce(operator.add, isolated.results, _Written())
        problems = tuple(
            self.source.diagnose(self.connection, key, error)
            for key, error in isolated.failed.items()
        )
        for problem in problems:
            log.warning(
                "row held back: it cannot be ingested",
                extra={"row": problem.key, "column": problem.column, "reason": problem.reason},
            )
        return written + _Written(problems=problems)

    def _write_keys(self, keys: list[str]) -> _Written:
        query = self.source.desired_query(keys)
        if query is None:
            return self._fold_in_python(keys)
        without_lead, left = self.desired.write_desired_from(self.connection, query, self.now)
        written = _Written(rows_without_lead=without_lead)
        if left:
            written += self._fold_in_python(left)
        return written

    def _fold_in_python(self, keys: list[str]) -> _Written:
        folded = fold_rows(self.source.read(self.connection, keys))
        self.desired.write_desired(self.connection, folded.changes, self.now)
        return _Written(folded.rows_without_lead, folded.rows_holding_lead, tuple(folded.problems))


def _unreadable_keys(batch: ChangeBatch, source: SourceTable) -> _Written:
    reason = "the key is not UTF-8 text, so the row cannot be read"
    column = source.key_column.name
    problems = tuple(RowProblem(key, reason, column=column) for key in batch.unreadable_keys)
    return _Written(problems=problems)


def _discard(
    engine: Transactions, tables: ConnectorTables, after: ChangeCursor, through: ChangeCursor
) -> ChangeCursor:
    """Delete the consumed change rows in (after, through]; returns the new `after`."""
    with engine.begin() as connection:
        tables.changes.commit_without_waiting(connection)
        tables.fence.check(connection)
        tables.changes.discard_consumed(connection, after, through)
    return through
