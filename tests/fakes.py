"""In-memory stand-ins for push's ports, for unit tests of `connector.push.Pusher`: the lead
queue (the connector's tables), the kind of call (LeadSquared) and the clock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from connector.errors import LsqSyncError
from connector.leads import LeadState, after_failure, after_push, reasons_kept
from connector.outcomes import SUCCESS, Answer
from connector.ownership import Checked
from connector.values import Values


class FakeClock:
    """Time moves only when slept through; `sleep` returns False once `stop` is set."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.start = datetime(2026, 1, 1, tzinfo=UTC)
        self.seconds = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    def monotonic(self) -> float:
        return self.seconds

    def sleep(self, seconds: float) -> bool:
        with self._lock:
            self.slept.append(seconds)
            self.seconds += seconds
        return not self.stop.is_set()


def _place(state: LeadState) -> tuple[datetime, str]:
    """A lead's place in the queue: the one waiting longest first, then by lead id."""
    return (state.waiting_since or datetime.min.replace(tzinfo=UTC), state.lead_id)


class InMemoryLeadQueue:
    """The lead table as push sees it, with the same rules as the real one."""

    def __init__(self, *states: LeadState, kept_when_empty: frozenset[str] = frozenset()) -> None:
        self.leads = {state.lead_id: state for state in states}
        self.kept_when_empty = kept_when_empty
        # Lead ids whose rows no longer point to them, or point to them twice.
        self.detached: set[str] = set()
        self.shared: set[str] = set()
        self._lock = threading.Lock()

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
        with self._lock:
            due = [
                state
                for state in sorted(self.leads.values(), key=_place, reverse=newest_first)
                if state.pending
                and not state.rejected
                and (state.next_attempt_at is None or state.next_attempt_at <= now)
                and (after is None or _place(state) > _place(after))
                and (before is None or _place(state) < _place(before))
                and (newer_than is None or _place(state)[0] > newer_than)
                and (until is None or _place(state)[0] <= until)
            ]
        return due[:limit]

    def owned(self, leads: Sequence[LeadState], now: datetime) -> Checked:
        checked = Checked()
        for state in leads:
            if state.lead_id in self.detached:
                checked.detached.append(state.lead_id)
                self._change(state.lead_id, pending=False, hold="detached")
            elif state.lead_id in self.shared:
                checked.shared.append(state.lead_id)
            else:
                checked.to_push.append(state)
        return checked

    def record_pushed(
        self,
        lead_id: str,
        update: Values,
        attributes: frozenset[str],
        now: datetime,
        *,
        error: str | None = None,
    ) -> None:
        state = self.leads[lead_id]
        pushed, aside, pending = after_push(
            state.desired,
            state.pushed,
            update,
            attributes,
            state.set_aside,
            kept_when_empty=self.kept_when_empty,
        )
        self._change(
            lead_id,
            pushed=pushed,
            set_aside=aside,
            pending=pending,
            waiting_since=now if pending else state.waiting_since,
            attempts=0,
            last_error=error if aside else None,
            aside_reasons=reasons_kept(state.aside_reasons, aside),
            next_attempt_at=None,
            pushed_at=now,
        )

    def record_failure(
        self,
        lead_id: str,
        desired: Values,
        error: str,
        now: datetime,
        *,
        rejected: bool,
        next_attempt_at: datetime | None = None,
    ) -> None:
        state = self.leads[lead_id]
        attempts, still_rejected, retry_at = after_failure(
            state.desired,
            desired,
            state.attempts,
            rejected=rejected,
            next_attempt_at=next_attempt_at,
        )
        self._change(
            lead_id,
            attempts=attempts,
            last_error=error,
            rejected=still_rejected,
            next_attempt_at=retry_at,
        )

    def set_aside(self, lead_id: str, refused: Values, error: str, now: datetime) -> None:
        state = self.leads[lead_id]
        self._change(
            lead_id,
            set_aside={**state.set_aside, **refused},
            last_error=error,
            aside_reasons={**state.aside_reasons, **dict.fromkeys(refused, error)},
        )

    def desire(self, lead_id: str, **desired: str | None) -> None:
        """Ingest writes new desired values for the lead (say, while its call is in flight)."""
        state = self.leads[lead_id]
        self._change(lead_id, desired={**state.desired, **desired}, pending=True)

    def _change(self, lead_id: str, **fields: object) -> None:
        with self._lock:
            self.leads[lead_id] = replace(self.leads[lead_id], **fields)  # type: ignore[arg-type]


Reply = Answer | LsqSyncError | Callable[[], Answer]


class ScriptedCall:
    """A kind of call, one lead per call by default, answering from a script per lead
    (success once the script is used up); it records every call it was asked to make."""

    def __init__(self, leads_per_call: int = 1, **script: Sequence[Reply]) -> None:
        self.leads_per_call = leads_per_call
        self.script = {lead_id: list(replies) for lead_id, replies in script.items()}
        self.sent: list[dict[str, Values]] = []
        self._lock = threading.Lock()

    def send(self, updates: Mapping[str, Values]) -> dict[str, Answer]:
        answers: dict[str, Answer] = {}
        with self._lock:
            self.sent.append(dict(updates))
            replies = {
                lead_id: self.script.get(lead_id, []).pop(0)
                if self.script.get(lead_id)
                else SUCCESS
                for lead_id in updates
            }
        for lead_id, reply in replies.items():
            if isinstance(reply, LsqSyncError):
                raise reply
            answers[lead_id] = reply() if callable(reply) else reply
        return answers

    def calls_for(self, lead_id: str) -> list[Values]:
        return [updates[lead_id] for updates in self.sent if lead_id in updates]
