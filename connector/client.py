"""LeadSquared over HTTP: Lead.Update.

httpx errors and LeadSquared's replies are translated here, once, into the connector's
exceptions. The keys are added by a transport wrapper below httpx's own logging, so the URLs
that httpx logs and puts in its exceptions never hold them.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx
from pydantic import SecretStr

from connector.bulk import BULK_API
from connector.config import LeadSquaredConfig, Match, key_problem
from connector.errors import (
    AmbiguousError,
    CallAbandonedError,
    CallCancelledError,
    FatalRunError,
    LeadRejectedError,
    LeadSquaredError,
    RetriableError,
    ThrottledError,
    UnreachableError,
)
from connector.instrumentation import Instrumentation
from connector.ratelimit import Slot
from connector.responses import Classified, Expect, Outcome, classify
from connector.schema import MAX_LEAD_ID_LENGTH
from connector.values import to_payload

log = logging.getLogger(__name__)

USER_AGENT = "lsq-sync/0.1"

# LeadSquared's answers are a few hundred bytes; a bigger one is a fault, and reading it whole
# would let a broken proxy or a hostile host fill the process's memory.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
# How often a call's waiter looks at the stop event (which cannot wake it) while in flight.
_STOP_POLL_SECONDS = 0.1
_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)$")


class _RedactedLogs(logging.Filter):
    """httpcore's DEBUG log quotes each answer's headers, which a redirect's Location or a
    server echoing the request fills with the keys: every live client's keys are masked there.
    """

    def __init__(self) -> None:
        super().__init__()
        self._clients: weakref.WeakSet[LeadSquaredClient] = weakref.WeakSet()
        self._lock = threading.Lock()

    def watch(self, client: LeadSquaredClient) -> None:
        with self._lock:
            self._clients.add(client)

    def forget(self, client: LeadSquaredClient) -> None:
        with self._lock:
            self._clients.discard(client)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            clients = list(self._clients)
        if clients:
            text = record.getMessage()
            for client in clients:
                text = client.redact(text)
            record.msg, record.args = text, None
        return True


_REDACTED_LOGS = _RedactedLogs()
for _name in ("httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy"):
    logging.getLogger(_name).addFilter(_REDACTED_LOGS)


class Limiter(Protocol):
    """Paces calls; see connector.ratelimit.AccountLimiter."""

    def acquire(self) -> Slot | None: ...
    def going_out(self, slot: Slot) -> Slot | None: ...
    def answered(self, slot: Slot) -> None: ...
    def throttled(self, retry_after: float | None) -> None: ...


class _Credentials(httpx.BaseTransport):
    def __init__(
        self, inner: httpx.BaseTransport, access_key: str, secret_key: str, in_headers: bool
    ) -> None:
        self._inner = inner
        self._keys = (access_key, secret_key)
        self._in_headers = in_headers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        access_key, secret_key = self._keys
        url, headers = request.url, request.headers.copy()
        if self._in_headers:
            headers["x-LSQ-AccessKey"] = access_key
            headers["x-LSQ-SecretKey"] = secret_key
        else:
            url = url.copy_merge_params({"accessKey": access_key, "secretKey": secret_key})
        signed = httpx.Request(
            request.method,
            url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return self._inner.handle_request(signed)

    def close(self) -> None:
        self._inner.close()


class LeadSquaredClient:
    """Every call waits for its slot from `limiter` (whatever its endpoint),
    and a throttled answer holds back the whole account. Retrying belongs to the caller.

    Thread-safe: several calls may be in flight at once.
    """

    def __init__(
        self,
        config: LeadSquaredConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        limiter: Limiter | None = None,
        bulk_limiter: Limiter | None = None,
        stop: threading.Event | None = None,
        drain_seconds: float = 10.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        events: Instrumentation | None = None,
    ) -> None:
        """`stop`, once set, gives each call in flight `drain_seconds` more to be answered;
        after that it is abandoned (CallAbandonedError) and its outcome ignored. Every call
        that goes out is reported to `events`."""
        _refuse_unsendable_keys(config)
        access_key = config.access_key.get_secret_value()
        secret_key = config.secret_key.get_secret_value()
        # Longest first, so that a form holding another is replaced whole; in any case, as
        # servers percent-encode in lower case too (%2f).
        forms = {form for key in (access_key, secret_key) for form in _written_forms(key)}
        self._secrets = re.compile(
            "|".join(map(re.escape, sorted(forms, key=len, reverse=True))), re.IGNORECASE
        )
        _REDACTED_LOGS.watch(self)
        self._host = self.redact(config.host)
        self._post_updated_lead = config.post_updated_lead
        self._limiter = limiter
        self._bulk_limiter = bulk_limiter
        self._base = config.host
        self._stop = stop
        self._drain_seconds = drain_seconds
        self._max_answer_bytes = max_answer_bytes
        self._events = events or Instrumentation()
        timeouts = config.timeout_seconds
        self._connect_timeout = min(timeouts.connect, timeouts.total)
        self._total_timeout = timeouts.total
        self._http = httpx.Client(
            base_url=f"{config.host}/v2/LeadManagement.svc/",
            transport=_Credentials(
                transport or httpx.HTTPTransport(),
                access_key,
                secret_key,
                in_headers=config.auth == "header",
            ),
            timeout=httpx.Timeout(
                connect=self._connect_timeout,
                read=min(timeouts.read, timeouts.total),
                write=min(timeouts.read, timeouts.total),
                pool=timeouts.total,
            ),
            # Kept alive longer than a rate window, so that each window's calls reuse
            # connections instead of reaching LeadSquared late behind a new handshake.
            limits=httpx.Limits(max_connections=config.max_in_flight + 2, keepalive_expiry=30.0),
            # Never compressed: a few hundred bytes of gzip can expand to gigabytes, and
            # httpx would expand each piece whole, before any cap could look at it.
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Accept-Encoding": "identity",
            },
        )

    def __repr__(self) -> str:
        return f"LeadSquaredClient(base_url={str(self._http.base_url)!r})"

    def __enter__(self) -> LeadSquaredClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        _REDACTED_LOGS.forget(self)

    def update_lead(self, lead_id: str, update: Mapping[str, str | None]) -> None:
        """Set exactly these attributes on the lead; raises the connector's errors."""
        params = {"leadId": lead_id}
        if self._post_updated_lead:
            params["postUpdatedLead"] = "true"
        self._call("POST", "Lead.Update", params, to_payload(update), Expect.STATUS_SUCCESS)

    def find_leads(self, match: Match, value: str) -> list[str]:
        """The ProspectIds of the leads whose `match` attribute is `value` (none, one, more)."""
        if match == "EmailAddress":
            api, params = "Leads.GetByEmailaddress", {"emailaddress": value}
        elif match == "Phone":
            api, params = "RetrieveLeadByPhoneNumber", {"phone": value}
        else:
            raise ValueError(f"leads are not looked up by {match}")
        found = self._call("GET", api, params, None, Expect.LIST).body
        ids = [_prospect_id(lead) for lead in found]
        if None in ids:
            # The same answer would come again: the lead waits for new values or a retry.
            raise LeadRejectedError(f"{api}: a lead in the answer has no usable ProspectID")
        return sorted({lead_id for lead_id in ids if lead_id is not None})

    def lead_fields(self) -> Any:
        """LeadsMetaData.Get's answer: the account's lead fields, as a JSON list."""
        return self._call("GET", "LeadsMetaData.Get", {}, None, Expect.LIST).body

    def account_host(self) -> str | None:
        """The API host UserByAccessKey.Get names for these keys' account, if it names one."""
        url = f"{self._base}/v2/Authentication.svc/UserByAccessKey.Get"
        body = self._call("GET", url, {}, None, Expect.OBJECT, api="UserByAccessKey.Get").body
        urls = body.get("LSQCommonServiceURLs")
        host = urls.get("api") if isinstance(urls, dict) else None
        return host if isinstance(host, str) and host.strip() else None

    def bulk_update(self, search_by: str, updates: Mapping[str, Mapping[str, str | None]]) -> Any:
        """Lead/Bulk/UpdateV2: each lead, found by its `search_by` value (the key of
        `updates`), gets its own attributes. The answer's body, read by connector.bulk."""
        leads = [
            {"Fields": [{"Attribute": search_by, "Value": key}, *to_payload(update)]}
            for key, update in updates.items()
        ]
        payload = {
            "SearchByKey": search_by,
            # A lead that does not exist is reported, never created.
            "Options": {"PushNonExistentLeadsToUnProcessedList": True},
            "LeadPropertiesList": leads,
        }
        return self._call("POST", BULK_API, {}, payload, Expect.BULK_REPORT).body

    def redact(self, text: str) -> str:
        """`text` with every way a key can be written (raw, URL-encoded, escaped) masked."""
        return self._secrets.sub("***", text)

    def _call(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        payload: Any,
        expect: Expect,
        *,
        api: str | None = None,
    ) -> Classified:
        """`path` relative to LeadManagement.svc, or a whole URL; `api` names it in messages
        and events (the path by default)."""
        api = api or path
        limiters = [self._limiter] if self._limiter is not None else []
        if path == BULK_API and self._bulk_limiter is not None:
            # The bulk window first: a slot in the account's window is not held while
            # waiting for one in the bulk window, which is the scarcer.
            limiters.insert(0, self._bulk_limiter)
        sent = self._slots(api, limiters)
        started = time.monotonic()
        outcome = "error"
        try:
            try:
                status, headers, text = self._until_drained(
                    api, lambda: self._exchange(method, path, api, params, payload)
                )
            except (httpx.TransportError, httpx.InvalidURL, UnicodeEncodeError) as exc:
                raise self._translate(api, exc) from None
            # Only answered calls are timed: a timeout's length is the client's, not the way's.
            for limiter, slot in sent:
                limiter.answered(slot)
            result = classify(status, headers, self.redact(text), expect=expect)
            outcome = result.outcome.value
            # Before any event: the whole account holds back at once, however slow a hook is.
            if result.outcome is Outcome.THROTTLED:
                for limiter in limiters:
                    limiter.throttled(result.retry_after)
        except LeadSquaredError as exc:
            outcome = _unanswered(exc)
            raise
        finally:
            self._events.call_made(api, outcome, time.monotonic() - started)
        if result.outcome is Outcome.THROTTLED:
            self._events.throttled(api, result.retry_after)
        if result.outcome is Outcome.SUCCESS:
            return result
        raise _error_for(result, self.redact(f"{api}: {result.message}"))

    def _slots(self, api: str, limiters: list[Limiter]) -> list[tuple[Limiter, Slot]]:
        """A slot from each limiter, in order, each as it goes out."""
        slots = []
        for limiter in limiters:
            slot = limiter.acquire()
            if slot is None:
                raise CallCancelledError(f"{api} not called: the connector is stopping")
            slots.append((limiter, slot))
        # Only once every slot is taken: a bulk slot that then waited for the account's
        # window is moved to when the call really goes out.
        sent = []
        for limiter, slot in slots:
            going = limiter.going_out(slot)
            if going is None:
                raise CallCancelledError(f"{api} not called: the connector is stopping")
            sent.append((limiter, going))
        return sent

    def _translate(
        self, api: str, exc: httpx.TransportError | httpx.InvalidURL | UnicodeEncodeError
    ) -> LeadSquaredError:
        """The connector's error for a call that got no answer. Only the exception's type and
        redacted text are kept: its chain holds the request, keys and all."""
        if isinstance(exc, httpx.ConnectTimeout):
            return UnreachableError(
                f"cannot connect to {self._host}: no answer within "
                f"{self._connect_timeout:g} s (leadsquared.timeout_seconds.connect)"
            )
        if isinstance(exc, httpx.ConnectError):
            return UnreachableError(self._connect_failure(exc))
        if isinstance(exc, httpx.TimeoutException):
            return RetriableError(f"{api} timed out ({type(exc).__name__})")
        if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol | httpx.InvalidURL):
            # The request could not even be built: every call would fail the same way.
            return FatalRunError(
                f"{api} could not be sent: {self.redact(str(exc)) or type(exc).__name__} "
                "(check leadsquared.host, access_key and secret_key)"
            )
        if isinstance(exc, UnicodeEncodeError):
            return FatalRunError(
                f"{api} could not be sent: a key holds a character an HTTP header cannot carry "
                "(check leadsquared.access_key and secret_key)"
            )
        detail = self.redact(str(exc)) or type(exc).__name__
        return RetriableError(f"{api} failed: {detail}")

    def _connect_failure(self, exc: httpx.ConnectError) -> str:
        cause = _socket_error(exc)
        if isinstance(cause, ssl.SSLError):
            detail = _SSL_LOCATION.sub("", getattr(cause, "verify_message", None) or str(cause))
            return f"TLS handshake with {self._host} failed: {self.redact(detail)}"
        if isinstance(cause, socket.gaierror):
            reason = f"the host name does not resolve ({cause.strerror})"
        elif isinstance(cause, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror[:1].lower() + cause.strerror[1:]
        else:
            reason = self.redact(str(exc)) or type(exc).__name__
        return f"cannot connect to {self._host}: {reason}"

    def _until_drained(self, api: str, exchange: Callable[[], _Answer]) -> _Answer:
        """Run the exchange on its own daemon thread, and wait for it: until it ends, until
        the total timeout, or until `drain_seconds` after the stop event is set.

        httpx bounds each read, not the whole call: an answer's head sent a byte at a time
        would hold it for as long as the server likes. And a blocked httpx read cannot be
        interrupted from another thread, so such a call is left behind rather than waited
        out; a daemon thread does not hold up the process's exit.
        """
        call = _InFlight(exchange)
        threading.Thread(target=call.run, name=f"lsq-call-{api}", daemon=True).start()
        deadline = time.monotonic() + self._total_timeout
        while not call.settled.wait(_STOP_POLL_SECONDS):
            if self._stop is not None and self._stop.is_set():
                if not call.settled.wait(self._drain_seconds):
                    raise CallAbandonedError(
                        f"{api}: no answer within sync.drain_seconds ({self._drain_seconds:g} s) "
                        "of the stop; the lead is sent again next run"
                    )
                break
            if time.monotonic() > deadline:
                raise RetriableError(
                    f"{api}: no complete answer within {self._total_timeout:g} s "
                    "(leadsquared.timeout_seconds.total); abandoned"
                )
        return call.outcome()

    def _exchange(
        self, method: str, path: str, api: str, params: dict[str, str], payload: Any
    ) -> _Answer:
        """One request, bounded in total time as well as per connect and per read, and in size.

        httpx's timeouts bound each wait, so an answer that trickles in a few bytes at a time
        would never end; the body is read in chunks against a deadline instead.
        """
        deadline = time.monotonic() + self._total_timeout
        with self._http.stream(method, path, params=params, json=payload) as response:
            declared = _declared_length(response.headers)
            if declared is not None and declared > self._max_answer_bytes:
                raise self._too_large(api, f"{declared:,} bytes announced")
            encoding = response.headers.get("content-encoding", "identity")
            if encoding.strip().lower() != "identity":
                raise RetriableError(
                    f"{api}: the answer came with Content-Encoding {encoding}, although none "
                    "was accepted; abandoned unread"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                if len(body) + len(chunk) > self._max_answer_bytes:
                    raise self._too_large(api, "more than that arrived")
                body += chunk
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(
                        f"no complete answer within {self._total_timeout:g} s", request=None
                    )
            return response.status_code, response.headers, body.decode(errors="replace")

    def _too_large(self, api: str, detail: str) -> RetriableError:
        # Leaving the stream unread closes its connection rather than reading on.
        return RetriableError(
            f"{api}: the answer is larger than the {self._max_answer_bytes:,} bytes accepted "
            f"({detail}); abandoned unread"
        )


_Answer = tuple[int, httpx.Headers, str]


class _InFlight:
    """One exchange run on its own thread: its answer or its exception, once settled."""

    def __init__(self, exchange: Callable[[], _Answer]) -> None:
        self._exchange = exchange
        self.settled = threading.Event()
        self._result: _Answer | BaseException = RuntimeError("read before it was settled")

    def run(self) -> None:
        try:
            self._result = self._exchange()
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting thread)
            self._result = exc
        finally:
            self.settled.set()

    def outcome(self) -> _Answer:
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result


def _prospect_id(lead: Any) -> str | None:
    """A lookup's lead: LeadSquared spells the key ProspectID, and ProspectId elsewhere."""
    if not isinstance(lead, dict):
        return None
    value = lead.get("ProspectID", lead.get("ProspectId"))
    usable = isinstance(value, str) and value.strip() and len(value) <= MAX_LEAD_ID_LENGTH
    return value if usable else None


def _refuse_unsendable_keys(config: LeadSquaredConfig) -> None:
    """Config validation refuses such keys; a caller may have built the config without it.
    Sent anyway, they fail inside h11, whose error and debug log quote the key escaped."""
    for name in ("access_key", "secret_key"):
        key: SecretStr = getattr(config, name)
        problem = key_problem(key.get_secret_value(), in_header=config.auth == "header")
        if problem:
            raise FatalRunError(f"leadsquared.{name} {problem}")


def _written_forms(key: str) -> set[str]:
    """Every way a key may be written into a URL, a header error or a log line."""
    return {
        key,
        quote(key, safe=""),
        quote(key),
        quote_plus(key),
        repr(key)[1:-1],  # as Python escapes it in a str's repr
        repr(key.encode())[2:-1],  # as h11 quotes an illegal header value: b'...'
        json.dumps(key)[1:-1],
        json.dumps(key, ensure_ascii=False)[1:-1],
    }


def _error_for(result: Classified, message: str) -> LeadSquaredError:
    """The connector's error for an answer that is not a success."""
    match result.outcome:
        case Outcome.THROTTLED:
            return ThrottledError(message, delay=result.retry_after)
        case Outcome.AMBIGUOUS:
            return AmbiguousError(message, delay=result.retry_after)
        case Outcome.REJECTED:
            return LeadRejectedError(
                message,
                exception_type=result.exception_type,
                unknown_attributes=result.unknown_attributes,
            )
        case Outcome.FATAL:
            return FatalRunError(message)
    return RetriableError(message, delay=result.retry_after)


def _unanswered(exc: LeadSquaredError) -> str:
    """The outcome reported for a call that got no answer to classify."""
    if isinstance(exc, CallAbandonedError):
        return "abandoned"
    if isinstance(exc, UnreachableError):
        return "unreachable"
    if isinstance(exc, FatalRunError):
        return Outcome.FATAL.value
    return Outcome.TRANSIENT.value


def _socket_error(exc: BaseException) -> OSError | None:
    """The OSError (refused, DNS, TLS, ...) that httpx's and httpcore's errors wrap, if any.
    They chain it as a cause or only as the context, depending on the layer."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _declared_length(headers: httpx.Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None
