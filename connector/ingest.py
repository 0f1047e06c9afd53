"""Ingest: turn captured changes into per-lead desired values, in bounded batches."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from connector.clock import Clock
from connector.leads import fold_rows
from connector.source import SourceTable
from connector.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    changes: int
    leads_changed: int
    rows_without_lead: int


def ingest(
    engine: Engine,
    *,
    store: Store,
    source: SourceTable,
    clock: Clock,
    batch_size: int,
    stop: threading.Event | None = None,
) -> IngestResult:
    """Read every committed change, batch by batch.

    Each batch folds the rows' current values into desired values and advances the cursor in
    ONE transaction, so a crash leaves either both or neither. Memory is bounded by the batch.
    """
    attributes = frozenset(source.mapping.values())
    changes = leads_changed = without_lead = 0
    while stop is None or not stop.is_set():
        with engine.begin() as connection:
            batch = store.read_changes(connection, store.load_cursor(connection), batch_size)
            if batch is None:
                break
            rows = source.read(connection, batch.row_keys)
            existing = store.load_leads(
                connection, {row.lead_id for row in rows if row.lead_id is not None}, lock=True
            )
            folded = fold_rows(rows, existing, attributes)
            now = clock.now()
            store.write_desired(connection, folded.changes, now)
            store.consume_through(connection, batch.last, now)
        changes += batch.size
        leads_changed += len(folded.changes)
        without_lead += folded.rows_without_lead
        log.debug(
            "ingested batch",
            extra={"changes": batch.size, "leads_changed": len(folded.changes)},
        )
    return IngestResult(changes, leads_changed, without_lead)
