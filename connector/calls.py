"""The kinds of LeadSquared call that carry leads' updates, behind one interface.

A kind says how many leads one call carries and turns LeadSquared's answer into one `Answer`
per lead (`connector.outcomes`). `connector.push` groups leads by `leads_per_call` and decides
each lead's next step from its answer, whatever the kind. The kinds: Lead.Update by
ProspectId (`UpdateOneLead`), Lead.Update after a lookup by email address or phone number
(`UpdateFoundLead`), and Lead/Bulk/UpdateV2, 25 leads per call (`BulkUpdate`).

What is not about any one lead is raised instead: no call was made (CallCancelledError,
BudgetExhaustedError, RunLockLostError), the call may have landed unanswered
(CallAbandonedError), or the run must stop (FatalRunError).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from connector.bulk import MAX_LEADS_PER_BULK_CALL, not_found_message, read_report
from connector.client import LeadSquaredClient
from connector.clock import Clock
from connector.config import Match
from connector.errors import (
    AmbiguousError,
    LeadRejectedError,
    RetriableError,
    ThrottledError,
    UnreachableError,
)
from connector.matches import MatchCache
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
        return {lead_id: _update(self.client, lead_id, update)}


class UpdateFoundLead:
    """Lead.Update of a lead kept under its email address or phone number: its ProspectId is
    found first (Leads.GetByEmailaddress, RetrieveLeadByPhoneNumber), once per value, and kept
    in `matches`. One lead per call, plus a lookup when its ProspectId is not yet known.

    When LeadSquared says the ProspectId kept is gone (a lead merged or deleted), it is
    dropped and the value looked up again, once."""

    leads_per_call = 1

    def __init__(
        self, client: LeadSquaredClient, matches: MatchCache, match: Match, clock: Clock
    ) -> None:
        self.client = client
        self.matches = matches
        self.match = match
        self.clock = clock

    def send(self, updates: Mapping[str, Values]) -> dict[str, Answer]:
        ((lead_id, update),) = updates.items()
        kept = self.matches.get(lead_id)
        if kept is not None:
            answer = _update(self.client, kept, update)
            if answer.exception_type not in MISSING_LEAD_TYPES:
                return {lead_id: answer}
            self.matches.drop(lead_id)
        found = self._find(lead_id)
        if isinstance(found, Answer):
            return {lead_id: found}
        return {lead_id: _update(self.client, found, update)}

    def _find(self, lead_id: str) -> str | Answer:
        """The ProspectId of the one lead with this value, or the answer why there is none."""
        try:
            found = self.client.find_leads(self.match, lead_id)
        except RetriableError as exc:
            return Answer(_retriable_kind(exc), str(exc), exc.delay)
        except LeadRejectedError as exc:
            return Answer(AnswerKind.REJECTED, str(exc), exception_type=exc.exception_type)
        if not found:
            return Answer(AnswerKind.NOT_FOUND, not_found_message(self.match, lead_id))
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            return Answer(
                AnswerKind.SEVERAL_FOUND,
                f"{len(found)} leads in LeadSquared have {self.match} {lead_id!r} ({shown}): "
                "lsq-sync does not guess which one the row means; merge them in LeadSquared, "
                "then `lsq-sync retry`",
            )
        self.matches.save(lead_id, found[0], self.clock.now())
        return found[0]


class BulkUpdate:
    """Lead/Bulk/UpdateV2: up to 25 leads per call, each found by its lead id as the config
    says (`SearchByKey`: ProspectId, EmailAddress or Phone), so no lookup is needed. Each
    lead's answer is read from the call's report (connector.bulk); an answer to the whole
    call (throttled, transient, fatal) is every lead's."""

    leads_per_call = MAX_LEADS_PER_BULK_CALL

    def __init__(self, client: LeadSquaredClient, search_by: Match) -> None:
        self.client = client
        self.search_by = search_by

    def send(self, updates: Mapping[str, Values]) -> dict[str, Answer]:
        try:
            body = self.client.bulk_update(self.search_by, updates)
        except RetriableError as exc:
            return dict.fromkeys(updates, Answer(_retriable_kind(exc), str(exc), exc.delay))
        except LeadRejectedError as exc:
            return dict.fromkeys(updates, _rejected(exc))
        return read_report(body, list(updates), search_by=self.search_by)


# What LeadSquared answers for a ProspectId that no longer names a lead.
MISSING_LEAD_TYPES = frozenset({"MXInvalidEntityException", "MXInvalidEntityReferenceException"})


def _update(client: LeadSquaredClient, prospect_id: str, update: Values) -> Answer:
    try:
        client.update_lead(prospect_id, update)
    except RetriableError as exc:
        return Answer(_retriable_kind(exc), str(exc), exc.delay)
    except LeadRejectedError as exc:
        return _rejected(exc)
    return SUCCESS


def _rejected(exc: LeadRejectedError) -> Answer:
    return Answer(
        AnswerKind.REJECTED,
        str(exc),
        unknown_attributes=frozenset(exc.unknown_attributes),
        exception_type=exc.exception_type,
    )


def _retriable_kind(exc: RetriableError) -> AnswerKind:
    if isinstance(exc, ThrottledError):
        return AnswerKind.THROTTLED
    if isinstance(exc, UnreachableError):
        return AnswerKind.UNREACHABLE
    if isinstance(exc, AmbiguousError):
        return AnswerKind.AMBIGUOUS
    return AnswerKind.TRANSIENT
