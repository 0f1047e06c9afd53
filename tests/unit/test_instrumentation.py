"""The instrumentation hook: events reach every observer, and a broken one cannot stop a run."""

from __future__ import annotations

import logging
import threading

import pytest

from connector.counts import RunCounts, Tally
from connector.instrumentation import Fanout, Instrumentation, LeadOutcome


class Broken(Instrumentation):
    def lead_finished(self, lead_id: str, outcome: LeadOutcome, attributes: object = ()) -> None:
        raise RuntimeError("observer bug")


def test_a_tally_counts_each_event_as_what_it_is() -> None:
    tally = Tally()
    tally.ingested(5, 1, 2)
    tally.ingested(3, 0, 0)
    tally.call_made("Lead.Update", "success", 0.2)
    tally.call_made("Lead.Update", "throttled", 0.1)
    tally.throttled("Lead.Update", 1.0)
    for outcome in LeadOutcome:
        tally.lead_finished("L1", outcome)
    tally.attributes_set_aside("L1", ["mx_A", "mx_B"])
    tally.waiting(4)

    assert tally.counts() == RunCounts(
        changes_ingested=8,
        rows_without_lead_id=1,
        rows_held_back=2,
        changes_waiting=4,
        leads_pushed=1,
        leads_rejected=1,
        leads_deferred=1,
        leads_held_shared=1,
        leads_detached=1,
        leads_abandoned=1,
        attributes_set_aside=2,
        calls_made=2,
        calls_throttled=1,
    )


def test_a_tally_adds_up_events_from_many_threads_exactly() -> None:
    tally = Tally()

    def calls() -> None:
        for _ in range(2000):
            tally.call_made("Lead.Update", "success", 0.0)

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert tally.counts().calls_made == 16000


def test_fanout_passes_each_event_on_and_skips_an_observer_that_raises_warning_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, last = Tally(), Tally()
    events = Fanout(first, Broken(), last)

    with caplog.at_level(logging.WARNING, logger="connector.instrumentation"):
        events.lead_finished("L1", LeadOutcome.PUSHED, ["mx_City"])
        events.lead_finished("L2", LeadOutcome.PUSHED, ["mx_City"])

    assert first.counts().leads_pushed == last.counts().leads_pushed == 2
    (record,) = caplog.records
    assert record.getMessage() == "instrumentation failed"
    assert (record.instrumentation, record.event) == ("Broken", "lead_finished")  # type: ignore[attr-defined]
    assert "observer bug" in record.error  # type: ignore[attr-defined]
