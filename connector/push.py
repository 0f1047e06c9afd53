"""Push: send each pending lead's plan through Lead.Update, several calls in flight, and record
the outcome.

What each kind of answer leads to (classified once, in connector.responses):

- success: the attributes sent are recorded as pushed;
- throttled: the whole account waits (the client told the limiter); the call is retried and
  does not count as a failed attempt;
- transient: retried with exponential backoff and full jitter, bounded in attempts and in
  time; after that the lead gets a `next_attempt_at` and a later run tries again;
- ambiguous (a bare MXException): retried the same way; after that the lead is parked as
  rejected, since it may well be the lead's data;
- unreachable (refused, DNS, TLS): not the lead's fault, so nothing is recorded against it;
  a few in a row, across the run, end the run: a dead host must not cost calls per lead;
- rejected: the lead is set aside with the error until its values change or a user asks for a
  retry; unknown attributes alone are set aside, and the rest is pushed;
- fatal: no further call starts, in-flight ones finish, and the error ends the run.

On a stop (SIGINT, SIGTERM) no further call starts; a call still unanswered `drain_seconds`
later is abandoned by the client, and its lead stays pending.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from connector.client import LeadSquaredClient
from connector.clock import Clock
from connector.config import RetryConfig
from connector.errors import (
    AmbiguousError,
    BudgetExhaustedError,
    CallAbandonedError,
    CallCancelledError,
    FatalRunError,
    LeadRejectedError,
    RetriableError,
    RunLockLostError,
    ThrottledError,
    UnreachableError,
)
from connector.leads import LeadState
from connector.ownership import check_owners
from connector.source import SourceTable
from connector.store import Store
from connector.values import Values, plan_update

log = logging.getLogger(__name__)

# Throttled answers in a row, across the run, after which it stops pushing and leaves the rest
# pending: something else is using the account's calls, and pacing alone cannot fix that.
MAX_CONSECUTIVE_THROTTLES = 8
# Calls in a row, across the run, that could not reach LeadSquared at all, after which the
# run stops: more would only spend calls and time on a host that is down or misconfigured.
MAX_CONSECUTIVE_UNREACHABLE = 3
# Backoff between transient failures within a run: full jitter up to base x 2^n, capped.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
# Between runs: how long a lead that ran out of retries waits before a run tries it again.
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)

T = TypeVar("T")


@dataclass
class PushResult:
    """Counts, updated by every worker as it goes, so they survive a run that stops half-way."""

    pushed: int = 0
    rejected: int = 0
    deferred: int = 0
    set_aside: int = 0
    shared: int = 0  # held back: several rows have the lead's id
    detached: int = 0  # no row has the lead's id any more
    calls: int = 0
    throttled: int = 0
    abandoned: int = 0
    interrupted: bool = False
    stop_reason: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)


def retry_delay(attempts: int) -> timedelta:
    return min(RETRY_CAP, RETRY_BASE * (1 << min(attempts, 10)))


def backoff_seconds(failures: int, rng: random.Random) -> float:
    """Full jitter: spreads the retries of many leads instead of bunching them."""
    return rng.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1)))


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

    def call(self, make_call: Callable[[], T]) -> T:
        if not self._answered:
            with self._lock:
                # The wait for the lock lasts as long as the first call: look again.
                if self._halt.is_set() or self._stop.is_set():
                    raise CallCancelledError("the run is stopping")
                if not self._answered:
                    try:
                        result = make_call()
                    except (UnreachableError, CallAbandonedError):
                        raise  # no answer: the next call still goes alone
                    except (RetriableError, LeadRejectedError):
                        self._answered = True  # LeadSquared answered: the keys work
                        raise
                    except (CallCancelledError, BudgetExhaustedError):
                        raise  # no call was made; the next worker may try
                    except BaseException as exc:
                        # Halt before the lock is released, or a waiting worker would call.
                        self._halt.fail(exc)
                        raise
                    self._answered = True
                    return result
        return make_call()


class Pusher:
    """Gives every pending lead one push per run, up to `max_in_flight` at a time.

    A FatalRunError, or any unexpected error, stops new calls and is raised once the calls in
    flight are done.
    """

    def __init__(
        self,
        *,
        store: Store,
        source: SourceTable,
        client: LeadSquaredClient,
        attributes: frozenset[str],
        clock: Clock,
        stop: threading.Event,
        retry: RetryConfig,
        max_in_flight: int,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.client = client
        self.attributes = attributes
        self.clock = clock
        self.stop = stop
        self.retry = retry
        self.max_in_flight = max_in_flight
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self._throttles_in_a_row = 0
        self._unreachable_in_a_row = 0
        self._counts_lock = threading.Lock()

    def push_pending(self, batch_size: int, result: PushResult) -> PushResult:
        """Counts into `result` as it goes, so a caller still has them if this raises."""
        halt = _Halt()
        first_call = _FirstCallAlone(halt, self.stop)
        after: str | None = None
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="lsq-push") as pool:
            while not halt.is_set() and not self.stop.is_set():
                with self.store.engine.connect() as connection:
                    leads = self.store.pending_leads(
                        connection, self.clock.now(), after, batch_size
                    )
                if not leads:
                    break
                after = leads[-1].lead_id
                leads = self._owned(leads, result)
                futures = [
                    pool.submit(self._push_guarded, state, result, halt, first_call)
                    for state in leads
                ]
                for future in futures:
                    future.result()
        result.interrupted = self.stop.is_set() or halt.is_set()
        result.stop_reason = halt.reason
        if halt.error is not None:
            raise halt.error
        return result

    def _owned(self, leads: list[LeadState], result: PushResult) -> list[LeadState]:
        """The leads exactly one row points to (connector.ownership); the rest are held."""
        with self.store.engine.begin() as connection:
            # It may hold, share or rewrite leads: run state, fenced like every other write.
            self.store.fence.check(connection)
            checked = check_owners(connection, self.store, self.source, leads, self.clock.now())
        result.add(shared=checked.shared, detached=checked.detached)
        return checked.to_push

    def _push_guarded(
        self, state: LeadState, result: PushResult, halt: _Halt, first_call: _FirstCallAlone
    ) -> None:
        if halt.is_set() or self.stop.is_set():
            return
        try:
            self._push_one(state, result, halt, first_call)
        except CallCancelledError:
            pass  # nothing was sent; the lead stays pending as it was
        except CallAbandonedError as exc:
            # It may have landed; the lead stays pending, and Lead.Update sets absolute values.
            result.add(abandoned=1)
            log.warning(
                "call abandoned at stop", extra={"lead_id": state.lead_id, "error": str(exc)}
            )
        except BudgetExhaustedError as exc:
            halt.stop(str(exc))
        except BaseException as exc:  # noqa: BLE001 (re-raised by push_pending after the drain)
            halt.fail(exc)

    def _push_one(
        self, state: LeadState, result: PushResult, halt: _Halt, first_call: _FirstCallAlone
    ) -> None:
        update = plan_update(state.desired, state.pushed, self.attributes, state.set_aside)
        if not update:
            # Nothing differs any more (say the mapping shrank): clear the flag without a call.
            self.store.record_pushed(state.lead_id, {}, self.attributes, self.clock.now())
            return
        failures = 0
        started = self.clock.monotonic()
        # Why attributes were set aside in this push: kept on the lead after the rest succeeds.
        aside_error: str | None = None
        while not halt.is_set() and not self.stop.is_set():
            try:
                first_call.call(functools.partial(self._call, state.lead_id, update, result, halt))
            except ThrottledError:
                self._throttled(state.lead_id, result, halt)
                continue
            except RetriableError as exc:
                if halt.is_set():
                    return  # the run is stopping (this failure may be why): no pause, no record
                failures += 1
                pause = max(exc.delay or 0.0, backoff_seconds(failures, self.rng))
                spent = self.clock.monotonic() - started
                if failures < self.retry.attempts and spent + pause <= self.retry.max_seconds:
                    log.info(
                        "transient failure; retrying",
                        extra={"lead_id": state.lead_id, "error": str(exc), "pause": pause},
                    )
                    if not self.clock.sleep(pause):
                        return
                    continue
                self._retries_spent(state, exc, failures, result)
                return
            except LeadRejectedError as exc:
                remaining = self._set_aside_unknown(state, update, exc)
                if remaining is None:
                    self._reject(state, str(exc))
                    result.add(rejected=1)
                    return
                result.add(set_aside=len(update) - len(remaining))
                update = remaining
                aside_error = str(exc)
                if not update:
                    self.store.record_pushed(
                        state.lead_id, {}, self.attributes, self.clock.now(), error=aside_error
                    )
                    return
                continue
            self.store.record_pushed(
                state.lead_id, update, self.attributes, self.clock.now(), error=aside_error
            )
            result.add(pushed=1)
            log.info("lead pushed", extra={"lead_id": state.lead_id, "attributes": sorted(update)})
            return

    def _call(self, lead_id: str, update: Values, result: PushResult, halt: _Halt) -> None:
        try:
            self.client.update_lead(lead_id, update)
        except (CallCancelledError, BudgetExhaustedError, RunLockLostError):
            raise  # no call was made
        except (CallAbandonedError, ThrottledError):
            result.add(calls=1)
            raise
        except UnreachableError as exc:
            result.add(calls=1)
            # Counted here, while the first call still goes alone, so that a dead host
            # costs exactly MAX_CONSECUTIVE_UNREACHABLE calls.
            self._unreachable(exc, halt)
            raise
        except BaseException:
            self._answered_unthrottled()
            result.add(calls=1)
            raise
        self._answered_unthrottled()
        result.add(calls=1)

    def _answered_unthrottled(self) -> None:
        with self._counts_lock:
            self._throttles_in_a_row = 0
            self._unreachable_in_a_row = 0

    def _unreachable(self, exc: UnreachableError, halt: _Halt) -> None:
        with self._counts_lock:
            self._unreachable_in_a_row += 1
            in_a_row = self._unreachable_in_a_row
        # INFO: the run's error names the host and cause, if it comes to that.
        log.info("LeadSquared unreachable", extra={"error": str(exc), "in_a_row": in_a_row})
        if in_a_row >= MAX_CONSECUTIVE_UNREACHABLE:
            halt.fail(
                FatalRunError(
                    f"LeadSquared unreachable: {exc} ({in_a_row} calls in a row); every lead "
                    "stays pending for the next run"
                )
            )

    def _throttled(self, lead_id: str, result: PushResult, halt: _Halt) -> None:
        result.add(throttled=1)
        with self._counts_lock:
            self._unreachable_in_a_row = 0  # throttled is an answer: the host is there
            self._throttles_in_a_row += 1
            in_a_row = self._throttles_in_a_row
        log.warning("throttled by LeadSquared", extra={"lead_id": lead_id})
        if in_a_row >= MAX_CONSECUTIVE_THROTTLES:
            halt.stop(
                f"LeadSquared throttled {in_a_row} calls in a row although they were paced: "
                "another program may be using this account's calls (lower "
                "leadsquared.rate_limit.calls); the remaining leads wait for the next run"
            )

    def _set_aside_unknown(
        self, state: LeadState, update: Values, exc: LeadRejectedError
    ) -> Values | None:
        """The update without the attributes LeadSquared named as unknown; None if it named
        none of them (then the whole lead is rejected)."""
        unknown = {a for a in exc.unknown_attributes if a in update}
        if not unknown:
            return None
        refused = {a: update[a] for a in sorted(unknown)}
        self.store.set_aside(state.lead_id, refused, str(exc), self.clock.now())
        log.warning(
            "attributes set aside: LeadSquared does not know them",
            extra={"lead_id": state.lead_id, "attributes": sorted(unknown)},
        )
        return {a: v for a, v in update.items() if a not in unknown}

    def _retries_spent(
        self, state: LeadState, exc: RetriableError, failures: int, result: PushResult
    ) -> None:
        """The lead's tries for this run are used up: what is left depends on the failure."""
        if isinstance(exc, UnreachableError):
            return  # not the lead's fault: it stays pending as it was, with no attempt counted
        if isinstance(exc, AmbiguousError):
            self._reject(state, f"{exc} (the same after {failures} tries)")
            result.add(rejected=1)
            return
        self._defer(state, exc, failures)
        result.add(deferred=1)

    def _reject(self, state: LeadState, error: str) -> None:
        self.store.record_failure(
            state.lead_id, state.desired, error, self.clock.now(), rejected=True
        )
        log.warning("lead rejected", extra={"lead_id": state.lead_id, "error": error})

    def _defer(self, state: LeadState, exc: RetriableError, failures: int) -> None:
        now = self.clock.now()
        self.store.record_failure(
            state.lead_id,
            state.desired,
            str(exc),
            now,
            rejected=False,
            next_attempt_at=now + retry_delay(state.attempts),
        )
        log.warning(
            "lead deferred to a later run",
            extra={"lead_id": state.lead_id, "error": str(exc), "tries": failures},
        )
