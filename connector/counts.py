"""A run's counts: one frozen record, and the tally that adds them up from the run's events."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from connector.instrumentation import Instrumentation, LeadOutcome

_BY_OUTCOME = {
    LeadOutcome.PUSHED: "leads_pushed",
    LeadOutcome.REJECTED: "leads_rejected",
    LeadOutcome.DEFERRED: "leads_deferred",
    LeadOutcome.SHARED: "leads_held_shared",
    LeadOutcome.DETACHED: "leads_detached",
    LeadOutcome.ABANDONED: "leads_abandoned",
}


@dataclass(frozen=True)
class RunCounts:
    """What one run did, each number named for what it counts."""

    changes_ingested: int = 0  # change rows consumed
    rows_without_lead_id: int = 0  # changed rows whose lead id column is empty or unusable
    rows_held_back: int = 0  # rows that cannot be read, or hold their lead back
    changes_waiting: int = 0  # change rows left for the next run when ingest ended
    leads_pushed: int = 0
    leads_rejected: int = 0
    leads_deferred: int = 0
    leads_held_shared: int = 0  # several rows have the lead's id: nothing sent
    leads_detached: int = 0  # no row has the lead's id any more: nothing sent
    leads_abandoned: int = 0  # their call was unanswered at a stop: sent again next run
    attributes_set_aside: int = 0  # unknown to LeadSquared
    calls_made: int = 0  # calls that reached the wire, answered or not
    calls_throttled: int = 0


class Tally(Instrumentation):
    """Adds up a run's events, from any thread, into RunCounts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = RunCounts()

    def counts(self) -> RunCounts:
        with self._lock:
            return self._counts

    def waiting(self, changes: int) -> None:
        self._add(changes_waiting=changes)

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        self._add(calls_made=1)

    def throttled(self, endpoint: str, retry_after: float | None) -> None:
        self._add(calls_throttled=1)

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        self._add(**{_BY_OUTCOME[outcome]: 1})

    def attributes_set_aside(self, lead_id: str, attributes: Sequence[str]) -> None:
        self._add(attributes_set_aside=len(attributes))

    def ingested(self, changes: int, rows_without_lead_id: int, rows_held_back: int) -> None:
        self._add(
            changes_ingested=changes,
            rows_without_lead_id=rows_without_lead_id,
            rows_held_back=rows_held_back,
        )

    def _add(self, **counts: int) -> None:
        with self._lock:
            current = self._counts
            self._counts = dataclasses.replace(
                current, **{name: getattr(current, name) + n for name, n in counts.items()}
            )
