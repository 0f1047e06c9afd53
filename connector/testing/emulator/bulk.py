"""``Lead/Bulk/UpdateV2``: up to `BULK_MAX_LEADS` leads updated in one call, each found by the
call's search key and judged on its own exactly as ``Lead.Update`` judges an update.

The body, as LeadSquared documents it::

    {"SearchByKey": "ProspectId",
     "Options": {"PushNonExistentLeadsToUnProcessedList": true},
     "LeadPropertiesList": [{"Fields": [{"Attribute": "ProspectId", "Value": "L1"},
                                        {"Attribute": "mx_City", "Value": "Rome"}]}]}

The search key (`SEARCH_KEYS`: a field unique in the account) names the field that identifies
each lead; that field is not updated. A lead that passes is applied at once, so a later lead
in the same call sees it; one that fails changes nothing. A lead the key finds nowhere goes to
``UnProcessedLeads`` when the option says so, else to ``FailedLeads``; a bulk call never
creates a lead, whatever `auto_create_leads` says. The answer is HTTP 200 with the counts and
the leads that did not pass; a body not per the spec, another search key, or more than
`BULK_MAX_LEADS` leads refuse the whole call, applying nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from connector.testing.emulator.state import LeadStore, Refusal
from connector.testing.emulator.wire import (
    Answer,
    Incoming,
    attribute_values,
    error,
    json_answer,
    malformed,
    not_json,
    parse_json,
)

BULK_MAX_LEADS: Final = 25
SEARCH_KEYS: Final = ("ProspectId", "EmailAddress", "Phone")
_NOT_FOUND_REASON: Final = "Lead does not exist"
_PUSH_OPTION: Final = "PushNonExistentLeadsToUnProcessedList"


@dataclass(frozen=True)
class BulkRequest:
    """A bulk update as asked: the search key, the option, and each lead's fields (the
    search key's included)."""

    search_key: str
    push_unprocessed: bool
    leads: tuple[dict[str, str], ...]


def parse_bulk(incoming: Incoming) -> BulkRequest | Answer:
    """The bulk update a request asks for, or the error refusing the whole call."""
    refused = not_json(incoming)
    if refused is not None:
        return refused
    payload = parse_json(incoming.body)
    if not isinstance(payload, dict):
        return _not_per_spec()
    options = payload.get("Options", {})
    push = options.get(_PUSH_OPTION, False) if isinstance(options, dict) else None
    leads = _leads(payload.get("LeadPropertiesList"))
    key = payload.get("SearchByKey")
    if not isinstance(push, bool) or leads is None or not isinstance(key, str | None):
        return _not_per_spec()
    if not key:
        return error(500, "MXMandatoryAttributeMissingException", "SearchByKey is mandatory")
    if key not in SEARCH_KEYS:
        return error(
            500,
            "MXInvalidInputException",
            f"SearchByKey {key} is not a unique field; use one of {', '.join(SEARCH_KEYS)}",
        )
    if len(leads) > BULK_MAX_LEADS:
        return malformed(
            f"At most {BULK_MAX_LEADS} leads can be updated in one call, got {len(leads)}"
        )
    return BulkRequest(key, push, tuple(leads))


def _leads(listed: object) -> list[dict[str, str]] | None:
    """Each lead's fields from ``LeadPropertiesList``; None when it is not per the spec."""
    if not isinstance(listed, list):
        return None
    leads = []
    for item in listed:
        fields = attribute_values(item.get("Fields")) if isinstance(item, dict) else None
        if fields is None:
            return None
        leads.append(fields)
    return leads


def bulk_update(store: LeadStore, incoming: Incoming) -> Answer:
    """Answer a ``Lead/Bulk/UpdateV2`` call, applying each lead that passes (lock held)."""
    request = parse_bulk(incoming)
    if isinstance(request, Answer):
        return request
    succeeded = 0
    failed: list[dict[str, str]] = []
    unprocessed: list[dict[str, str]] = []
    for lead in request.leads:
        fields = dict(lead)
        value = fields.pop(request.search_key, "")
        identified = {"Identifier": request.search_key, "IdentifierValue": value}
        outcome = _update_one(store, request.search_key, value, fields)
        if outcome == "updated":
            succeeded += 1
        elif outcome == "missing" and request.push_unprocessed:
            unprocessed.append({**identified, "Reason": _NOT_FOUND_REASON})
        else:
            refusal = store.missing_lead if outcome == "missing" else outcome
            failed.append(
                {**identified, "Reason": refusal.message, "ExceptionType": refusal.exception_type}
            )
    status = {
        "TotalCount": len(request.leads),
        "SuccessCount": succeeded,
        "FailureCount": len(failed),
        "UnProcessedCount": len(unprocessed),
    }
    details = {"FailedLeads": failed, "UnProcessedLeads": unprocessed}
    return json_answer(200, {"Status": status, "Details": details}, "success")


def _update_one(
    store: LeadStore, key: str, value: str, fields: dict[str, str]
) -> Refusal | Literal["updated", "missing"]:
    """Find the one lead `value` identifies, and update it as ``Lead.Update`` would."""
    if not value:
        return Refusal("MXMandatoryAttributeMissingException", f"{key} is mandatory")
    found = store.matching(key, value)
    if not found:
        return "missing"
    if len(found) > 1:
        # An email or phone is only unique where the account enforces it; the emulator need
        # not, so the ambiguity is the lead's failure rather than a guess.
        return Refusal(
            "MXDuplicateEntryException",
            f"{len(found)} leads have this {key}; it must identify exactly one lead",
        )
    [lead_id] = found
    refusal = store.refusal(lead_id, fields)
    if refusal is not None:
        return refusal
    store.apply(lead_id, fields)
    return "updated"


def _not_per_spec() -> Answer:
    return malformed(
        "The request body must be an object with SearchByKey, optional Options and "
        "LeadPropertiesList, a list of {Fields: [Attribute/Value objects]}"
    )
