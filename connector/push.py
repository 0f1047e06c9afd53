"""Push: send every pending lead's plan to LeadSquared, several calls in flight, and carry out
what each answer leads to (decided in `connector.outcomes`).

The leads come from, and their outcomes go to, a `LeadQueue`: the connector's tables in
production, an in-memory fake in tests. The calls are made by a `connector.calls.LeadCall`,
which carries one lead per call today.

What is about the run rather than a lead is handled here:
- throttled answers in a row, across the run, stop it pushing: pacing alone cannot fix that;
- calls in a row that could not reach LeadSquared end the run: a dead host must not cost calls
  per lead;
- a fatal answer (keys, host) stops new calls; in-flight ones finish, and the error ends the run;
- the run's first call goes out alone, so a wrong key or host costs one call.

On a stop (SIGINT, SIGTERM) no further call starts; a call still unanswered `drain_seconds`
later is abandoned by the client, and its lead stays pending.

The order leads go out in is `connector.pushorder`'s. About every second the push calls
`take_in`, which ingests the changes committed since, so a change made during a long push joins
it; single changes go ahead of bursts and of the backlog, which keep every fourth call.
The push ends once the leads due when it began are done; single changes taken in while it
waits for its last calls go out with them.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from connector.calls import LeadCall
from connector.clock import Clock
from connector.config import RetryConfig
from connector.errors import (
    BudgetExhaustedError,
    CallAbandonedError,
    CallCancelledError,
    FatalRunError,
)
from connector.instrumentation import Instrumentation, LeadOutcome
from connector.leads import LeadState
from connector.outcomes import (
    Answer,
    AnswerKind,
    Attempt,
    Defer,
    Leave,
    Record,
    Reject,
    SendAgain,
    SetAside,
    Step,
    next_step,
    retry_delay,
)
from connector.ownership import Checked
from connector.preflight import AsSpelled, Shaped, Shaper
from connector.pushorder import PushOrder
from connector.values import Values, plan_update

log = logging.getLogger(__name__)

# Throttled answers in a row, across the run, after which it stops pushing and leaves the rest
# pending: something else is using the account's calls, and pacing alone cannot fix that.
MAX_CONSECUTIVE_THROTTLES = 8
# Calls in a row, across the run, that could not reach LeadSquared at all, after which the
# run stops: more would only spend calls and time on a host that is down or misconfigured.
MAX_CONSECUTIVE_UNREACHABLE = 3
# Answers that say LeadSquared may do better later; on these, a stopping run records nothing.
_TRY_LATER = {AnswerKind.TRANSIENT, AnswerKind.AMBIGUOUS, AnswerKind.UNREACHABLE}
# How often a push takes in the changes committed since it began: a fresh change waits about
# this long to join the queue, whatever the backlog ahead of it.
TAKE_IN_EVERY_SECONDS = 1.0
# Leads read ahead per call in flight: enough to keep every worker busy, few enough that what
# was read is still current when its call goes out.
_CALLS_READ_AHEAD = 2

T = TypeVar("T")


class LeadQueue(Protocol):
    """Where push takes pending leads from and records what became of them. Each method is
    one transaction of its own."""

    def pending_leads(
        self,
        now: datetime,
        after: LeadState | None,
        limit: int,
        *,
        before: LeadState | None = None,
        newer_than: datetime | None = None,
        until: datetime | None = None,
        newest_first: bool = False,
    ) -> list[LeadState]:
        """Up to `limit` leads due for a push, in the queue's order (the lead waiting
        longest first, `LeadState.waiting_since`, then by lead id; reversed with
        `newest_first`), strictly between `after` and `before`, waiting since after
        `newer_than` and at the latest `until`."""
        ...

    def owned(self, leads: Sequence[LeadState], now: datetime) -> Checked:
        """The leads exactly one row points to (connector.ownership); the others are held."""
        ...

    def record_pushed(
        self,
        lead_id: str,
        update: Values,
        attributes: frozenset[str],
        now: datetime,
        *,
        error: str | None = None,
    ) -> None: ...

    def record_failure(
        self,
        lead_id: str,
        desired: Values,
        error: str,
        now: datetime,
        *,
        rejected: bool,
        next_attempt_at: datetime | None = None,
    ) -> None: ...

    def set_aside(self, lead_id: str, refused: Values, error: str, now: datetime) -> None: ...


@dataclass(frozen=True)
class PushEnd:
    """How pushing ended: every lead had its turn, or it stopped early (and why, if clean)."""

    interrupted: bool = False
    stop_reason: str | None = None


# LeadSquared's answer to a value its field does not accept.
_INVALID_VALUE = "MXInvalidInputException"


def _doubts_the_fields(answer: Answer) -> bool:
    """Whether LeadSquared refused what the field list let through."""
    return bool(answer.unknown_attributes) or answer.exception_type == _INVALID_VALUE


class _Halt:
    """Why the run stops pushing: set once, seen by every worker before its next call."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None  # raised once the workers are done
        self.reason: str | None = None  # a clean stop, reported but not raised

    def is_set(self) -> bool:
        return self._event.is_set()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None and self.reason is None:
                self.error = error
        self._event.set()

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.error is None and self.reason is None:
                self.reason = reason
        self._event.set()


class _FirstCallAlone:
    """The run's first call goes out on its own, the others wait for its answer.

    If LeadSquared refuses the keys or the host, that one call is the only one made.
    """

    def __init__(self, halt: _Halt, stop: threading.Event) -> None:
        self._halt = halt
        self._stop = stop
        self._lock = threading.Lock()
        self._answered = False

    def call(self, make_call: Callable[[], dict[str, Answer]]) -> dict[str, Answer]:
        if not self._answered:
            with self._lock:
                # The wait for the lock lasts as long as the first call: look again.
                if self._halt.is_set() or self._stop.is_set():
                    raise CallCancelledError("the run is stopping")
                if not self._answered:
                    try:
                        answers = make_call()
                    except (CallAbandonedError, CallCancelledError, BudgetExhaustedError):
                        raise  # no answer, or no call: the next call still goes alone
                    except BaseException as exc:
                        # Halt before the lock is released, or a waiting worker would call.
                        self._halt.fail(exc)
                        raise
                    # Any answer at all says the keys and the host work.
                    if any(a.kind is not AnswerKind.UNREACHABLE for a in answers.values()):
                        self._answered = True
                    return answers
        return make_call()


class Pusher:
    """Gives every lead due when the push begins one push, up to `max_in_flight` calls at a
    time, and as many as it can of those that `take_in` makes due meanwhile.

    A FatalRunError, or any unexpected error, stops new calls and is raised once the calls in
        flight are done.
    """

    def __init__(
        self,
        *,
        queue: LeadQueue,
        call: LeadCall,
        attributes: frozenset[str],
        clock: Clock,
        stop: threading.Event,
        retry: RetryConfig,
        max_in_flight: int,
        events: Instrumentation,
        rng: random.Random | None = None,
        shaper: Shaper | None = None,
        kept_when_empty: frozenset[str] = frozenset(),
        burst_leads: int | None = None,
    ) -> None:
        """`shaper` shapes each update for its fields' types and holds back what LeadSquared
        would refuse (connector.preflight); `kept_when_empty` are the attributes an empty
        value never clears; a take-in of more than `burst_leads` leads (what one rate window's
        calls carry) is a burst, which single changes go ahead of (connector.pushorder)."""
        self.queue = queue
        self.call = call
        self.attributes = attributes
        self.clock = clock
        self.stop = stop
        self.retry = retry
        self.max_in_flight = max_in_flight
        self.events = events
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self.shaper: Shaper = shaper or AsSpelled()
        self.kept_when_empty = kept_when_empty
        self.burst_leads = burst_leads
        self._throttles_in_a_row = 0
        self._unreachable_in_a_row = 0
        self._counts_lock = threading.Lock()

    def push_pending(self, batch_size: int, take_in: Callable[[], object] | None = None) -> PushEnd:
        """Push the leads due now (the backlog), reading at most `batch_size` leads at a time,
        in `connector.pushorder`'s order; about every TAKE_IN_EVERY_SECONDS, call `take_in`
        (which makes new changes due), whose leads then go out alongside the backlog.

        Reports leads and calls through `events` as it goes, so a caller has them even if
        this raises; an error from `take_in` ends the push as a fatal answer does."""
        halt = _Halt()
        first_call = _FirstCallAlone(halt, self.stop)
        size = self.call.leads_per_call
        order = PushOrder(
            self._pending_leads,
            self._owned,
            began=self.clock.now(),
            leads_per_call=size,
            page=min(batch_size, max(size, _CALLS_READ_AHEAD * self.max_in_flight * size)),
            both_ends=take_in is not None,
            burst_leads=self.burst_leads,
        )
        took_in = self.clock.monotonic()
        in_flight: set[Future[None]] = set()
        # The calls still in flight when the backlog was all handed out: the push waits for
        # them anyway, and single changes taken in meanwhile go out alongside.
        last_calls: set[Future[None]] | None = None
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="lsq-push") as pool:
            while not halt.is_set() and not self.stop.is_set():
                if take_in is not None and (
                    self.clock.monotonic() - took_in >= TAKE_IN_EVERY_SECONDS
                ):
                    took_in = self.clock.monotonic()
                    order.took_in(self.clock.now())
                    if not self._take_in(take_in, halt):
                        break
                while len(in_flight) < self.max_in_flight:
                    if order.done:
                        if last_calls is None:
                            last_calls = set(in_flight)
                        if not last_calls & in_flight:
                            break  # never longer than the backlog's own calls
                    group = order.next_group()
                    if group is None:
                        break
                    in_flight.add(pool.submit(self._push_guarded, group, halt, first_call))
                if not in_flight:
                    break
                done, in_flight = wait(
                    in_flight, timeout=TAKE_IN_EVERY_SECONDS, return_when=FIRST_COMPLETED
                )
                for future in done:
                    future.result()
        if halt.error is not None:
            raise halt.error
        return PushEnd(self.stop.is_set() or halt.is_set(), halt.reason)

    def _pending_leads(self, after: LeadState | None, limit: int, **bounds: Any) -> list[LeadState]:
        return self.queue.pending_leads(self.clock.now(), after, limit, **bounds)

    @staticmethod
    def _take_in(take_in: Callable[[], object], halt: _Halt) -> bool:
        try:
            take_in()
        except BaseException as exc:  # noqa: BLE001 (re-raised by push_pending after the drain)
            halt.fail(exc)
            return False
        return True

    def _owned(self, leads: list[LeadState]) -> list[LeadState]:
        checked = self.queue.owned(leads, self.clock.now())
        for lead_id in checked.shared:
            self.events.lead_finished(lead_id, LeadOutcome.SHARED)
        for lead_id in checked.detached:
            self.events.lead_finished(lead_id, LeadOutcome.DETACHED)
        return checked.to_push

    def _push_guarded(
        self, group: list[LeadState], halt: _Halt, first_call: _FirstCallAlone
    ) -> None:
        if halt.is_set() or self.stop.is_set():
            return
        try:
            self._push_group(group, halt, first_call)
        except CallCancelledError:
            pass  # nothing was sent; the leads stay pending as they were
        except CallAbandonedError as exc:
            # It may have landed; the leads stay pending, and updates set absolute values.
            for state in group:
                self.events.lead_finished(state.lead_id, LeadOutcome.ABANDONED)
                log.warning(
                    "call abandoned at stop", extra={"lead_id": state.lead_id, "error": str(exc)}
                )
        except BudgetExhaustedError as exc:
            halt.stop(str(exc))
        except BaseException as exc:  # noqa: BLE001 (re-raised by push_pending after the drain)
            halt.fail(exc)

    def _push_group(self, group: list[LeadState], halt: _Halt, first_call: _FirstCallAlone) -> None:
        states = {state.lead_id: state for state in group}
        attempts: dict[str, Attempt] = {}
        wires: dict[str, Values] = {}
        for state in group:
            planned = self._planned(state)
            if planned is None:
                continue
            attempts[state.lead_id], wires[state.lead_id] = planned
        started = self.clock.monotonic()
        while attempts and not halt.is_set() and not self.stop.is_set():
            updates = {
                lead_id: {name: wires[lead_id][name] for name in attempt.update}
                for lead_id, attempt in attempts.items()
            }
            answers = first_call.call(functools.partial(self._send, updates, halt))
            elapsed = self.clock.monotonic() - started
            again: dict[str, Attempt] = {}
            errors: dict[str, str] = {}
            pause = 0.0
            for lead_id, attempt in attempts.items():
                answer = answers[lead_id]
                if halt.is_set() and answer.kind in _TRY_LATER:
                    continue  # the run is stopping (this may be why): no pause, no record
                jitter = self.rng.random() if answer.kind in _TRY_LATER else 0.0
                step = next_step(answer, attempt, elapsed=elapsed, retry=self.retry, jitter=jitter)
                resend = self._carry_out(states[lead_id], step)
                if resend is not None:
                    again[lead_id] = resend.attempt
                    errors[lead_id] = answer.error
                    pause = max(pause, resend.pause)
            attempts = again
            if attempts:
                self.events.retrying(sorted(attempts), pause)
            if attempts and pause > 0:
                log.info("transient failure; retrying", extra={"errors": errors, "pause": pause})
                if not self.clock.sleep(pause):
                    return

    def _planned(self, state: LeadState) -> tuple[Attempt, Values] | None:
        """What to send the lead, as the source spells it and as it goes on the wire; None
        when there is nothing to send, which is then recorded."""
        update = plan_update(
            state.desired,
            state.pushed,
            self.attributes,
            state.set_aside,
            kept_when_empty=self.kept_when_empty,
        )
        shaped = self.shaper.shape(state, update) if update else Shaped({})
        held_error = None
        if shaped.held:
            held = {name: update[name] for name in sorted(shaped.held)}
            held_error = "; ".join(shaped.held[name] for name in held)
            for name, value in held.items():  # each with its own reason
                self.queue.set_aside(
                    state.lead_id, {name: value}, shaped.held[name], self.clock.now()
                )
            self.events.attributes_set_aside(state.lead_id, sorted(held))
            log.warning(
                "attributes held back by pre-flight",
                extra={"lead_id": state.lead_id, "reasons": held_error},
            )
            update = {name: value for name, value in update.items() if name not in held}
        if not update:
            # Nothing differs any more (say the mapping shrank), or nothing may be sent.
            self.queue.record_pushed(
                state.lead_id, {}, self.attributes, self.clock.now(), error=held_error
            )
            return None
        return Attempt(update, aside_error=held_error), shaped.wire

    def _send(self, updates: Mapping[str, Values], halt: _Halt) -> dict[str, Answer]:
        answers = self.call.send(updates)
        if any(_doubts_the_fields(answer) for answer in answers.values()):
            self.shaper.doubted()
        # Counted here, while the first call still goes alone, so that a dead host costs
        # exactly MAX_CONSECUTIVE_UNREACHABLE calls.
        kinds = {answer.kind for answer in answers.values()}
        if AnswerKind.UNREACHABLE in kinds:
            unreachable = (a for a in answers.values() if a.kind is AnswerKind.UNREACHABLE)
            self._unreachable(next(unreachable), halt)
        elif AnswerKind.THROTTLED in kinds:
            self._throttled(sorted(updates), halt)
        else:
            with self._counts_lock:
                self._throttles_in_a_row = 0
                self._unreachable_in_a_row = 0
        return answers

    def _carry_out(self, state: LeadState, step: Step) -> SendAgain | None:
        """Record what `step` says; the attempt to send again, if any."""
        now = self.clock.now()
        lead_id = state.lead_id
        match step:
            case SendAgain():
                return step
            case Record(sent=sent, error=error):
                self.queue.record_pushed(lead_id, sent, self.attributes, now, error=error)
                if sent:
                    self.events.lead_finished(lead_id, LeadOutcome.PUSHED, sorted(sent))
            case SetAside(refused=refused, error=error, next=then):
                self.queue.set_aside(lead_id, refused, error, now)
                self.events.attributes_set_aside(lead_id, sorted(refused))
                log.warning(
                    "attributes set aside: LeadSquared does not know them",
                    extra={"lead_id": lead_id, "attributes": sorted(refused)},
                )
                return self._carry_out(state, then)
            case Reject(error=error):
                self.queue.record_failure(lead_id, state.desired, error, now, rejected=True)
                self.events.lead_finished(lead_id, LeadOutcome.REJECTED)
                log.warning("lead rejected", extra={"lead_id": lead_id, "error": error})
            case Defer(error=error, failures=failures):
                self.queue.record_failure(
                    lead_id,
                    state.desired,
                    error,
                    now,
                    rejected=False,
                    next_attempt_at=now + retry_delay(state.attempts),
                )
                self.events.lead_finished(lead_id, LeadOutcome.DEFERRED)
                log.warning(
                    "lead deferred to a later run",
                    extra={"lead_id": lead_id, "error": error, "tries": failures},
                )
            case Leave():
                pass  # not the lead's fault: it stays pending, with no attempt counted
        return None

    def _unreachable(self, answer: Answer, halt: _Halt) -> None:
        with self._counts_lock:
            self._unreachable_in_a_row += 1
            in_a_row = self._unreachable_in_a_row
        # INFO: the run's error names the host and cause, if it comes to that.
        log.info("LeadSquared unreachable", extra={"error": answer.error, "in_a_row": in_a_row})
        if in_a_row >= MAX_CONSECUTIVE_UNREACHABLE:
            halt.fail(
                FatalRunError(
                    f"LeadSquared unreachable: {answer.error} ({in_a_row} calls in a row); "
                    "every lead stays pending for the next run"
                )
            )

    def _throttled(self, lead_ids: list[str], halt: _Halt) -> None:
        with self._counts_lock:
            self._unreachable_in_a_row = 0  # throttled is an answer: the host is there
            self._throttles_in_a_row += 1
            in_a_row = self._throttles_in_a_row
        log.warning("throttled by LeadSquared", extra={"lead_ids": lead_ids})
        if in_a_row >= MAX_CONSECUTIVE_THROTTLES:
            halt.stop(
                f"LeadSquared throttled {in_a_row} calls in a row although they were paced: "
                "another program may be using this account's calls (lower "
                "leadsquared.rate_limit.calls); the remaining leads wait for the next run"
            )
