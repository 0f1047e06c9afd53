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


def order_over(
    queue: InMemoryLeadQueue, *, began: datetime, both_ends: bool, burst_leads: int = 2
) -> PushOrder:
    def read(after: LeadState | None, limit: int, **bounds: object) -> list[LeadState]:
        return queue.pending_leads(START + timedelta(days=1), after, limit, **bounds)  # type: ignore[arg-type]

    return PushOrder(
        read,
        list,
        began=began,
        leads_per_call=1,
        page=2,
        both_ends=both_ends,
        burst_leads=burst_leads,
    )


def take_in(order: PushOrder, queue: InMemoryLeadQueue, minute: int, *lead_ids: str) -> None:
    """A take-in at `minute` that makes `lead_ids` due, a minute apart after it."""
    order.took_in(START + timedelta(minutes=minute))
    for offset, lead_id in enumerate(lead_ids, start=1):
        queue.leads[lead_id] = lead(lead_id, minute + offset)


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
    assert handed_out(order) == ["L6", "L0", "L5", "L1", "L4", "L2", "L3"]
    assert order.done


def test_single_changes_go_first_in_their_order_and_the_backlog_keeps_every_fourth_call() -> None:
    queue = InMemoryLeadQueue(*(lead(f"B{n}", n) for n in range(4)))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    take_in(order, queue, 20, "F1", "F2")
    take_in(order, queue, 30, "F3", "F4")
    # F1 to F4 are four take-ins' worth of single changes (two leads each, not more than the
    # burst's two): oldest first, three in a row, then the oldest end's turn.
    assert handed_out(order) == ["F1", "F2", "F3", "B0", "F4", "B3", "B1", "B2"]
    assert order.done


def test_a_burst_waits_behind_single_changes_taken_in_before_and_after_it() -> None:
    queue = InMemoryLeadQueue(*(lead(f"B{n}", n) for n in range(6)))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    take_in(order, queue, 20, "S1")
    take_in(order, queue, 30, "X1", "X2", "X3")  # three leads at once: more than a burst's two
    take_in(order, queue, 40, "S2")
    # Both single changes before any of the burst, however they were taken in around it; then
    # the burst, in its order, takes turns with the backlog, as the backlog's newest end would.
    assert handed_out(order) == [
        *("S1", "S2", "X1", "B0", "X2", "B1", "X3", "B2"),
        *("B5", "B3", "B4"),
    ]
    assert order.done


def test_single_changes_still_go_once_the_backlog_is_done_but_bursts_wait_for_the_next_push() -> (
    None
):
    queue = InMemoryLeadQueue(lead("B0", 0))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    assert handed_out(order) == ["B0"]
    assert order.done
    take_in(order, queue, 20, "X1", "X2", "X3")
    take_in(order, queue, 30, "F1")
    assert handed_out(order) == ["F1"]
    assert order.done
    assert sorted(s.lead_id for s in queue.leads.values() if s.pending) == [
        "B0",
        "F1",
        "X1",
        "X2",
        "X3",
    ]  # the fake keeps leads pending until recorded: the burst is there, not handed out
