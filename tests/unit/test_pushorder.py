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
    queue: InMemoryLeadQueue,
    *,
    began: datetime,
    both_ends: bool,
    burst_leads: int = 2,
    leads_per_call: int = 1,
) -> PushOrder:
    def read(after: LeadState | None, limit: int, **bounds: object) -> list[LeadState]:
        return queue.pending_leads(START + timedelta(days=1), after, limit, **bounds)  # type: ignore[arg-type]

    return PushOrder(
        read,
        list,
        began=began,
        leads_per_call=leads_per_call,
        page=2 * leads_per_call,
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
    assert handed_out(order) == ["L0", "L6", "L1", "L5", "L2", "L4", "L3"]
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
    # the burst, in its order, takes turns with the backlog's oldest end, as the backlog's
    # newest end would.
    assert handed_out(order) == [
        *("S1", "S2", "B0", "X1", "B1", "X2", "B2", "X3", "B3"),
        *("B5", "B4"),
    ]
    assert order.done


def test_a_stream_of_single_changes_leaves_the_backlog_and_bursts_a_quarter_of_the_calls() -> None:
    queue = InMemoryLeadQueue(*(lead(f"B{n}", n) for n in range(8)))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    take_in(order, queue, 20, "X1", "X2", "X3", "X4", "X5")
    got = []
    for n in range(12):
        take_in(order, queue, 30 + 10 * n, f"S{n:02}")  # a single change before every call
        group = order.next_group()
        assert group is not None
        got += [state.lead_id for state in group]
    assert got == [
        *("S00", "S01", "S02", "B0"),
        *("S03", "S04", "S05", "X1"),
        *("S06", "S07", "S08", "B1"),
    ]


def test_a_bulk_call_carries_several_take_ins_single_changes() -> None:
    queue = InMemoryLeadQueue(lead("B0", 0))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True, leads_per_call=3)
    for n in range(4):
        take_in(order, queue, 20 + 10 * n, f"S{n}")
    first = order.next_group()
    assert first is not None
    assert [state.lead_id for state in first] == ["S0", "S1", "S2"]


def test_a_clock_set_back_opens_no_window_over_leads_already_handed_out() -> None:
    queue = InMemoryLeadQueue(*(lead(f"B{n}", n) for n in range(3)))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    take_in(order, queue, 20, "S1")
    first = order.next_group()
    assert first is not None
    assert [state.lead_id for state in first] == ["S1"]
    # S1's call is in flight (the fake keeps it pending); the next take-in's clock reads
    # earlier than the last, and earlier than the push's start.
    order.took_in(START + timedelta(minutes=5))
    assert handed_out(order) == ["B0", "B2", "B1"]
    assert order.done


def test_a_lead_due_again_before_the_first_take_in_goes_out_as_a_single_change() -> None:
    queue = InMemoryLeadQueue(*(lead(f"B{n}", n) for n in range(4)))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    first = order.next_group()
    assert first is not None
    assert [state.lead_id for state in first] == ["B0"]
    # B0 changed while its call was in flight: answered, it is due again, dated then.
    queue.leads["B0"] = lead("B0", 11)
    assert handed_out(order) == ["B0", "B3", "B1", "B2"]


def test_leads_dated_after_the_push_began_are_its_backlog() -> None:
    """The clock was set back since they were made due: no take-in window covers them."""
    queue = InMemoryLeadQueue(*(lead(f"X{n}", 20 + n) for n in range(3)))
    order = order_over(queue, began=START + timedelta(minutes=10), both_ends=True)
    assert sorted(handed_out(order)) == ["X0", "X1", "X2"]
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
