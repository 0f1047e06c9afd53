"""What travels between a client and the emulator: a request as parsed, the answer to send,
and LeadSquared's standard answer bodies.

Pure data and parsing; no sockets, no state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

API_PREFIX: Final = "/v2/LeadManagement.svc/"
AUTH_PREFIX: Final = "/v2/Authentication.svc/"

RequestOutcome = Literal["success", "throttled", "fault", "error", "unauthorized"]
"""How the emulator answered a request (not `connector.responses.Outcome`, the client's view)."""

Action = Literal["answer", "drop", "timeout", "drip", "drip-head", "huge", "huge-chunked"]


@dataclass(frozen=True)
class Incoming:
    """One request as it arrived. Holds the secret key: never log or keep it."""

    method: str
    path: str
    query: dict[str, str]
    """Parameter names lower-cased, values URL-decoded."""
    header_access_key: str | None
    header_secret_key: str | None
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What to send back, and how (`action`: at once, or as one of the faults)."""

    status: int
    outcome: RequestOutcome
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    action: Action = "answer"
    headers: tuple[tuple[str, str], ...] = ()


def json_answer(status: int, payload: object, outcome: RequestOutcome) -> Answer:
    return Answer(status=status, outcome=outcome, body=json.dumps(payload).encode())


SUCCESS: Final = json_answer(200, {"Status": "Success", "Message": {"AffectedRows": 1}}, "success")


def error(
    status: int, exception_type: str, message: str, outcome: RequestOutcome = "error"
) -> Answer:
    """LeadSquared's error envelope."""
    envelope = {"Status": "Error", "ExceptionType": exception_type, "ExceptionMessage": message}
    return json_answer(status, envelope, outcome)


def parse_json(body: bytes) -> Any:
    """The parsed body, or None when there is none or it is not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _as_text(value: object) -> str | None:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def attribute_values(payload: object) -> dict[str, str] | None:
    """The values in a parsed list of Attribute/Value objects (a ``Lead.Update`` body, or one
    lead of a bulk update), or None when it is not per the spec. A later attribute wins."""
    if not isinstance(payload, list):
        return None
    fields: dict[str, str] = {}
    for item in payload:
        if not isinstance(item, dict) or "Value" not in item:
            return None
        attribute = item.get("Attribute")
        value = _as_text(item["Value"])
        if not isinstance(attribute, str) or not attribute or value is None:
            return None
        fields[attribute] = value
    return fields


def malformed(message: str) -> Answer:
    """The 400 LeadSquared gives for a request body not per the spec."""
    return error(400, "MXInvalidRequestException", message)


def not_json(incoming: Incoming) -> Answer | None:
    """The 400 for a body not sent as JSON; None when it is."""
    media_type = incoming.content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return malformed("Content-Type must be application/json")
    return None


def parse_update(incoming: Incoming) -> tuple[str, dict[str, str]] | Answer:
    """The lead id and values of a Lead.Update request, or the error for a malformed one."""
    refused = not_json(incoming)
    if refused is not None:
        return refused
    fields = attribute_values(parse_json(incoming.body))
    if fields is None:
        return malformed("The request body must be a JSON list of Attribute/Value objects")
    lead_id = incoming.query.get("leadid", "")
    if not lead_id:
        return error(500, "MXMandatoryAttributeMissingException", "leadId is mandatory")
    return lead_id, fields
