"""The one place that decides what a LeadSquared response means.

LeadSquared does not always use the HTTP code you would expect: a 200 can carry an error,
throttling comes as 429, 200 or 403, and business errors come as 500 with an MX type.
Pure code: it sees a status, headers and a body, and nothing else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit


class Outcome(Enum):
    SUCCESS = "success"
    THROTTLED = "throttled"  # back off the whole client and retry; not the lead's fault
    TRANSIENT = "transient"  # retry later; the same call may succeed
    # LeadSquared failed without saying why (a bare MXException): it may pass on a retry or
    # may be the lead's data, so it is retried like a transient failure, a bounded number of
    # times, and then the lead is parked as rejected.
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"  # permanent for this lead's current values
    FATAL = "fatal"  # the connector itself is refused: stop the run


class Expect(Enum):
    """What a successful answer of an endpoint looks like; anything else is not a success."""

    STATUS_SUCCESS = "an object with Status: Success"  # Lead.Update and other writes
    LIST = "a JSON list"  # lookups and LeadsMetaData.Get ([] when nothing matches)
    OBJECT = "a JSON object"  # UserByAccessKey.Get
    # Lead/Bulk/UpdateV2: counts under Status, and the leads that did not pass under Details.
    BULK_REPORT = "an object with Status counts"

    def matches(self, body: Any) -> bool:
        if self is Expect.LIST:
            return isinstance(body, list)
        if self is Expect.OBJECT:
            return isinstance(body, dict)
        if self is Expect.BULK_REPORT:
            return isinstance(body, dict) and isinstance(body.get("Status"), dict)
        return isinstance(body, dict) and body.get("Status") == "Success"


@dataclass(frozen=True)
class Classified:
    outcome: Outcome
    message: str
    status: int
    exception_type: str | None = None
    retry_after: float | None = None
    unknown_attributes: tuple[str, ...] = ()
    body: Any = None


# LeadSquared's windows are seconds long; a Retry-After far longer would hold every process of
# the account back for that long, and is more likely a fault than a real instruction.
MAX_RETRY_AFTER_SECONDS = 60.0

RATE_LIMIT_TYPE = "MXAPIRateLimitExceededException"
# "API calls exceeded the limit of 25 in 5 second(s)": the calls, not a value, over a limit.
RATE_LIMIT_MESSAGE = re.compile(r"calls exceeded the limit", re.IGNORECASE)
# The catch-all type: "There was an error processing the request", with no hint at the cause.
GENERIC_TYPE = "MXException"
# How much of an unexpected body a message quotes.
_PREVIEW_CHARS = 80
_NOT_JSON = object()
_UNKNOWN_ATTRIBUTE_TYPE = "MXUnknownAttributeException"
_UNKNOWN_ATTRIBUTES = re.compile(r"does not exist\s*-\s*(.+)$", re.IGNORECASE | re.DOTALL)
_FATAL_HINT = (
    "check leadsquared.access_key and secret_key, that the key's user is still active, "
    "and that leadsquared.host is your account's regional API host"
)


def classify(status: int, headers: Mapping[str, str], text: str, *, expect: Expect) -> Classified:
    """What an answer means; `expect` says what success looks like for the endpoint called."""
    parsed = _json(text)
    body = None if parsed is _NOT_JSON else parsed
    envelope = body if isinstance(body, dict) else {}
    exception_type = _text(envelope.get("ExceptionType")) or None
    message = _text(envelope.get("ExceptionMessage")) or _text(envelope.get("Message"))
    retry_after = _retry_after(headers)

    def result(outcome: Outcome, text_: str, **extra: Any) -> Classified:
        return Classified(
            outcome, _storable(text_), status, exception_type, retry_after, body=body, **extra
        )

    if (
        status == 429
        or exception_type == RATE_LIMIT_TYPE
        or RATE_LIMIT_MESSAGE.search(message or text)
    ):
        return result(Outcome.THROTTLED, message or f"HTTP {status}: throttled")
    if 200 <= status < 300:
        if envelope.get("Status") == "Error" or exception_type:
            return _error_answer(result, exception_type, message, status)
        if parsed is _NOT_JSON:
            return result(Outcome.TRANSIENT, f"HTTP {status} with a body that is not JSON")
        if not expect.matches(body):
            # Not known to have worked: a proxy's answer, a changed API. Retrying is safe
            # (Lead.Update sets absolute values); counting it as pushed could lose an update.
            return result(
                Outcome.TRANSIENT,
                f"HTTP {status} without {expect.value}: {_preview(body)}",
            )
        return result(Outcome.SUCCESS, "")
    if status == 401:
        return result(Outcome.FATAL, f"LeadSquared refused the keys (HTTP 401): {_FATAL_HINT}")
    if status == 404:
        return result(
            Outcome.FATAL,
            "LeadSquared answered 'API not found' (HTTP 404): check that leadsquared.host "
            "is the API host (https://api-....leadsquared.com), not the web app's",
        )
    if exception_type and exception_type.startswith("MX"):
        return _error_answer(result, exception_type, message, status)
    if status == 400:
        return _error_answer(result, exception_type, message or "bad request", status)
    if status >= 500 or status == 408:
        return result(Outcome.TRANSIENT, f"HTTP {status}" + (f": {message}" if message else ""))
    if 300 <= status < 400:
        return result(Outcome.FATAL, _redirect_message(status, headers))
    return result(Outcome.FATAL, f"unexpected HTTP {status}" + (f": {message}" if message else ""))


def _error_answer(result: Any, exception_type: str | None, message: str, status: int) -> Classified:
    """An error LeadSquared put down to the call itself: rejected, or ambiguous when it is the
    generic type that names no cause."""
    unknown: tuple[str, ...] = ()
    if exception_type == _UNKNOWN_ATTRIBUTE_TYPE:
        unknown = unknown_attributes_in(message)
    text = f"{exception_type}: {message}" if exception_type else f"HTTP {status}: {message}"
    outcome = Outcome.AMBIGUOUS if exception_type == GENERIC_TYPE else Outcome.REJECTED
    classified: Classified = result(outcome, text, unknown_attributes=unknown)
    return classified


def unknown_attributes_in(message: str) -> tuple[str, ...]:
    """The attributes an "Attribute(s) does not exist - mx_A, mx_B" message names."""
    match = _UNKNOWN_ATTRIBUTES.search(message)
    if not match:
        return ()
    return tuple(a.strip() for a in match.group(1).split(",") if a.strip())


def _redirect_message(status: int, headers: Mapping[str, str]) -> str:
    # Only where it points: the rest of the address may repeat the query, keys and all.
    target = urlsplit(headers.get("location") or headers.get("Location") or "")
    where = f" to {target.scheme}://{target.netloc}" if target.scheme and target.netloc else ""
    return (
        f"LeadSquared redirected{where} (HTTP {status}): set leadsquared.host to your "
        "account's API host itself (https://api-....leadsquared.com); the keys are never "
        "sent on to another address"
    )


def _preview(body: Any) -> str:
    # Written out again rather than quoted: however the answer escaped a key (\/, \u002B),
    # it then reads as the key itself, which the caller's redaction finds.
    flat = " ".join(json.dumps(body, ensure_ascii=False).split())
    return flat if len(flat) <= _PREVIEW_CHARS else flat[:_PREVIEW_CHARS] + "..."


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # nested deeper than the parser recurses
        return _NOT_JSON


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _storable(text: str) -> str:
    # JSON may spell out a lone surrogate (\ud800), which no UTF-8 text holds: stored or
    # logged, it would fail the run rather than only the lead it came with.
    return text.encode("utf-8", "replace").decode("utf-8")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare enough here to fall back to pacing
    if not 0 <= seconds < math.inf:  # negative, NaN or infinite: no delay at all
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)
