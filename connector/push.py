"""Push: send each pending lead's plan through Lead.Update, paced, and record the outcome."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from connector.client import LeadSquaredClient
from connector.clock import Clock
from connector.errors import LeadRejectedError, RetriableError, ThrottledError
from connector.leads import LeadState
from connector.ratelimit import SlidingWindow
from connector.store import Store
from connector.values import plan_update

log = logging.getLogger(__name__)

# Throttled answers in a row after which the run stops pushing and leaves the rest pending:
# the account is busier than configured, and the next run starts with a fresh window.
MAX_CONSECUTIVE_THROTTLES = 8
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)


class Pacer:
    """Makes every call wait its turn in the sliding window."""

    def __init__(self, window: SlidingWindow, clock: Clock) -> None:
        self.window = window
        self.clock = clock

    def wait_turn(self) -> bool:
        """Returns False when stopping cut the wait short."""
        delay = self.window.delay(self.clock.monotonic())
        return delay <= 0 or self.clock.sleep(delay)

    def completed(self) -> None:
        self.window.record(self.clock.monotonic())

    def throttled(self, retry_after: float | None) -> None:
        pause = retry_after if retry_after is not None else self.window.window
        self.window.back_off(self.clock.monotonic() + pause)


@dataclass
class PushResult:
    pushed: int = 0
    rejected: int = 0
    deferred: int = 0
    calls: int = 0
    throttled: int = 0
    interrupted: bool = False


def retry_delay(attempts: int) -> timedelta:
    return min(RETRY_CAP, RETRY_BASE * (1 << min(attempts, 10)))


def push_pending(
    store: Store,
    client: LeadSquaredClient,
    pacer: Pacer,
    attributes: frozenset[str],
    clock: Clock,
    batch_size: int,
    stop: threading.Event,
) -> PushResult:
    """Give every pending lead one push this run; FatalRunError propagates untouched."""
    result = PushResult()
    after: str | None = None
    while not stop.is_set():
        with store.engine.connect() as connection:
            leads = store.pending_leads(connection, clock.now(), after, batch_size)
        if not leads:
            break
        for state in leads:
            if stop.is_set() or not _push_one(
                store, client, pacer, attributes, clock, state, result, stop
            ):
                result.interrupted = True
                return result
            after = state.lead_id
    result.interrupted = stop.is_set()
    return result


def _push_one(
    store: Store,
    client: LeadSquaredClient,
    pacer: Pacer,
    attributes: frozenset[str],
    clock: Clock,
    state: LeadState,
    result: PushResult,
    stop: threading.Event,
) -> bool:
    """One lead's push, retrying only throttled calls. Returns False when the run must stop."""
    update = plan_update(state.desired, state.pushed, attributes)
    if not update:
        # Nothing differs any more (say the mapping shrank): clear the flag without a call.
        store.record_pushed(state.lead_id, {}, attributes, clock.now())
        return True
    throttles = 0
    while True:
        if not pacer.wait_turn():
            return False
        result.calls += 1
        try:
            client.update_lead(state.lead_id, update)
        except ThrottledError as exc:
            pacer.completed()
            pacer.throttled(exc.delay)
            result.throttled += 1
            throttles += 1
            log.warning("throttled by LeadSquared", extra={"lead_id": state.lead_id})
            if throttles >= MAX_CONSECUTIVE_THROTTLES or stop.is_set():
                return False
            continue
        except RetriableError as exc:
            pacer.completed()
            now = clock.now()
            store.record_failure(
                state.lead_id,
                state.desired,
                str(exc),
                now,
                rejected=False,
                next_attempt_at=now + retry_delay(state.attempts),
            )
            result.deferred += 1
            log.warning("lead deferred", extra={"lead_id": state.lead_id, "error": str(exc)})
            return True
        except LeadRejectedError as exc:
            pacer.completed()
            store.record_failure(state.lead_id, state.desired, str(exc), clock.now(), rejected=True)
            result.rejected += 1
            log.warning("lead rejected", extra={"lead_id": state.lead_id, "error": str(exc)})
            return True
        except BaseException:
            pacer.completed()
            raise
        pacer.completed()
        store.record_pushed(state.lead_id, update, attributes, clock.now())
        result.pushed += 1
        log.info("lead pushed", extra={"lead_id": state.lead_id, "attributes": sorted(update)})
        return True
