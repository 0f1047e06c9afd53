"""The one place that decides what a LeadSquared response means.

LeadSquared does not always use the HTTP code you would expect: a 200 can carry an error,
throttling comes as 429, 200 or 403, and business errors come as 500 with an MX type.
Pure code: it sees a status, headers and a body, and nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Outcome(Enum):
    SUCCESS = "success"
    THROTTLED = "throttled"  # back off the whole client and retry; not the lead's fault
    TRANSIENT = "transient"  # retry later; the same call may succeed
    REJECTED = "rejected"  # permanent for this lead's current values
    FATAL = "fatal"  # the connector itself is refused: stop the run


@dataclass(frozen=True)
class Classified:
    outcome: Outcome
    message: str
    status: int
    exception_type: str | None = None
    retry_after: float | None = None
    unknown_attributes: tuple[str, ...] = ()
    body: Any = None


_RATE_LIMIT_TYPE = "MXAPIRateLimitExceededException"
_UNKNOWN_ATTRIBUTE_TYPE = "MXUnknownAttributeException"
_UNKNOWN_ATTRIBUTES = re.compile(r"does not exist\s*-\s*(.+)$", re.IGNORECASE | re.DOTALL)
_FATAL_HINT = (
    "check leadsquared.access_key and secret_key, that the key's user is still active, "
    "and that leadsquared.host is your account's regional API host"
)


def classify(status: int, headers: Mapping[str, str], text: str) -> Classified:
    body = _json_or_none(text)
    envelope = body if isinstance(body, dict) else {}
    exception_type = _text(envelope.get("ExceptionType")) or None
    message = _text(envelope.get("ExceptionMessage")) or _text(envelope.get("Message"))
    retry_after = _retry_after(headers)

    def result(outcome: Outcome, text_: str, **extra: Any) -> Classified:
        return Classified(outcome, text_, status, exception_type, retry_after, body=body, **extra)

    if (
        status == 429
        or exception_type == _RATE_LIMIT_TYPE
        or "exceeded the limit" in (message or text).lower()
    ):
        return result(Outcome.THROTTLED, message or f"HTTP {status}: throttled")
    if 200 <= status < 300:
        if envelope.get("Status") == "Error" or exception_type:
            return _rejected(result, exception_type, message, status)
        if body is None:
            return result(Outcome.TRANSIENT, f"HTTP {status} with a body that is not JSON")
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
        return _rejected(result, exception_type, message, status)
    if status == 400:
        return _rejected(result, exception_type, message or "bad request", status)
    if status >= 500 or status == 408:
        return result(Outcome.TRANSIENT, f"HTTP {status}" + (f": {message}" if message else ""))
    return result(Outcome.FATAL, f"unexpected HTTP {status}" + (f": {message}" if message else ""))


def _rejected(result: Any, exception_type: str | None, message: str, status: int) -> Classified:
    unknown: tuple[str, ...] = ()
    if exception_type == _UNKNOWN_ATTRIBUTE_TYPE:
        match = _UNKNOWN_ATTRIBUTES.search(message)
        if match:
            unknown = tuple(a.strip() for a in match.group(1).split(",") if a.strip())
    text = f"{exception_type}: {message}" if exception_type else f"HTTP {status}: {message}"
    classified: Classified = result(Outcome.REJECTED, text, unknown_attributes=unknown)
    return classified


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare enough here to fall back to pacing
    return max(0.0, seconds)
