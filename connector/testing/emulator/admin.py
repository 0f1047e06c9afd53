"""The admin endpoint, under ``/_emulator/`` on the emulator's own port: read the leads and
the request log, put a lead, and reset, so that a test driving the emulator from outside
Python can see and set what it holds.

It needs no keys: the emulator listens on loopback only, and nothing here shows a key (the
request log keeps none, and any key a client put in a body is redacted). Admin requests are
not logged, throttled or faulted.

    GET  /_emulator/leads            every lead, {"L1": {"FirstName": "Ada"}, ...}
    GET  /_emulator/leads/L1         one lead's attributes (404 when missing)
    PUT  /_emulator/leads/L1         create or replace it from a JSON object of text values
    GET  /_emulator/requests         the request log, oldest first
    POST /_emulator/reset            forget every lead and the request log
    POST /_emulator/reset?only=requests   empty the request log only
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final
from urllib.parse import unquote

from connector.testing.emulator.state import LeadStore, RequestLog
from connector.testing.emulator.wire import Answer, Incoming, parse_json

ADMIN_PREFIX: Final = "/_emulator/"
_REDACTED: Final = "[redacted]"


def _admin_answer(status: int, payload: object) -> Answer:
    return Answer(status=status, outcome="success", body=json.dumps(payload).encode())


def _problem(status: int, message: str) -> Answer:
    return Answer(status=status, outcome="error", body=json.dumps({"error": message}).encode())


def redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` (parsed JSON) with every occurrence of each of `secrets` in its text replaced."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, _REDACTED)
        return value
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(key, secrets): redact(item, secrets) for key, item in value.items()}
    return value


class Admin:
    """Answers the admin endpoint from the emulator's lead store and request log."""

    def __init__(self, store: LeadStore, log: RequestLog, keys: tuple[str, str]) -> None:
        self._store = store
        self._log = log
        self._secrets = tuple(key for key in keys if key)

    def answer(self, incoming: Incoming) -> Answer:
        route = incoming.path.removeprefix(ADMIN_PREFIX).rstrip("/")
        method = incoming.method
        if route == "leads" and method == "GET":
            return _admin_answer(200, self._store.all())
        if route.startswith("leads/"):
            return self._one_lead(method, unquote(route.removeprefix("leads/")), incoming.body)
        if route == "requests" and method == "GET":
            return _admin_answer(200, self._requests())
        if route == "reset" and method == "POST":
            return self._reset(incoming.query.get("only"))
        return _problem(404, f"no admin call {method} {ADMIN_PREFIX}{route}")

    def _one_lead(self, method: str, lead_id: str, body: bytes) -> Answer:
        if method == "GET":
            values = self._store.get(lead_id)
            if values is None:
                return _problem(404, f"no lead {lead_id!r}")
            return _admin_answer(200, values)
        if method == "PUT":
            values = parse_json(body)
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                return _problem(400, "a lead is a JSON object of attribute names to text values")
            self._store.put(lead_id, values)
            return _admin_answer(200, self._store.get(lead_id))
        return _problem(405, f"leads/{lead_id} takes GET or PUT")

    def _requests(self) -> list[Any]:
        return [redact(dataclasses.asdict(r), self._secrets) for r in self._log.entries()]

    def _reset(self, only: str | None) -> Answer:
        if only not in (None, "requests"):
            return _problem(400, "reset takes only=requests, or nothing to reset leads too")
        if only is None:
            self._store.clear()
        self._log.clear()
        return _admin_answer(200, {"reset": "requests" if only else "leads and requests"})
