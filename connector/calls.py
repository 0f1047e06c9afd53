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

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Protocol

from connector.bulk import MAX_LEADS_PER_BULK_CALL, not_found_message, read_report
from connector.client import LeadSquaredClient
from connector.clock import Clock
from connector.config import Config, Match
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
        self,
        client: LeadSquaredClient,
        matches: MatchCache,
        match: Match,
        clock: Clock,
        *,
        ttl: timedelta,
        rows_with: Callable[[list[str]], Mapping[str, list[str] | None]],
    ) -> None:
        """A ProspectId kept longer than `ttl` is looked up again before it is used.
        `rows_with(values)` gives the keys of the source rows holding each value now (None:
        they cannot all be read)."""
        self.client = client
        self.matches = matches
        self.match = match
        self.clock = clock
        self.ttl = ttl
        self.rows_with = rows_with

    def send(self, updates: Mapping[str, Values]) -> dict[str, Answer]:
        ((lead_id, update),) = updates.items()
        kept = self.matches.get(lead_id)
        if kept is not None and self.clock.now() - kept.found_at <= self.ttl:
            shared = self._shared(lead_id, kept.prospect_id)
            if shared is not None:
                return {lead_id: shared}
            answer = _update(self.client, kept.prospect_id, update)
            if not _lead_is_gone(answer):
                return {lead_id: answer}
            self.matches.drop(lead_id)
        found = self._find(lead_id)
        if isinstance(found, Answer):
            return {lead_id: found}
        shared = self._shared(lead_id, found)
        if shared is not None:
            return {lead_id: shared}
        return {lead_id: _update(self.client, found, update)}

    def _shared(self, lead_id: str, prospect_id: str) -> Answer | None:
        """Why not to update the lead, when another row's value found it too."""
        others = self.matches.others(prospect_id, lead_id)
        if others:
            # A value no row holds any more (the row moved to another) finds nothing now.
            holding = self.rows_with(others)
            for other in others:
                if holding.get(other) == []:
                    self.matches.drop(other)
            others = [other for other in others if holding.get(other) != []]
        if not others:
            return None
        named = ", ".join(map(repr, others))
        return Answer(
            AnswerKind.SEVERAL_FOUND,
            f"rows with {self.match} {lead_id!r} and {named} find the same lead {prospect_id} "
            "in LeadSquared (values that differ only in case, or a number that is another "
            "row's Mobile): neither is guessed; give the rows values of their own, then "
            "`lsq-sync retry`",
        )

    def _find(self, lead_id: str) -> str | Answer:
        """The ProspectId of the one lead with this value, or the answer why there is none."""
        try:
            found = self.client.find_leads(self.match, lead_id)
        except RetriableError as exc:
            return Answer(_retriable_kind(exc), str(exc), exc.delay)
        except LeadRejectedError as exc:
            self.matches.drop(lead_id)
            return Answer(AnswerKind.REJECTED, str(exc), exception_type=exc.exception_type)
        if len(found) != 1:
            # What was kept (a lookup past its time) no longer holds.
            self.matches.drop(lead_id)
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
        twins = self._twins(updates)
        to_send = {key: update for key, update in updates.items() if key not in twins}
        answers = dict(twins)
        if not to_send:
            return answers
        try:
            body = self.client.bulk_update(self.search_by, to_send)
        except RetriableError as exc:
            answer = Answer(_retriable_kind(exc), str(exc), exc.delay)
            return answers | dict.fromkeys(to_send, answer)
        except LeadRejectedError as exc:
            named = set(exc.unknown_attributes)
            carried = any(named & set(update) for update in to_send.values())
            return answers | {
                key: _refused_call(exc, update, carried=carried) for key, update in to_send.items()
            }
        return answers | read_report(body, list(to_send), search_by=self.search_by)

    def _twins(self, updates: Mapping[str, Values]) -> dict[str, Answer]:
        """Email addresses that differ only in case find one lead: neither is sent."""
        if self.search_by != "EmailAddress":
            return {}
        groups: dict[str, list[str]] = {}
        for key in updates:
            groups.setdefault(key.strip().lower(), []).append(key)
        twins: dict[str, Answer] = {}
        for keys in groups.values():
            if len(keys) > 1:
                named = ", ".join(map(repr, keys))
                answer = Answer(
                    AnswerKind.SEVERAL_FOUND,
                    f"rows with EmailAddress {named} find the same lead (the addresses differ "
                    "only in case): neither is guessed; give the rows addresses of their own, "
                    "then `lsq-sync retry`",
                )
                twins |= dict.fromkeys(keys, answer)
        return twins


# What LeadSquared answers for a ProspectId that no longer names a lead. The second type also
# comes for a bad value, so the message must say it is the lead that is missing.
MISSING_LEAD_TYPES = frozenset({"MXInvalidEntityException", "MXInvalidEntityReferenceException"})
_MISSING_LEAD = re.compile(r"\blead (does not exist|not found)\b", re.IGNORECASE)


def _lead_is_gone(answer: Answer) -> bool:
    return answer.exception_type in MISSING_LEAD_TYPES and bool(_MISSING_LEAD.search(answer.error))


def _update(client: LeadSquaredClient, prospect_id: str, update: Values) -> Answer:
    try:
        client.update_lead(prospect_id, update)
    except RetriableError as exc:
        return Answer(_retriable_kind(exc), str(exc), exc.delay)
    except LeadRejectedError as exc:
        return _rejected(exc)
    return SUCCESS


def _refused_call(exc: LeadRejectedError, update: Values, *, carried: bool) -> Answer:
    """A lead's answer when LeadSquared refused a whole bulk call. Attributes it named as
    unknown are set aside for the leads that carried them (`carried`: some lead did); the
    others are sent again without them. Any other refusal of the whole call is retried, then
    rejected, as an ambiguous one."""
    if exc.unknown_attributes and carried:
        if set(exc.unknown_attributes) & set(update):
            return _rejected(exc)
        return Answer(
            AnswerKind.TRANSIENT,
            f"{exc} (for another lead of the same bulk call: sent again)",
        )
    return Answer(AnswerKind.AMBIGUOUS, str(exc), exception_type=exc.exception_type)


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


def call_for(
    config: Config,
    client: LeadSquaredClient,
    *,
    pending_leads: int,
    matches: MatchCache,
    clock: Clock,
    rows_with: Callable[[list[str]], Mapping[str, list[str] | None]],
) -> LeadCall:
    """The kind of call a run pushes `pending_leads` leads with, as the config says."""
    bulk = config.leadsquared.bulk
    match = config.lead_id.match
    wanted = bulk.mode == "always" or (bulk.mode == "auto" and pending_leads >= bulk.min_leads)
    # A bulk call finds leads by a field unique in the account, which Phone is not.
    if wanted and match != "Phone":
        return BulkUpdate(client, match)
    if match == "ProspectId":
        return UpdateOneLead(client)
    ttl = timedelta(seconds=config.lead_id.lookup_ttl_seconds)
    return UpdateFoundLead(client, matches, match, clock, ttl=ttl, rows_with=rows_with)
