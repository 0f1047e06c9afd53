"""The order a push hands leads out in (connector.pushorder), against the in-memory queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connector.leads import LeadState
from connector.pushorder import PushOrder
from tests.fakes import InMemoryLeadQueue

START = datetime(2026, 1, 1, tzinfo=UTC)


def lead(lead_id: str, minute: int) -> LeadState:
    waiting = START + timedelta(minutes=minute)
    return LeadState(lead_id, f"row-{lead_id}", {"mx_City": lead_id}, {}, True, waiting)


def order_over(queue: InMemoryLeadQueue, *, began: datetime, both_ends: bool) -> PushOrder:
    def read(after: LeadState | None, limit: int, **bounds: object) -> list[LeadState]:
        return queue.pending_leads(START + timedelta(days=1), after, limit, **bounds)  # type: ignore[arg-type]

    return PushOrder(read, list, began=began, leads_per_call=1, page=2, both_ends=both_ends)


def handed_out(order: PushOrder) -> list[str]:
    found = []
    while (group := order.next_group()) is not None:
        found += [state.lead_id for state in group]
    return found


def test_alone_the_oldest_end_serves_first_in_first_out() -> None:
    queue = InMemoryLeadQueue(lead("B", 1), lead("A", 2), lead("C", 0), lead("D", 3))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=False)
    assert handed_out(order) == ["C", "B", "A", "D"]
    assert order.done


def test_both_ends_take_turns_and_meet_without_handing_a_lead_out_twice() -> None:
    leads = [lead(f"L{n}", n) for n in range(7)]
    order = order_over(
        InMemoryLeadQueue(*leads), began=START + timedelta(minutes=10), both_ends=True
    )
    assert handed_out(order) == ["L0", "L6", "L1", "L5", "L2", "L4", "L3"]
    assert order.done


def test_leads_taken_in_go_newest_first_and_the_backlog_keeps_its_turns() -> None:
    queue = InMemoryLeadQueue(*(lead(f"B{n}", n) for n in range(6)))
    began = START + timedelta(minutes=10)
    order = order_over(queue, began=began, both_ends=True)
    first = [order.next_group() for _ in range(2)]
    assert [group[0].lead_id for group in first if group] == ["B0", "B5"]
    # A take-in at minute 20 makes F1 and F2 due; one at minute 30, F3.
    order.took_in(START + timedelta(minutes=20))
    queue.leads.update({s.lead_id: s for s in (lead("F1", 21), lead("F2", 22))})
    order.took_in(START + timedelta(minutes=30))
    queue.leads["F3"] = lead("F3", 31)
    # B4 was read ahead with B5. The newest take-in first; F1 and F2 come after the backlog's
    # last (they were read ahead with F2 before the backlog's ends met).
    assert handed_out(order) == ["B1", "B4", "B2", "F3", "B3", "F2", "F1"]
    assert order.done


def test_fresh_leads_left_when_the_backlog_is_done_wait_for_the_next_push() -> None:
    queue = InMemoryLeadQueue(lead("B0", 0))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    assert handed_out(order) == ["B0"]
    order.took_in(START + timedelta(minutes=20))
    queue.leads["F1"] = lead("F1", 21)
    assert order.next_group() is None
    assert order.done
