"""The kinds of LeadSquared call that carry leads' updates, behind one interface.

A kind says how many leads one call carries and turns LeadSquared's answer into one `Answer`
per lead (`connector.outcomes`). `connector.push` groups leads by `leads_per_call` and decides
each lead's next step from its answer, whatever the kind. Today there is one kind, Lead.Update,
one lead per call; a bulk kind, several leads per call with an answer per lead, fits beside it.

What is not about any one lead is raised instead: no call was made (CallCancelledError,
BudgetExhaustedError, RunLockLostError), the call may have landed unanswered
(CallAbandonedError), or the run must stop (FatalRunError).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from connector.client import LeadSquaredClient
from connector.errors import (
    AmbiguousError,
    LeadRejectedError,
    RetriableError,
    ThrottledError,
    UnreachableError,
)
from connector.outcomes import SUCCESS, Answer, AnswerKind
from connector.values import Values


class LeadCall(Protocol):
    """One kind of call that sends leads' updates."""

    @property
    def leads_per_call(self) -> int: ...

    def send(self, updates: Mapping[str, Values]) -> dict[str, Answer]:
        """Send these updates (lead id → attributes) in one call: an answer for each lead."""
        ...


class UpdateOneLead:
    """Lead.Update: one lead per call; the call's answer is the lead's."""

    leads_per_call = 1

    def __init__(self, client: LeadSquaredClient) -> None:
        self.client = client

    def send(self, updates: Mapping[str, Values]) -> dict[str, Answer]:
        ((lead_id, update),) = updates.items()
        try:
            self.client.update_lead(lead_id, update)
        except RetriableError as exc:
            return {lead_id: Answer(_retriable_kind(exc), str(exc), exc.delay)}
        except LeadRejectedError as exc:
            unknown = frozenset(exc.unknown_attributes)
            return {lead_id: Answer(AnswerKind.REJECTED, str(exc), unknown_attributes=unknown)}
        return {lead_id: SUCCESS}


def _retriable_kind(exc: RetriableError) -> AnswerKind:
    if isinstance(exc, ThrottledError):
        return AnswerKind.THROTTLED
    if isinstance(exc, UnreachableError):
        return AnswerKind.UNREACHABLE
    if isinstance(exc, AmbiguousError):
        return AnswerKind.AMBIGUOUS
    return AnswerKind.TRANSIENT
