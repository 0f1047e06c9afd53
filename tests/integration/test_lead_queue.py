"""The in-memory lead queue that Pusher's unit tests use keeps the same rules as the real one:
the same steps on both leave the same lead states, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.leads import DesiredChange, LeadState
from connector.push import LeadQueue
from connector.testing.emulator import Emulator
from tests.fakes import InMemoryLeadQueue
from tests.support import config_dict, lead_states, load

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ATTRIBUTES = frozenset({"mx_City", "mx_Plan"})


class Both:
    """The same lead table as the connector's tables and in memory."""

    def __init__(self, sync: Connector) -> None:
        self.sync = sync
        self.sql: LeadQueue = sync.tables.queue(sync.source)
        self.memory = InMemoryLeadQueue()

    def desire(self, lead_id: str, **desired: str | None) -> None:
        """Ingest writes the lead's desired values (all of them), as a changed row would."""
        with self.sync.engine.begin() as connection:
            change = DesiredChange(lead_id, f"row-{lead_id}", desired)
            self.sync.tables.desired.write_desired(connection, [change], NOW)
        if lead_id in self.memory.leads:
            self.memory.desire(lead_id, **desired)
        else:
            state = LeadState(lead_id, f"row-{lead_id}", desired, {}, pending=True)
            self.memory.leads[lead_id] = state

    def each(self) -> Iterator[LeadQueue]:
        yield self.sql
        yield self.memory

    def states(self) -> tuple[dict[str, tuple[object, ...]], dict[str, tuple[object, ...]]]:
        def key(state: LeadState) -> tuple[object, ...]:
            return (
                state.desired,
                state.pushed,
                state.pending,
                state.rejected,
                state.attempts,
                state.last_error,
                state.next_attempt_at,
                state.set_aside,
            )

        sql = {lead_id: key(state) for lead_id, state in lead_states(self.sync).items()}
        memory = {lead_id: key(state) for lead_id, state in self.memory.leads.items()}
        return sql, memory


@pytest.fixture
def both(db_url: str, app: sa.Engine, emulator: Emulator) -> Iterator[Both]:
    with Connector(load(config_dict(db_url, emulator))) as sync:
        sync.init()
        yield Both(sync)


def test_pending_leads_come_in_pages_in_lead_id_order_when_due(both: Both) -> None:
    for n in range(7):
        both.desire(f"L{n}", mx_City=f"c{n}")
    for queue in both.each():
        queue.record_failure("L2", {"mx_City": "c2"}, "bad", NOW, rejected=True)
        later = NOW + timedelta(minutes=5)
        queue.record_failure(
            "L4", {"mx_City": "c4"}, "503", NOW, rejected=False, next_attempt_at=later
        )
        queue.record_pushed("L5", {"mx_City": "c5"}, ATTRIBUTES, NOW)

    for queue in both.each():
        page = queue.pending_leads(NOW, None, 2)
        first = [s.lead_id for s in page]
        rest = [s.lead_id for s in queue.pending_leads(NOW, page[-1], 10)]
        due_later = [s.lead_id for s in queue.pending_leads(NOW + timedelta(hours=1), None, 10)]
        assert (first, rest) == (["L0", "L1"], ["L3", "L6"])
        assert due_later == ["L0", "L1", "L3", "L4", "L6"]


def test_pushes_failures_and_set_asides_leave_the_same_states(both: Both) -> None:
    both.desire("L1", mx_City="Pune", mx_Plan="pro")
    both.desire("L2", mx_City="Goa")
    both.desire("L3", mx_City="Agra")
    both.desire("L4", mx_City="Delhi")
    for queue in both.each():
        queue.set_aside("L1", {"mx_Plan": "pro"}, "unknown mx_Plan", NOW)
        queue.record_pushed("L1", {"mx_City": "Pune"}, ATTRIBUTES, NOW, error="unknown mx_Plan")
        queue.record_failure("L2", {"mx_City": "Goa"}, "invalid", NOW, rejected=True)
        queue.record_failure(
            "L3", {"mx_City": "Agra"}, "503", NOW, rejected=False, next_attempt_at=NOW
        )
        queue.record_pushed("L4", {"mx_City": "Old"}, ATTRIBUTES, NOW)

    sql, memory = both.states()
    assert sql == memory
    assert sql["L1"][5:] == ("unknown mx_Plan", None, {"mx_Plan": "pro"})
    assert sql["L2"][3:5] == (True, 1)
    assert sql["L4"][2] is True, "pushed a value the row no longer holds: still pending"


def test_a_failure_of_values_replaced_during_the_call_holds_nothing_back_on_both(
    both: Both,
) -> None:
    both.desire("L1", mx_City="Pune")
    both.desire("L2", mx_City="Goa")
    both.desire("L1", mx_City="Mumbai")
    both.desire("L2", mx_City="Delhi")
    for queue in both.each():
        queue.record_failure("L1", {"mx_City": "Pune"}, "invalid", NOW, rejected=True)
        queue.record_failure(
            "L2", {"mx_City": "Goa"}, "503", NOW, rejected=False, next_attempt_at=NOW
        )

    sql, memory = both.states()
    assert sql == memory
    assert [(state[3], state[6]) for state in sql.values()] == [(False, None), (False, None)]
