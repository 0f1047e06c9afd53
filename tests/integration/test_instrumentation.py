"""A connector's instrumentation sees every call, lead and run, over real HTTP and databases."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import sqlalchemy as sa

from connector import Connector
from connector.counts import RunCounts
from connector.instrumentation import Instrumentation, LeadOutcome
from connector.testing.emulator import Emulator
from tests.support import config_dict, execute, load


class Recorder(Instrumentation):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        # Recorded, not asserted here: the connector logs and skips an observer that raises.
        self.seconds.append(seconds)
        self._record("call", endpoint, outcome)

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        self._record("lead", lead_id, outcome, tuple(attributes))

    def ingested(self, changes: int, rows_without_lead_id: int, rows_held_back: int) -> None:
        self._record("ingested", changes, rows_without_lead_id, rows_held_back)

    def run_finished(self, status: str, counts: RunCounts, error: str | None) -> None:
        self._record("run", status, counts, error)

    def _record(self, *event: object) -> None:
        with self._lock:
            self.events.append(event)


def test_instrumentation_sees_each_call_lead_batch_and_run(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    emulator.fail_next(1, "503")
    recorder = Recorder()
    with Connector(load(config_dict(db_url, emulator)), instrumentation=recorder) as sync:
        sync.init()
        execute(
            app,
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
            "(1, 'Pune', 'L1'), (2, 'Goa', 'L2'), (3, 'Delhi', NULL)",
        )
        report = sync.run_once()

    calls = [event for event in recorder.events if event[0] == "call"]
    assert sorted(calls) == sorted(
        [("call", "Lead.Update", "transient")] + [("call", "Lead.Update", "success")] * 2
    )
    leads = sorted(event for event in recorder.events if event[0] == "lead")
    assert leads == [
        ("lead", "L1", LeadOutcome.PUSHED, ("mx_City",)),
        ("lead", "L2", LeadOutcome.PUSHED, ("mx_City",)),
    ]
    assert [event for event in recorder.events if event[0] == "ingested"] == [("ingested", 3, 1, 0)]
    assert len(recorder.seconds) == 3
    assert all(seconds >= 0 for seconds in recorder.seconds)
    assert recorder.events[-1] == ("run", "ok", report.counts, None)
    assert (report.counts.calls_made, report.counts.leads_pushed) == (3, 2)
