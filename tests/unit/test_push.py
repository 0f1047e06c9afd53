"""Pusher against an in-memory lead queue and a scripted kind of call: no database, no HTTP."""

from __future__ import annotations

import random
import threading
from datetime import datetime

import pytest

from connector.config import RetryConfig
from connector.counts import RunCounts, Tally
from connector.errors import (
    BudgetExhaustedError,
    CallAbandonedError,
    FatalRunError,
)
from connector.leads import LeadState
from connector.outcomes import Answer, AnswerKind, retry_delay
from connector.push import MAX_CONSECUTIVE_THROTTLES, MAX_CONSECUTIVE_UNREACHABLE, PushEnd, Pusher
from tests.fakes import FakeClock, InMemoryLeadQueue, ScriptedCall

ATTRIBUTES = frozenset({"mx_City", "mx_Plan"})
RETRY = RetryConfig(attempts=4, max_seconds=60.0)

TRANSIENT = Answer(AnswerKind.TRANSIENT, "Lead.Update: HTTP 503")
AMBIGUOUS = Answer(AnswerKind.AMBIGUOUS, "Lead.Update: MXException")
UNREACHABLE = Answer(AnswerKind.UNREACHABLE, "cannot connect to host: connection refused")
THROTTLED = Answer(AnswerKind.THROTTLED, "Lead.Update: HTTP 429")
REJECTED = Answer(AnswerKind.REJECTED, "Lead.Update: invalid phone")


def pending(lead_id: str, **desired: str | None) -> LeadState:
    return LeadState(lead_id, f"row-{lead_id}", desired or {"mx_City": "Pune"}, {}, pending=True)


class Run:
    """One push over `queue` with `call`, and what it reported."""

    def __init__(
        self,
        queue: InMemoryLeadQueue,
        call: ScriptedCall,
        *,
        max_in_flight: int = 1,
        stop: threading.Event | None = None,
        batch_size: int = 100,
    ) -> None:
        self.stop = stop or threading.Event()
        self.clock = FakeClock(self.stop)
        self.tally = Tally()
        self.pusher = Pusher(
            queue=queue,
            call=call,
            attributes=ATTRIBUTES,
            clock=self.clock,
            stop=self.stop,
            retry=RETRY,
            max_in_flight=max_in_flight,
            events=self.tally,
            rng=random.Random(7),
        )
        self.end = self.pusher.push_pending(batch_size)

    @property
    def counts(self) -> RunCounts:
        return self.tally.counts()


def test_only_what_differs_is_sent_and_recorded() -> None:
    queue = InMemoryLeadQueue(
        LeadState("L1", "1", {"mx_City": "Pune", "mx_Plan": "pro"}, {"mx_City": "Pune"}, True)
    )
    call = ScriptedCall()

    run = Run(queue, call)

    assert call.sent == [{"L1": {"mx_Plan": "pro"}}]
    assert queue.leads["L1"].pushed == {"mx_City": "Pune", "mx_Plan": "pro"}
    assert not queue.leads["L1"].pending
    assert (run.end, run.counts.leads_pushed) == (PushEnd(), 1)


def test_a_lead_with_nothing_left_to_send_is_settled_without_a_call() -> None:
    queue = InMemoryLeadQueue(LeadState("L1", "1", {"mx_Old": "x"}, {}, True))
    call = ScriptedCall()

    run = Run(queue, call)

    assert call.sent == []
    assert not queue.leads["L1"].pending
    assert run.counts == RunCounts()


def test_a_transient_failure_is_retried_after_a_backoff_and_then_succeeds() -> None:
    queue = InMemoryLeadQueue(pending("L1"))
    call = ScriptedCall(L1=[TRANSIENT, TRANSIENT])

    run = Run(queue, call)

    assert len(call.calls_for("L1")) == 3
    assert len(run.clock.slept) == 2
    assert all(0 <= pause <= 1.0 for pause in run.clock.slept)
    assert (queue.leads["L1"].pending, queue.leads["L1"].attempts) == (False, 0)
    assert run.counts.leads_pushed == 1


def test_a_lead_that_keeps_failing_is_deferred_to_a_later_run() -> None:
    queue = InMemoryLeadQueue(pending("L1"), pending("L2"))
    call = ScriptedCall(L1=[TRANSIENT] * RETRY.attempts)

    run = Run(queue, call)

    state = queue.leads["L1"]
    assert len(call.calls_for("L1")) == RETRY.attempts
    assert (state.pending, state.rejected, state.attempts) == (True, False, 1)
    # Deferred when its last try failed; nothing slept after that.
    assert state.next_attempt_at == run.clock.now() + retry_delay(0)
    assert state.last_error == TRANSIENT.error
    assert not queue.leads["L2"].pending
    assert (run.counts.leads_deferred, run.counts.leads_pushed) == (1, 1)


def test_a_deferred_lead_waits_until_its_next_attempt() -> None:
    queue = InMemoryLeadQueue(pending("L1"))
    run = Run(queue, ScriptedCall(L1=[TRANSIENT] * RETRY.attempts))
    due = queue.leads["L1"].next_attempt_at
    assert due is not None

    assert queue.pending_leads(run.clock.now(), None, 10) == []
    assert [s.lead_id for s in queue.pending_leads(due, None, 10)] == ["L1"]
    assert due - run.clock.now() == retry_delay(0)


def test_an_ambiguous_failure_that_persists_rejects_the_lead() -> None:
    queue = InMemoryLeadQueue(pending("L1"))
    call = ScriptedCall(L1=[AMBIGUOUS] * RETRY.attempts)

    run = Run(queue, call)

    state = queue.leads["L1"]
    assert state.rejected
    assert state.last_error == f"{AMBIGUOUS.error} (the same after {RETRY.attempts} tries)"
    assert run.counts.leads_rejected == 1


def test_a_rejected_lead_holds_back_only_itself() -> None:
    queue = InMemoryLeadQueue(pending("L1"), pending("L2"), pending("L3"))
    call = ScriptedCall(L2=[REJECTED])

    run = Run(queue, call, max_in_flight=3)

    assert queue.leads["L2"].rejected
    assert queue.leads["L2"].last_error == REJECTED.error
    assert not queue.leads["L1"].pending
    assert not queue.leads["L3"].pending
    assert (run.counts.leads_pushed, run.counts.leads_rejected) == (2, 1)
    assert run.end == PushEnd()


def test_a_rejection_of_values_that_changed_during_the_call_does_not_stick() -> None:
    queue = InMemoryLeadQueue(pending("L1"))

    def rejected_while_ingest_moved_on() -> Answer:
        queue.desire("L1", mx_City="Mumbai")
        return REJECTED

    Run(queue, ScriptedCall(L1=[rejected_while_ingest_moved_on]))

    state = queue.leads["L1"]
    assert (state.rejected, state.pending) == (False, True)


def test_unknown_attributes_are_set_aside_and_the_rest_is_sent() -> None:
    queue = InMemoryLeadQueue(pending("L1", mx_City="Pune", mx_Plan="pro"))
    unknown = Answer(
        AnswerKind.REJECTED,
        "Lead.Update: unknown mx_Plan",
        unknown_attributes=frozenset({"mx_Plan"}),
    )
    call = ScriptedCall(L1=[unknown])

    run = Run(queue, call)

    assert call.calls_for("L1") == [{"mx_City": "Pune", "mx_Plan": "pro"}, {"mx_City": "Pune"}]
    state = queue.leads["L1"]
    assert (state.pushed, state.set_aside) == ({"mx_City": "Pune"}, {"mx_Plan": "pro"})
    assert (state.pending, state.last_error) == (False, unknown.error)
    assert (run.counts.leads_pushed, run.counts.attributes_set_aside) == (1, 1)


def test_a_dead_host_costs_exactly_the_unreachable_limit_and_ends_the_run() -> None:
    leads = [pending(f"L{n}") for n in range(10)]
    queue = InMemoryLeadQueue(*leads)
    call = ScriptedCall(**{s.lead_id: [UNREACHABLE] * 10 for s in leads})

    with pytest.raises(FatalRunError, match=r"unreachable.*3 calls in a row"):
        Run(queue, call, max_in_flight=4)

    assert len(call.sent) == MAX_CONSECUTIVE_UNREACHABLE
    assert all(s.pending and s.attempts == 0 and s.last_error is None for s in queue.leads.values())


def test_a_fatal_first_answer_is_the_only_call_made() -> None:
    leads = [pending(f"L{n}") for n in range(6)]
    queue = InMemoryLeadQueue(*leads)
    call = ScriptedCall(L0=[FatalRunError("Lead.Update: invalid access key")])

    with pytest.raises(FatalRunError, match="invalid access key"):
        Run(queue, call, max_in_flight=4)

    assert len(call.sent) == 1
    assert all(s.pending for s in queue.leads.values())


def test_throttling_that_pacing_cannot_fix_stops_pushing_cleanly() -> None:
    queue = InMemoryLeadQueue(pending("L1"), pending("L2"))
    call = ScriptedCall(L1=[THROTTLED] * 20)

    run = Run(queue, call)

    assert len(call.sent) == MAX_CONSECUTIVE_THROTTLES
    assert run.end.interrupted
    assert run.end.stop_reason is not None
    assert "throttled 8 calls in a row" in run.end.stop_reason
    assert queue.leads["L1"].pending
    assert queue.leads["L2"].pending
    assert run.counts.leads_pushed == 0


def test_a_spent_budget_stops_pushing_with_its_reason() -> None:
    queue = InMemoryLeadQueue(pending("L1"), pending("L2"))
    budget = BudgetExhaustedError(10, datetime(2026, 1, 2))
    call = ScriptedCall(L1=[budget])

    run = Run(queue, call)

    assert run.end == PushEnd(True, str(budget))
    assert call.calls_for("L2") == []
    assert queue.leads["L1"].pending
    assert queue.leads["L2"].pending


def test_a_call_abandoned_at_a_stop_leaves_its_lead_pending_and_starts_no_other() -> None:
    stop = threading.Event()
    queue = InMemoryLeadQueue(pending("L1"), pending("L2"))

    def abandoned() -> Answer:
        stop.set()
        raise CallAbandonedError("Lead.Update: no answer within sync.drain_seconds")

    run = Run(queue, ScriptedCall(L1=[abandoned]), stop=stop)

    assert (queue.leads["L1"].pending, queue.leads["L1"].attempts) == (True, 0)
    assert queue.leads["L2"].pending
    assert run.end.interrupted
    assert run.counts.leads_abandoned == 1


def test_a_stop_during_a_backoff_records_nothing() -> None:
    stop = threading.Event()
    queue = InMemoryLeadQueue(pending("L1"))

    def failed_then_stopped() -> Answer:
        stop.set()
        return TRANSIENT

    Run(queue, ScriptedCall(L1=[failed_then_stopped]), stop=stop)

    state = queue.leads["L1"]
    assert (state.pending, state.attempts, state.last_error) == (True, 0, None)


def test_leads_whose_rows_moved_or_doubled_are_not_sent() -> None:
    queue = InMemoryLeadQueue(pending("L1"), pending("L2"), pending("L3"))
    queue.detached.add("L1")
    queue.shared.add("L2")
    call = ScriptedCall()

    run = Run(queue, call)

    assert call.sent == [{"L3": {"mx_City": "Pune"}}]
    assert (run.counts.leads_detached, run.counts.leads_held_shared) == (1, 1)


def test_leads_are_taken_in_pages_until_none_is_left() -> None:
    queue = InMemoryLeadQueue(*(pending(f"L{n:02}") for n in range(25)))
    call = ScriptedCall()

    run = Run(queue, call, max_in_flight=4, batch_size=7)

    assert sorted(lead for updates in call.sent for lead in updates) == sorted(queue.leads)
    assert run.counts.leads_pushed == 25


def test_a_call_carrying_several_leads_gets_one_answer_for_each() -> None:
    queue = InMemoryLeadQueue(*(pending(f"L{n}") for n in range(5)))
    call = ScriptedCall(leads_per_call=3, L1=[REJECTED], L3=[TRANSIENT])

    run = Run(queue, call)

    assert [sorted(updates) for updates in call.sent] == [
        ["L0", "L1", "L2"],
        ["L3", "L4"],
        ["L3"],
    ]
    assert queue.leads["L1"].rejected
    assert not any(queue.leads[f"L{n}"].pending for n in (0, 2, 3, 4))
    assert (run.counts.leads_pushed, run.counts.leads_rejected) == (4, 1)
