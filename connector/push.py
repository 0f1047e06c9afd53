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


class Pusher:
    """Gives every pending lead one push per run; FatalRunError propagates untouched."""

    def __init__(
        self,
        *,
        store: Store,
        client: LeadSquaredClient,
        pacer: Pacer,
        attributes: frozenset[str],
        clock: Clock,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.client = client
        self.pacer = pacer
        self.attributes = attributes
        self.clock = clock
        self.stop = stop

    def push_pending(self, batch_size: int, result: PushResult) -> PushResult:
        """Counts into `result` as it goes, so a caller still has them if this raises."""
        after: str | None = None
        while not self.stop.is_set():
            with self.store.engine.connect() as connection:
                leads = self.store.pending_leads(connection, self.clock.now(), after, batch_size)
            if not leads:
                break
            for state in leads:
                if self.stop.is_set() or not self._push_one(state, result):
                    result.interrupted = True
                    return result
                after = state.lead_id
        result.interrupted = self.stop.is_set()
        return result

    def _push_one(self, state: LeadState, result: PushResult) -> bool:
        """One lead's push, retrying only throttled calls. Returns False when the run must stop."""
        update = plan_update(state.desired, state.pushed, self.attributes)
        if not update:
            # Nothing differs any more (say the mapping shrank): clear the flag without a call.
            self.store.record_pushed(state.lead_id, {}, self.attributes, self.clock.now())
            return True
        throttles = 0
        while True:
            if not self.pacer.wait_turn():
                return False
            result.calls += 1
            try:
                self.client.update_lead(state.lead_id, update)
            except ThrottledError as exc:
                self.pacer.completed()
                self.pacer.throttled(exc.delay)
                result.throttled += 1
                throttles += 1
                log.warning("throttled by LeadSquared", extra={"lead_id": state.lead_id})
                if throttles >= MAX_CONSECUTIVE_THROTTLES or self.stop.is_set():
                    return False
                continue
            except RetriableError as exc:
                self.pacer.completed()
                self._record_failure(state, exc, rejected=False)
                result.deferred += 1
                return True
            except LeadRejectedError as exc:
                self.pacer.completed()
                self._record_failure(state, exc, rejected=True)
                result.rejected += 1
                return True
            except BaseException:
                self.pacer.completed()
                raise
            self.pacer.completed()
            self.store.record_pushed(state.lead_id, update, self.attributes, self.clock.now())
            result.pushed += 1
            log.info("lead pushed", extra={"lead_id": state.lead_id, "attributes": sorted(update)})
            return True

    def _record_failure(self, state: LeadState, exc: Exception, *, rejected: bool) -> None:
        now = self.clock.now()
        self.store.record_failure(
            state.lead_id,
            state.desired,
            str(exc),
            now,
            rejected=rejected,
            next_attempt_at=None if rejected else now + retry_delay(state.attempts),
        )
        log.warning(
            "lead rejected" if rejected else "lead deferred",
            extra={"lead_id": state.lead_id, "error": str(exc)},
        )
