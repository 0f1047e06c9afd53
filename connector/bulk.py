"""What Lead/Bulk/UpdateV2's answer says about each lead it carried. Pure code.

The call answers for all its leads at once: counts under `Status`, and under `Details` the
leads that did not pass (`FailedLeads`) and those it could not find (`UnProcessedLeads`),
each named by its search value. A lead not named there succeeded, but only when the counts
agree: a lead the answer does not account for is not known to have worked, and is sent
again, which is safe since an update sets absolute values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector.outcomes import SUCCESS, Answer, AnswerKind
from connector.responses import (
    GENERIC_TYPE,
    RATE_LIMIT_MESSAGE,
    RATE_LIMIT_TYPE,
    unknown_attributes_in,
)

BULK_API = "Lead/Bulk/UpdateV2"
# LeadSquared's limit on the leads one bulk call carries.
MAX_LEADS_PER_BULK_CALL = 25
# How much of a lead's reason a stored error keeps.
_REASON_CHARS = 500


def read_report(body: dict[str, Any], keys: Sequence[str], *, search_by: str) -> dict[str, Answer]:
    """An answer for each of `keys`, the search values sent, in the order sent."""
    by_value = _Matcher(keys, folded=search_by != "Phone")
    details = body.get("Details")
    if details is None:
        details = {}
    failed = details.get("FailedLeads") or [] if isinstance(details, dict) else None
    unprocessed = details.get("UnProcessedLeads") or [] if isinstance(details, dict) else None
    if not isinstance(failed, list) or not isinstance(unprocessed, list):
        return _all_unknown(keys, "the answer's Details could not be read")
    answers: dict[str, Answer] = {}
    unaccounted = 0
    for entry, not_found in [*((e, False) for e in failed), *((e, True) for e in unprocessed)]:
        key = by_value.key(entry.get("IdentifierValue") if isinstance(entry, dict) else None)
        if key is None or key in answers:
            unaccounted += 1
            continue
        answers[key] = _not_found(key, search_by) if not_found else _failed(entry)
    expected_successes = len(keys) - len(answers)
    status = body["Status"]
    successes = status.get("SuccessCount")
    if unaccounted or type(successes) is not int or successes != expected_successes:
        unknown = _unknown(
            f"the answer does not account for every lead (SuccessCount {successes!r}, "
            f"{expected_successes} expected)"
        )
        return {key: answers.get(key, unknown) for key in keys}
    return {key: answers.get(key, SUCCESS) for key in keys}


class _Matcher:
    """Finds the key sent for a search value as the answer spells it."""

    def __init__(self, keys: Sequence[str], *, folded: bool) -> None:
        self._folded = folded
        self._keys = {self._form(key): key for key in keys}

    def _form(self, value: str) -> str:
        # LeadSquared compares email addresses and ProspectIds (GUIDs) ignoring case, and may
        # answer in its own case; a phone number is compared as written.
        text = value.strip()
        return text.lower() if self._folded else text

    def key(self, value: object) -> str | None:
        return self._keys.get(self._form(value)) if isinstance(value, str) else None


def _failed(entry: dict[str, Any]) -> Answer:
    """A lead's own failure, read as a single call's answer would be."""
    reason = entry.get("Reason")
    text = reason[:_REASON_CHARS] if isinstance(reason, str) and reason.strip() else "no reason"
    given = entry.get("ExceptionType")
    kind = given if isinstance(given, str) and given else None
    error = f"{BULK_API}: {kind}: {text}" if kind else f"{BULK_API}: {text}"
    if kind == RATE_LIMIT_TYPE or RATE_LIMIT_MESSAGE.search(text):
        return Answer(AnswerKind.THROTTLED, error)
    if kind == GENERIC_TYPE:
        return Answer(AnswerKind.AMBIGUOUS, error, exception_type=kind)
    return Answer(
        AnswerKind.REJECTED,
        error,
        unknown_attributes=frozenset(unknown_attributes_in(text)),
        exception_type=kind,
    )


def _not_found(key: str, search_by: str) -> Answer:
    return Answer(AnswerKind.NOT_FOUND, not_found_message(search_by, key))


def not_found_message(match: str, value: str) -> str:
    """Why a lead is not pushed when LeadSquared has no lead with its value."""
    return (
        f"not in LeadSquared: no lead has {match} {value!r} (lsq-sync never creates leads; "
        "it tries again when the row changes, or on `lsq-sync retry`)"
    )


def _unknown(reason: str) -> Answer:
    return Answer(AnswerKind.TRANSIENT, f"{BULK_API}: {reason}")


def _all_unknown(keys: Sequence[str], reason: str) -> dict[str, Answer]:
    answer = _unknown(reason)
    return dict.fromkeys(keys, answer)
