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
    rows_without_lead: int


# Keys remembered per ingest call; past this the memory is released and dedupe starts over.
MAX_REMEMBERED_KEYS = 500_000
# An ingest this large (a first sync, a backfill) leaves PostgreSQL's statistics behind.
ANALYZE_AFTER_CHANGES = 10_000


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
    ONE transaction, so a crash leaves either both or neither. Memory is bounded by the batch
    and by MAX_REMEMBERED_KEYS.

    A row changed many times has many change rows, but one read of its current values after
    they all committed covers them all: a key read during this call is not read again for
    changes committed before the call began.
    """
    changes = without_lead = 0
    with engine.connect() as connection:
        snapshot = store.snapshot_bound(connection)
    bound = (snapshot.tx_id, snapshot.change_id)
    read_keys: set[str] = set()
    while stop is None or not stop.is_set():
        with engine.begin() as connection:
            batch = store.read_changes(connection, store.load_cursor(connection), batch_size)
            if batch is None:
                break
            keys = list(
                dict.fromkeys(
                    key
                    for tx_id, change_id, key in batch.rows
                    if key not in read_keys or (tx_id, change_id) > bound
                )
            )
            folded = fold_rows(source.read(connection, keys))
            now = clock.now()
            store.write_desired(connection, folded.changes, now)
            store.consume(connection, batch, now)
        if len(read_keys) > MAX_REMEMBERED_KEYS:
            read_keys.clear()
        read_keys.update(keys)
        changes += len(batch.rows)
        without_lead += folded.rows_without_lead
        log.debug(
            "ingested batch",
            extra={
                "changes": len(batch.rows),
                "read": len(keys),
                "leads": len(folded.changes),
            },
        )
    if changes >= ANALYZE_AFTER_CHANGES:
        with engine.begin() as connection:
            store.analyze_leads(connection)
    return IngestResult(changes, without_lead)
