"""A LeadSquared API emulator: a real HTTP server on loopback, for tests and the demo.

It answers ``Lead.Update`` and ``Leads.GetById`` under ``/v2/LeadManagement.svc/`` the way
LeadSquared does, including the ways LeadSquared fails: 401 for bad keys, throttling as 429,
200 or 403, permanent ``MX*`` errors as HTTP 500, gateway pages without JSON, dropped
connections, hangs, answers too big to hold, and any answer a test scripts itself. Tests
drive it through real sockets, so the client under test runs unpatched::

    with Emulator(rate_limit=(3, 1.0)) as emulator:
        emulator.add_lead("L1", FirstName="Ada")
        run_the_client_against(emulator.url)
        assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "London"}

Every request is processed (and an update applied) as soon as it arrives; latency and
``hold()`` only delay the *answer*. Faults (a dropped connection, a hang, a success body
dripped out too slowly to wait for) apply nothing. Together they cover both halves of "the
client never saw an answer": nothing happened, or the update landed anyway.

Run ``python -m connector.testing.emulator --port 8089 --lead L1`` to serve one by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "API_PREFIX",
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_SECRET_KEY",
    "FAULT_KINDS",
    "Emulator",
    "MissingLeadError",
    "Outcome",
    "RecordedRequest",
    "main",
]

logger = logging.getLogger(__name__)

API_PREFIX: Final = "/v2/LeadManagement.svc/"
DEFAULT_ACCESS_KEY: Final = "emulator-access-key"
DEFAULT_SECRET_KEY: Final = "emulator-secret-key"  # noqa: S105 (a fake key for a test double)
THROTTLE_STATUSES: Final = frozenset({429, 200, 403})
# Short enough that any sane per-read timeout outlives the gap between two pieces of a drip.
_DRIP_INTERVAL: Final = 0.2
# The ``huge`` faults send their body in blocks of this size, made once: never held whole.
_HUGE_BLOCK: Final = b"x" * (1 << 20)
_HUGE_HEAD: Final = b'{"Status":"Success","Message":"'
_HUGE_TAIL: Final = b'"}'

Outcome = Literal["success", "throttled", "fault", "error", "unauthorized"]
MissingLeadError = Literal["MXInvalidEntityException", "MXInvalidEntityReferenceException"]
_Action = Literal["answer", "drop", "timeout", "drip", "drip-head", "huge", "huge-chunked"]

# Both have been seen from LeadSquared for a lead that is missing, deleted or merged.
_MISSING_LEAD_MESSAGES: Final[dict[str, str]] = {
    "MXInvalidEntityException": "Lead does not exist in the system",
    "MXInvalidEntityReferenceException": "Lead not found",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it, without the keys or the query string."""

    method: str
    api: str
    """``Lead.Update``, ``Leads.GetById``, or the last path segment of an unknown API."""
    lead_id: str | None
    """The ``leadId`` (or ``id``) query parameter, if any."""
    body: Any
    """The parsed JSON body, or None when there was none or it was not JSON."""
    status: int
    """The HTTP status answered; 0 when the connection was dropped without an answer."""
    outcome: Outcome
    post_updated_lead: bool
    arrived_at: float = 0.0
    """The emulator clock's reading when the request arrived (``time.monotonic`` by default)."""


@dataclass(frozen=True)
class _Incoming:
    method: str
    path: str
    query: dict[str, str]
    """Parameter names lower-cased, values URL-decoded. Holds the secret: never log or keep."""
    header_access_key: str | None
    header_secret_key: str | None
    content_type: str
    body: bytes


@dataclass(frozen=True)
class _Answer:
    status: int
    outcome: Outcome
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    action: _Action = "answer"
    headers: tuple[tuple[str, str], ...] = ()


def _json_answer(status: int, payload: object, outcome: Outcome) -> _Answer:
    return _Answer(status=status, outcome=outcome, body=json.dumps(payload).encode())


_SUCCESS: Final = _json_answer(
    200, {"Status": "Success", "Message": {"AffectedRows": 1}}, "success"
)


def _error(status: int, exception_type: str, message: str, outcome: Outcome = "error") -> _Answer:
    envelope = {"Status": "Error", "ExceptionType": exception_type, "ExceptionMessage": message}
    return _json_answer(status, envelope, outcome)


def _gateway_page(status: int, reason: str) -> _Answer:
    # Gateways in front of LeadSquared answer with HTML, so clients must not assume JSON.
    title = f"{status} {reason}"
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return _Answer(
        status=status,
        outcome="fault",
        body=page.encode(),
        content_type="text/html; charset=utf-8",
    )


_FAULT_ANSWERS: Final[dict[str, _Answer]] = {
    "502": _gateway_page(502, "Bad Gateway"),
    "503": _gateway_page(503, "Service Unavailable"),
    "504": _gateway_page(504, "Gateway Time-out"),
    "drop": _Answer(status=0, outcome="fault", action="drop"),
    "timeout": _Answer(status=0, outcome="fault", action="timeout"),
    "drip": replace(_SUCCESS, outcome="fault", action="drip"),
    "drip-head": replace(_SUCCESS, outcome="fault", action="drip-head"),
    "huge": replace(_SUCCESS, outcome="fault", action="huge"),
    "huge-chunked": replace(_SUCCESS, outcome="fault", action="huge-chunked"),
    "mx500": _error(
        500, "MXException", "There was an error processing the request.", outcome="fault"
    ),
}
FAULT_KINDS: Final = frozenset(_FAULT_ANSWERS)


def _parse_json(body: bytes) -> Any:
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


def _parse_fields(body: bytes) -> dict[str, str] | None:
    """The attribute values of a Lead.Update body, or None when it is not per the spec."""
    payload = _parse_json(body)
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


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(float(seconds))


def _drip_pieces(body: bytes, total_seconds: float) -> tuple[list[bytes], float]:
    """`body` cut into pieces, and the pause between them, so that sending spans the total."""
    pauses = max(1, math.ceil(total_seconds / _DRIP_INTERVAL))
    count = pauses + 1
    # JSON allows trailing whitespace; padding keeps every piece non-empty however long the drip.
    padded = body.ljust(count, b" ")
    size = len(padded)
    pieces = [padded[size * index // count : size * (index + 1) // count] for index in range(count)]
    return pieces, max(0.0, total_seconds) / pauses


def _dripped_head(answer: _Answer, total_seconds: float) -> bytes:
    """The answer's status line and headers, with a header long enough to give every piece
    of a drip over `total_seconds` a byte of its own."""
    padding = b"a" * (math.ceil(total_seconds / _DRIP_INTERVAL) + 1)
    return (
        b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nX-Drip: %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n"
        % (answer.status, answer.content_type.encode(), padding, len(answer.body))
    )


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _parse_update(incoming: _Incoming) -> tuple[str, dict[str, str]] | _Answer:
    """The lead id and values of a Lead.Update request, or the error for a malformed one."""
    if _media_type(incoming.content_type) != "application/json":
        return _error(400, "MXInvalidRequestException", "Content-Type must be application/json")
    fields = _parse_fields(incoming.body)
    if fields is None:
        return _error(
            400,
            "MXInvalidRequestException",
            "The request body must be a JSON list of Attribute/Value objects",
        )
    lead_id = incoming.query.get("leadid", "")
    if not lead_id:
        return _error(500, "MXMandatoryAttributeMissingException", "leadId is mandatory")
    return lead_id, fields


class Emulator:
    """A LeadSquared API served over HTTP on 127.0.0.1, with knobs for every failure mode.

    All methods are thread-safe and may be called while requests are in flight.
    """

    def __init__(
        self,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        rate_limit: tuple[int, float] | None = (25, 5.0),
        throttle_status: int = 429,
        retry_after: float | None = None,
        attributes: Iterable[str] | None = None,
        unique_attributes: Iterable[str] = (),
        auto_create_leads: bool = False,
        missing_lead_error: MissingLeadError = "MXInvalidEntityException",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure the emulator; nothing listens until `start`.

        `rate_limit`, `throttle_status` and `retry_after` are as in `set_rate_limit`, with
        None for no limit. `attributes`, when given, is the lead schema: updates naming
        anything else are rejected whole. `unique_attributes` (e.g. ``{"EmailAddress",
        "Phone"}``) may not hold the same non-empty value on two leads, ignoring case:
        an update giving a lead a value another lead holds is rejected whole with
        ``MXDuplicateEntryException`` (`add_lead` does not check). With `auto_create_leads`,
        updates to unknown leads create them; otherwise they are rejected with
        `missing_lead_error`. `port` 0 picks a free port. `clock` times the rate-limit window,
        so a test can slide it without sleeping.
        """
        if missing_lead_error not in _MISSING_LEAD_MESSAGES:
            raise ValueError(
                f"missing_lead_error must be one of {sorted(_MISSING_LEAD_MESSAGES)}, "
                f"got {missing_lead_error!r}"
            )
        self._access_key = access_key
        self._secret_key = secret_key
        self._attributes = None if attributes is None else frozenset(attributes)
        self._unique_attributes = frozenset(unique_attributes)
        self._auto_create_leads = auto_create_leads
        self._missing_lead_error: MissingLeadError = missing_lead_error
        self._port = port
        self._clock = clock
        self.fault_timeout_seconds = 30.0
        """How long the ``timeout`` fault keeps a request unanswered (ends early on `stop`)."""
        self.fault_drip_seconds = 5.0
        """How long the ``drip`` fault takes to send its body (the rest goes at once on `stop`)."""
        self.fault_huge_bytes = 1 << 30
        """The body size of the ``huge`` faults (1 GiB), streamed without being held whole."""

        self._state = threading.Condition()
        self._stopping = threading.Event()
        self._leads: dict[str, dict[str, str]] = {}
        self._log: list[RecordedRequest] = []
        self._held = False
        self._throttled_count = 0
        self._rate_limit: tuple[int, float] | None = None
        self._throttle_status = 429
        self._retry_after: float | None = None
        self._arrivals: deque[float] = deque()
        self._latency = (0.0, 0.0)
        self._latency_random = random.Random()  # noqa: S311 (simulated latency, not security)
        self._queued_faults: deque[_Answer] = deque()
        self._fault_rate = 0.0
        self._fault_kinds: tuple[str, ...] = ()
        self._fault_random = random.Random()  # noqa: S311 (simulated faults, not security)
        self._rejections: dict[str, list[tuple[Callable[[str], bool], str]]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        calls, window = (None, 5.0) if rate_limit is None else rate_limit
        self.set_rate_limit(calls, window, throttle_status, retry_after)

    # Lifecycle

    def start(self) -> Emulator:
        """Start listening on 127.0.0.1 in a daemon thread; returns self."""
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("an emulator can only be started once")
        self._server = _Server(("127.0.0.1", self._port), self)
        # serve_forever only notices shutdown() between polls, and every test stops an
        # emulator; a 10 ms poll keeps that cheap at the cost of idle wake-ups.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"lsq-emulator-{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and end every wait in progress (held, delayed, hanging). Idempotent."""
        with self._state:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self._state.notify_all()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:54321`` (after `start`)."""
        if self._server is None:
            raise RuntimeError("the emulator has not been started")
        return f"http://127.0.0.1:{self._server.server_port}"

    # Leads

    def add_lead(self, lead_id: str, **attributes: str) -> None:
        """Create (or replace) a lead with the given attribute values."""
        with self._state:
            self._leads[lead_id] = dict(attributes)

    def leads(self) -> dict[str, dict[str, str]]:
        """A copy of every lead, by id."""
        with self._state:
            return {lead_id: dict(values) for lead_id, values in self._leads.items()}

    def lead(self, lead_id: str) -> dict[str, str] | None:
        """A copy of one lead's attributes, or None when it does not exist."""
        with self._state:
            values = self._leads.get(lead_id)
            return None if values is None else dict(values)

    # Request log

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, in arrival order."""
        with self._state:
            return list(self._log)

    def clear_requests(self) -> None:
        """Empty the request log (`throttled_count` keeps counting)."""
        with self._state:
            self._log.clear()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until the log holds at least `count` requests; returns a copy of it.

        Requests are logged once processed, before any latency or hold delays their answer.
        Raises TimeoutError when fewer have arrived after `timeout` seconds.
        """
        with self._state:
            if not self._state.wait_for(lambda: len(self._log) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._log)} of {count} requests arrived within {timeout} s"
                )
            return list(self._log)

    @property
    def throttled_count(self) -> int:
        """How many requests have been answered as throttled since the emulator was made."""
        with self._state:
            return self._throttled_count

    # Behaviour

    def set_latency(self, low: float, high: float | None = None, seed: int | None = None) -> None:
        """Delay every answer by a uniform random time in [low, high] seconds (high = low)."""
        high = low if high is None else high
        if not 0 <= low <= high:
            raise ValueError(f"latency needs 0 <= low <= high, got {low} and {high}")
        with self._state:
            self._latency = (low, high)
            self._latency_random.seed(seed)

    def set_rate_limit(
        self,
        calls: int | None,
        window: float = 5.0,
        status: int = 429,
        retry_after: float | None = None,
    ) -> None:
        """Allow `calls` API requests per sliding `window` seconds (None = unlimited).

        Requests over the limit are answered with `status` (429, 200 or 403, all seen from
        LeadSquared) and an ``MXAPIRateLimitExceededException`` body; they do not count into
        the window. With `retry_after`, those answers also carry ``Retry-After: <seconds>``
        (``2`` for 2.0, ``1.5`` for 1.5); LeadSquared does not document one, so by default
        there is none. The window starts empty again.
        """
        if calls is not None and calls < 1:
            raise ValueError(f"rate limit calls must be at least 1 or None, got {calls}")
        if window <= 0:
            raise ValueError(f"rate limit window must be positive, got {window}")
        if status not in THROTTLE_STATUSES:
            raise ValueError(f"throttle status must be one of {sorted(THROTTLE_STATUSES)}")
        if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
            raise ValueError(f"retry_after must be a finite number >= 0 or None, got {retry_after}")
        with self._state:
            self._rate_limit = None if calls is None else (calls, window)
            self._throttle_status = status
            self._retry_after = retry_after
            self._arrivals.clear()

    def fail_next(self, count: int, kind: str) -> None:
        """Answer the next `count` authenticated, unthrottled API requests with fault `kind`.

        Kinds: ``"503"``, ``"502"``, ``"504"`` (gateway HTML page, no JSON), ``"drop"`` (close
        the connection without an answer), ``"timeout"`` (no answer for
        `fault_timeout_seconds`, then close), ``"mx500"`` (500 with a generic MX error),
        ``"drip"`` (200 and a success body, sent in pieces about 0.2 s apart over
        `fault_drip_seconds`: a per-read timeout never fires, a total-time budget does),
        ``"drip-head"`` (the same, but the status line and headers are what drips, then
        the connection closes),
        ``"huge"`` (200 and a success body of `fault_huge_bytes`, with its Content-Length),
        ``"huge-chunked"`` (the same in chunked encoding, so its size is never announced).
        Queued faults come before random ones and apply nothing.
        """
        _check_fault_kinds([kind])
        self._queue_answers(count, _FAULT_ANSWERS[kind])

    def answer_next(
        self,
        count: int,
        status: int,
        body: str | bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Answer the next `count` authenticated, unthrottled API requests with exactly this
        status, body and extra `headers`, applying nothing: for answers LeadSquared might give
        that no fault kind covers (``200`` with ``[]``, a redirect, say). Queued in turn with
        `fail_next`'s faults."""
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        raw = body.encode() if isinstance(body, str) else body
        answer = _Answer(
            status=status,
            outcome="fault",
            body=raw,
            content_type=content_type,
            headers=tuple(headers),
        )
        self._queue_answers(count, answer)

    def _queue_answers(self, count: int, answer: _Answer) -> None:
        if count < 0:
            raise ValueError(f"fault count must not be negative, got {count}")
        with self._state:
            self._queued_faults.extend([answer] * count)

    def set_fault_rate(self, rate: float, kinds: Sequence[str], seed: int | None = None) -> None:
        """Answer a random `rate` share of API requests with a fault drawn from `kinds`."""
        if not 0 <= rate <= 1:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        if rate > 0 and not kinds:
            raise ValueError("a positive fault rate needs at least one fault kind")
        _check_fault_kinds(kinds)
        with self._state:
            self._fault_rate = rate
            self._fault_kinds = tuple(kinds)
            self._fault_random.seed(seed)

    def hold(self) -> None:
        """Keep every answer back until `release` (requests are still processed and logged)."""
        with self._state:
            self._held = True

    def release(self) -> None:
        """Let held answers go."""
        with self._state:
            self._held = False
            self._state.notify_all()

    def reject_values(
        self,
        attribute: str,
        predicate: Callable[[str], bool],
        exception_type: str = "MXInvalidInputException",
    ) -> None:
        """Reject (HTTP 500, `exception_type`) updates setting `attribute` to a value for
        which `predicate` is true; the whole update is then rejected, as LeadSquared does."""
        with self._state:
            self._rejections.setdefault(attribute, []).append((predicate, exception_type))

    # Serving (called from the server's request threads)

    def _serve(self, incoming: _Incoming) -> _Answer:
        """Process and log one request, then wait as configured before it is answered."""
        with self._state:
            arrived = self._clock()
            api = incoming.path.rsplit("/", 1)[-1]
            answer = self._decide(incoming, api, arrived)
            self._log.append(
                RecordedRequest(
                    method=incoming.method,
                    api=api,
                    lead_id=incoming.query.get("leadid") or incoming.query.get("id") or None,
                    body=_parse_json(incoming.body),
                    status=answer.status,
                    outcome=answer.outcome,
                    post_updated_lead=incoming.query.get("postupdatedlead", "").lower() == "true",
                    arrived_at=arrived,
                )
            )
            self._state.notify_all()
            delay = self._next_latency()
        self._delay_answer(delay, answer)
        return answer

    def _decide(self, incoming: _Incoming, api: str, arrived: float) -> _Answer:
        endpoint = None
        if incoming.path == API_PREFIX + api:
            endpoint = _ENDPOINTS.get((incoming.method, api))
        if endpoint is None:
            return _error(404, "MXInvalidAPIException", "API not found")
        if not self._authenticated(incoming):
            return _error(
                401,
                "MXUnAuthorizedAccessException",
                "Invalid access key or secret key",
                outcome="unauthorized",
            )
        if self._rate_limit is not None and not self._admit(arrived, *self._rate_limit):
            self._throttled_count += 1
            calls, window = self._rate_limit
            throttled = _error(
                self._throttle_status,
                "MXAPIRateLimitExceededException",
                f"API calls exceeded the limit of {calls} in {window:g} second(s)",
                outcome="throttled",
            )
            if self._retry_after is None:
                return throttled
            return replace(
                throttled, headers=(("Retry-After", _retry_after_text(self._retry_after)),)
            )
        fault = self._next_fault()
        if fault is not None:
            return fault
        return endpoint(self, incoming)

    def _authenticated(self, incoming: _Incoming) -> bool:
        key_pairs = (
            (incoming.query.get("accesskey"), incoming.query.get("secretkey")),
            (incoming.header_access_key, incoming.header_secret_key),
        )
        return any(
            access == self._access_key and secret == self._secret_key
            for access, secret in key_pairs
        )

    def _admit(self, arrived: float, calls: int, window: float) -> bool:
        while self._arrivals and self._arrivals[0] <= arrived - window:
            self._arrivals.popleft()
        if len(self._arrivals) >= calls:
            return False
        self._arrivals.append(arrived)
        return True

    def _next_fault(self) -> _Answer | None:
        if self._queued_faults:
            return self._queued_faults.popleft()
        if self._fault_rate > 0 and self._fault_random.random() < self._fault_rate:
            return _FAULT_ANSWERS[self._fault_random.choice(self._fault_kinds)]
        return None

    def _next_latency(self) -> float:
        low, high = self._latency
        return low if low == high else self._latency_random.uniform(low, high)

    def _delay_answer(self, delay: float, answer: _Answer) -> None:
        # Every wait ends on stop(), so a test's teardown never waits out a hang.
        if delay > 0:
            self._stopping.wait(delay)
        with self._state:
            self._state.wait_for(lambda: not self._held or self._stopping.is_set())
        if answer.action == "timeout":
            self._stopping.wait(self.fault_timeout_seconds)

    def _body_pieces(self, answer: _Answer) -> tuple[list[bytes], float]:
        """The pieces to send an answer's body in, and the pause between them."""
        if answer.action == "drip":
            return _drip_pieces(answer.body, self.fault_drip_seconds)
        return [answer.body], 0.0

    def _huge_pieces(self) -> Iterator[bytes]:
        """A success body of `fault_huge_bytes`, block by block; ends early on `stop`."""
        filler = max(0, self.fault_huge_bytes - len(_HUGE_HEAD) - len(_HUGE_TAIL))
        yield _HUGE_HEAD
        while filler > 0 and not self._stopping.is_set():
            size = min(filler, len(_HUGE_BLOCK))
            filler -= size
            yield _HUGE_BLOCK[:size]  # the block itself, not a copy, when whole
        yield _HUGE_TAIL

    def _write_pieces(
        self, pieces: list[bytes], pause: float, write: Callable[[bytes], Any]
    ) -> None:
        for index, piece in enumerate(pieces):
            # After stop() the wait returns at once, so the rest of a drip goes out together.
            if index:
                self._stopping.wait(pause)
            write(piece)

    def _lead_update(self, incoming: _Incoming) -> _Answer:
        update = _parse_update(incoming)
        if isinstance(update, _Answer):
            return update
        lead_id, fields = update
        rejection = self._rejection(lead_id, fields)
        if rejection is not None:
            return rejection
        self._leads.setdefault(lead_id, {}).update(fields)
        return _SUCCESS

    def _rejection(self, lead_id: str, fields: dict[str, str]) -> _Answer | None:
        """The error for an update this lead's state or schema refuses; None to apply it."""
        if lead_id not in self._leads and not self._auto_create_leads:
            error = self._missing_lead_error
            return _error(500, error, _MISSING_LEAD_MESSAGES[error])
        if self._attributes is not None:
            unknown = [name for name in fields if name not in self._attributes]
            if unknown:
                return _error(
                    500,
                    "MXUnknownAttributeException",
                    "Attribute(s) does not exist - " + ", ".join(unknown),
                )
        for attribute, value in fields.items():
            for predicate, exception_type in self._rejections.get(attribute, []):
                if predicate(value):
                    return _error(500, exception_type, f"Invalid value for attribute {attribute}")
        duplicate = self._duplicated_attribute(lead_id, fields)
        if duplicate is not None:
            return _error(
                500, "MXDuplicateEntryException", f"A Lead with same {duplicate} already exists."
            )
        return None

    def _duplicated_attribute(self, lead_id: str, fields: dict[str, str]) -> str | None:
        """The first unique attribute this update would set to another lead's value."""
        for attribute, value in fields.items():
            # Clearing a value never collides: many leads have no phone or email at all.
            if attribute not in self._unique_attributes or not value:
                continue
            wanted = value.casefold()
            for other_id, other in self._leads.items():
                if other_id != lead_id and other.get(attribute, "").casefold() == wanted:
                    return attribute
        return None

    def _get_by_id(self, incoming: _Incoming) -> _Answer:
        lead_id = incoming.query.get("id", "")
        if not lead_id:
            return _error(500, "MXMandatoryAttributeMissingException", "id is mandatory")
        values = self._leads.get(lead_id)
        found = [] if values is None else [{"ProspectID": lead_id, **values}]
        return _json_answer(200, found, "success")


_ENDPOINTS: Final[dict[tuple[str, str], Callable[[Emulator, _Incoming], _Answer]]] = {
    ("POST", "Lead.Update"): Emulator._lead_update,
    ("GET", "Leads.GetById"): Emulator._get_by_id,
}


def _check_fault_kinds(kinds: Iterable[str]) -> None:
    unknown = sorted(set(kinds) - FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; expected some of {sorted(FAULT_KINDS)}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds where
        # DNS is slow; a loopback test server has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            # A client that gave up (the point of hold, latency and timeouts) is expected.
            logger.debug("emulator: a client went away before its answer")
            return
        logger.exception("emulator: failed to answer a request")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients use a connection pool
    server_version = "LeadSquaredEmulator"
    sys_version = ""
    # Headers and body go out in two writes; with Nagle on, each answer would wait for the
    # client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # The request line in `args` carries the secret key, so only method and path are kept.
        path = urlsplit(getattr(self, "path", "")).path
        logger.debug("emulator: %s %s", getattr(self, "command", ""), path)

    def _dispatch(self) -> None:
        server = self.server
        if not isinstance(server, _Server):
            raise TypeError("the emulator handler only runs inside an emulator server")
        emulator = server.emulator
        answer = emulator._serve(self._incoming())
        if answer.action in ("drop", "timeout"):
            self.close_connection = True
            return
        if answer.action in ("huge", "huge-chunked"):
            self._send_huge(emulator, chunked=answer.action == "huge-chunked")
            return
        if answer.action == "drip-head":
            self._send_dripped_head(emulator, answer)
            return
        pieces, pause = emulator._body_pieces(answer)
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(sum(map(len, pieces))))
            self.end_headers()
            emulator._write_pieces(pieces, pause, self.wfile.write)
        except OSError:
            # The client went away while its answer was held, delayed or dripping.
            self.close_connection = True

    def _send_dripped_head(self, emulator: Emulator, answer: _Answer) -> None:
        head = _dripped_head(answer, emulator.fault_drip_seconds)
        pieces, pause = _drip_pieces(head, emulator.fault_drip_seconds)
        try:
            emulator._write_pieces(pieces, pause, self.wfile.write)
            self.wfile.write(answer.body)
        except OSError:
            pass  # the client gave up on it, as it should
        self.close_connection = True

    def _send_huge(self, emulator: Emulator, chunked: bool) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(emulator.fault_huge_bytes))
            # Said up front: a client that read the whole body would otherwise send its next
            # request on this connection, and race the server closing it.
            self.send_header("Connection", "close")
            self.end_headers()
            for piece in emulator._huge_pieces():
                if chunked:
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading, as it should
        # Cut short by stop(), or not: the connection cannot carry another answer in step.
        self.close_connection = True

    def _incoming(self) -> _Incoming:
        url = urlsplit(self.path)
        query: dict[str, str] = {}
        for name, value in parse_qsl(url.query, keep_blank_values=True):
            query.setdefault(name.lower(), value)
        # The body is always read, even when unused, so a kept-alive connection stays in step.
        return _Incoming(
            method=self.command,
            path=url.path,
            query=query,
            header_access_key=self.headers.get("x-LSQ-AccessKey"),
            header_secret_key=self.headers.get("x-LSQ-SecretKey"),
            content_type=self.headers.get("Content-Type", ""),
            body=self.rfile.read(self._content_length()),
        )

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            return 0


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m connector.testing.emulator"
) -> int:
    """Serve an emulator on loopback until Ctrl-C, printing its URL and (fake) keys."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a LeadSquared API emulator on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8089, help="port to listen on; 0 = any free")
    parser.add_argument(
        "--lead", action="extend", nargs="+", default=[], metavar="ID", help="leads that exist"
    )
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument(
        "--rate-limit", type=int, default=25, metavar="CALLS", help="calls per window; 0 = no limit"
    )
    parser.add_argument("--window", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--throttle-status", type=int, default=429, choices=[429, 200, 403])
    parser.add_argument(
        "--retry-after",
        type=float,
        metavar="SECONDS",
        help="send Retry-After with throttled answers (none by default, as LeadSquared)",
    )
    parser.add_argument(
        "--unique-attribute",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="attributes no two leads may share, e.g. EmailAddress Phone",
    )
    parser.add_argument(
        "--auto-create-leads", action="store_true", help="updates to unknown leads create them"
    )
    parser.add_argument(
        "--missing-lead-error",
        default="MXInvalidEntityException",
        choices=sorted(_MISSING_LEAD_MESSAGES),
        help="the ExceptionType for an update to an unknown lead",
    )
    args = parser.parse_args(argv)

    emulator = Emulator(
        access_key=args.access_key,
        secret_key=args.secret_key,
        rate_limit=(args.rate_limit, args.window) if args.rate_limit > 0 else None,
        throttle_status=args.throttle_status,
        retry_after=args.retry_after,
        unique_attributes=args.unique_attribute,
        auto_create_leads=args.auto_create_leads,
        missing_lead_error=args.missing_lead_error,
        port=args.port,
    )
    for lead_id in args.lead:
        emulator.add_lead(lead_id)
    with emulator:
        print(f"LeadSquared emulator listening on {emulator.url}", flush=True)
        print(f"access key: {args.access_key}", flush=True)
        print(f"secret key: {args.secret_key}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
