"""The one hook through which the connector reports what it does: calls, throttles, retries,
leads, ingest batches and finished runs.

`Connector(instrumentation=...)` takes any object with these methods; `Instrumentation` itself
is the no-op default, so an implementation overrides only the events it cares about. A run's
counts (`connector.counts.Tally`), the log (`LoggingInstrumentation`) and the Prometheus
metrics (`connector.metrics`) are implementations. Every method is called from the thread
that saw the event, possibly several at once; one that raises is logged and skipped.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.counts import RunCounts

log = logging.getLogger(__name__)


class LeadOutcome(enum.Enum):
    """How one lead's push ended in a run."""

    PUSHED = "pushed"  # every attribute that differed was sent (or none needed sending)
    REJECTED = "rejected"  # LeadSquared refused the values; waits for new ones or a retry
    DEFERRED = "deferred"  # out of tries for this run; a later run tries again
    SHARED = "shared"  # held back: several rows have the lead's id
    DETACHED = "detached"  # no row has the lead's id any more
    ABANDONED = "abandoned"  # its call was unanswered at a stop; it stays pending


class Instrumentation:
    """Does nothing: subclass it and override the events to observe."""

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        """A call reached the wire. `outcome` is a `connector.responses.Outcome` value, or
        "unreachable" or "abandoned" when no answer came."""

    def throttled(self, endpoint: str, retry_after: float | None) -> None:
        """LeadSquared throttled a call (it is also reported by `call_made`)."""

    def retrying(self, lead_ids: Sequence[str], pause: float) -> None:
        """These leads' call failed in a way worth trying again in this run: they are sent
        again after `pause` seconds (counted once per lead per try)."""

    def push_started(self, leads: int) -> None:
        """Ingest is done and the push phase begins, with this many leads due."""

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        """A lead's push in this run ended this way; `attributes` are those sent, if any."""

    def attributes_set_aside(self, lead_id: str, attributes: Sequence[str]) -> None:
        """LeadSquared does not know these attributes; they wait, the rest is sent."""

    def ingested(self, changes: int, rows_without_lead_id: int, rows_held_back: int) -> None:
        """One ingest batch was committed."""

    def run_finished(self, status: str, counts: RunCounts, error: str | None) -> None:
        """A run ended; `counts` are its totals."""


class Fanout(Instrumentation):
    """Passes every event to each of several instrumentations, in order.

    An instrumentation that raises is logged (once per event) and skipped: observing the sync
    must never break it.
    """

    def __init__(self, *targets: Instrumentation) -> None:
        self.targets = list(targets)
        self._warned: set[tuple[int, str]] = set()

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        self._each("call_made", endpoint, outcome, seconds)

    def throttled(self, endpoint: str, retry_after: float | None) -> None:
        self._each("throttled", endpoint, retry_after)

    def retrying(self, lead_ids: Sequence[str], pause: float) -> None:
        self._each("retrying", lead_ids, pause)

    def push_started(self, leads: int) -> None:
        self._each("push_started", leads)

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        self._each("lead_finished", lead_id, outcome, attributes)

    def attributes_set_aside(self, lead_id: str, attributes: Sequence[str]) -> None:
        self._each("attributes_set_aside", lead_id, attributes)

    def ingested(self, changes: int, rows_without_lead_id: int, rows_held_back: int) -> None:
        self._each("ingested", changes, rows_without_lead_id, rows_held_back)

    def run_finished(self, status: str, counts: RunCounts, error: str | None) -> None:
        self._each("run_finished", status, counts, error)

    def _each(self, event: str, *args: object) -> None:
        for target in list(self.targets):
            method = getattr(target, event, None)
            if method is None:
                continue  # an observer written before this event was added
            try:
                method(*args)
            except Exception as exc:  # noqa: BLE001 (a broken observer must not stop the sync)
                if (id(target), event) in self._warned:
                    continue  # once per observer and event, or a broken one floods the log
                self._warned.add((id(target), event))
                log.warning(
                    "instrumentation failed",
                    extra={
                        "instrumentation": type(target).__name__,
                        "event": event,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )


class LoggingInstrumentation(Instrumentation):
    """The connector's log lines for these events (the default)."""

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        log.debug(
            "leadsquared call",
            extra={"api": endpoint, "outcome": outcome, "seconds": round(seconds, 3)},
        )

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        if outcome is LeadOutcome.PUSHED and attributes:
            log.info("lead pushed", extra={"lead_id": lead_id, "attributes": list(attributes)})

    def ingested(self, changes: int, rows_without_lead_id: int, rows_held_back: int) -> None:
        log.debug("ingested batch", extra={"changes": changes})
