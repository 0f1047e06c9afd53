"""connector.client.LeadSquaredClient over httpx.MockTransport: what is sent, what is raised.

Also the promise that no key ever reaches a log line, an exception or a repr.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import ssl
import threading
import traceback
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

import httpx
import pytest
from pydantic import SecretStr

from connector.client import MAX_ANSWER_BYTES, LeadSquaredClient
from connector.config import LeadSquaredConfig
from connector.errors import (
    AmbiguousError,
    CallAbandonedError,
    FatalRunError,
    LeadRejectedError,
    LeadSquaredError,
    RetriableError,
    ThrottledError,
    UnreachableError,
)
from connector.testing.emulator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator

ACCESS_KEY = "u$AK/9+x=="
SECRET_KEY = "$ecret/Key+with=signs$"
HOST = "https://api-in21.leadsquared.com"
SUCCESS = {"Status": "Success", "Message": {"AffectedRows": 1}}

Handler = Callable[[httpx.Request], httpx.Response]


def secret_forms() -> list[str]:
    return [
        form for key in (ACCESS_KEY, SECRET_KEY) for form in (key, quote(key, safe=""), quote(key))
    ]


def make_client(handler: Handler, **settings: Any) -> LeadSquaredClient:
    config = LeadSquaredConfig(
        host=HOST,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        **settings,
    )
    return LeadSquaredClient(config, transport=httpx.MockTransport(handler))


class Recorder:
    """A MockTransport handler that answers one fixed response and keeps every request."""

    def __init__(
        self,
        status: int = 200,
        body: Any = SUCCESS,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.body, str):
            return httpx.Response(self.status, text=self.body, headers=self.headers)
        return httpx.Response(self.status, json=self.body, headers=self.headers)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@pytest.fixture(autouse=True)
def debug_logging(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with every logger at DEBUG, and checks no key was logged."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "connector"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    for form in secret_forms():
        assert form not in caplog.text
        for record in caplog.records:
            assert form not in repr(record.__dict__)


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode("ascii"), keep_blank_values=True)


# -- what is sent ----------------------------------------------------------------------------


def test_update_posts_the_payload_to_lead_update() -> None:
    recorder = Recorder()
    with make_client(recorder) as client:
        client.update_lead("L-1", {"mx_City": "Pune", "Phone": None})
    request = recorder.last
    assert request.method == "POST"
    assert request.url.host == "api-in21.leadsquared.com"
    assert request.url.path == "/v2/LeadManagement.svc/Lead.Update"
    assert query(request)["leadId"] == ["L-1"]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == [
        {"Attribute": "Phone", "Value": ""},
        {"Attribute": "mx_City", "Value": "Pune"},
    ]


def test_keys_go_url_encoded_in_the_query_by_default() -> None:
    recorder = Recorder()
    with make_client(recorder) as client:
        client.update_lead("L1", {"mx_City": "Pune"})
    request = recorder.last
    raw = request.url.query.decode("ascii")
    # Every reserved character encoded, so `$ / + =` cannot be misread by the server.
    assert f"accessKey={quote(ACCESS_KEY, safe='')}" in raw.split("&")
    assert f"secretKey={quote(SECRET_KEY, safe='')}" in raw.split("&")
    params = query(request)
    assert params["accessKey"] == [ACCESS_KEY]
    assert params["secretKey"] == [SECRET_KEY]
    assert "x-lsq-accesskey" not in request.headers
    assert "x-lsq-secretkey" not in request.headers


def test_keys_go_in_headers_when_configured() -> None:
    recorder = Recorder()
    with make_client(recorder, auth="header") as client:
        client.update_lead("L1", {"mx_City": "Pune"})
    request = recorder.last
    assert request.headers["x-LSQ-AccessKey"] == ACCESS_KEY
    assert request.headers["x-LSQ-SecretKey"] == SECRET_KEY
    params = query(request)
    assert "accessKey" not in params
    assert "secretKey" not in params
    assert params["leadId"] == ["L1"]


@pytest.mark.parametrize(("configured", "expected"), [(False, None), (True, ["true"])])
def test_post_updated_lead_only_when_configured(
    configured: bool, expected: list[str] | None
) -> None:
    recorder = Recorder()
    with make_client(recorder, post_updated_lead=configured) as client:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert query(recorder.last).get("postUpdatedLead") == expected


# -- what is raised --------------------------------------------------------------------------


def mx(exception_type: str, message: str) -> dict[str, str]:
    return {"Status": "Error", "ExceptionType": exception_type, "ExceptionMessage": message}


RATE_LIMITED = mx("MXAPIRateLimitExceededException", "API calls exceeded the limit of 25 in 5")


@pytest.mark.parametrize(
    ("status", "headers", "delay"),
    [(429, {"Retry-After": "7"}, 7.0), (200, {}, None), (403, {"Retry-After": "1.5"}, 1.5)],
)
def test_throttled_carries_the_retry_after_delay(
    status: int, headers: dict[str, str], delay: float | None
) -> None:
    with (
        make_client(Recorder(status, RATE_LIMITED, headers)) as client,
        pytest.raises(ThrottledError) as raised,
    ):
        client.update_lead("L1", {"mx_City": "Pune"})
    assert raised.value.delay == delay


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retriable_not_throttled(status: int) -> None:
    page = f"<html><body><h1>{status} Service Unavailable</h1></body></html>"
    with (
        make_client(Recorder(status, page, {"Content-Type": "text/html"})) as client,
        pytest.raises(RetriableError) as raised,
    ):
        client.update_lead("L1", {"mx_City": "Pune"})
    assert type(raised.value) is RetriableError
    assert str(status) in str(raised.value)


def raising(error: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        # The worst case: a transport error that quotes the whole signed URL and headers.
        raise error(f"failed on {request.url} with {dict(request.headers)}", request=request)

    return handler


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.PoolTimeout,
        httpx.ReadError,
        httpx.RemoteProtocolError,
    ],
)
@pytest.mark.parametrize("auth", ["query", "header"])
def test_timeouts_and_connection_errors_are_retriable(
    error: type[httpx.TransportError], auth: str
) -> None:
    with make_client(raising(error), auth=auth) as client, pytest.raises(RetriableError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert type(raised.value) is RetriableError
    assert "Lead.Update" in str(raised.value)
    assert_no_secret(raised.value)


@pytest.mark.parametrize("error", [httpx.ConnectTimeout, httpx.ConnectError])
@pytest.mark.parametrize("auth", ["query", "header"])
def test_failing_to_connect_says_leadsquared_is_unreachable_naming_the_host(
    error: type[httpx.TransportError], auth: str
) -> None:
    with (
        make_client(raising(error), auth=auth) as client,
        pytest.raises(UnreachableError) as raised,
    ):
        client.update_lead("L1", {"mx_City": "Pune"})
    assert str(raised.value).startswith(f"cannot connect to {HOST}: ")
    assert_no_secret(raised.value)


def test_the_generic_mx_exception_is_ambiguous() -> None:
    body = mx("MXException", "There was an error processing the request.")
    with make_client(Recorder(500, body)) as client, pytest.raises(AmbiguousError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert "MXException" in str(raised.value)


@pytest.mark.parametrize(
    "body", [[], {}, {"Status": "Pending"}, "Success"], ids=["list", "object", "pending", "string"]
)
def test_an_update_answered_200_without_status_success_is_not_a_success(body: Any) -> None:
    # Recorder sends a str as it is: a JSON string body must be encoded here.
    recorder = Recorder(200, json.dumps(body) if isinstance(body, str) else body)
    with make_client(recorder) as client, pytest.raises(RetriableError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert type(raised.value) is RetriableError
    assert "Status: Success" in str(raised.value)


def test_unknown_attributes_are_rejected_with_their_names() -> None:
    body = mx("MXUnknownAttributeException", "Attribute(s) does not exist - mx_A, mx_B")
    with (
        make_client(Recorder(500, body)) as client,
        pytest.raises(LeadRejectedError) as raised,
    ):
        client.update_lead("L1", {"mx_A": "1", "mx_B": "2", "Phone": "3"})
    assert raised.value.unknown_attributes == ("mx_A", "mx_B")
    assert raised.value.exception_type == "MXUnknownAttributeException"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, mx("MXInvalidEntityException", "Lead does not exist in the system")),
        (500, mx("MXDuplicateEntryException", "Phone already exists")),
        (400, mx("MXInvalidInputException", "Request body is not as per specification")),
        (200, {"Status": "Error", "ExceptionMessage": "failed"}),
    ],
)
def test_permanent_errors_are_rejections(status: int, body: dict[str, str]) -> None:
    with (
        make_client(Recorder(status, body)) as client,
        pytest.raises(LeadRejectedError) as raised,
    ):
        client.update_lead("L1", {"mx_City": "Pune"})
    assert raised.value.exception_type == body.get("ExceptionType")
    assert raised.value.unknown_attributes == ()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, mx("MXUnAuthorizedAccessException", "Invalid access key or secret key")),
        (404, "<html>Not Found</html>"),
    ],
)
def test_bad_keys_and_wrong_host_are_fatal(status: int, body: Any) -> None:
    with make_client(Recorder(status, body)) as client, pytest.raises(FatalRunError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert "leadsquared.host" in str(raised.value)


# -- secrets never leak --------------------------------------------------------------------


def assert_no_secret(error: BaseException) -> None:
    for form in secret_forms():
        assert form not in str(error)
        assert form not in repr(error)
        assert all(form not in str(arg) for arg in error.args)
        # What `log.exception` would print, chained exceptions included.
        assert form not in "".join(traceback.format_exception(error))


ECHOING_ANSWERS = [
    (500, "MXInvalidEntityException", LeadRejectedError),
    (401, "MXUnAuthorizedAccessException", FatalRunError),
    (429, "MXAPIRateLimitExceededException", ThrottledError),
    (503, None, RetriableError),
]


@pytest.mark.parametrize(("status", "exception_type", "expected"), ECHOING_ANSWERS)
@pytest.mark.parametrize("auth", ["query", "header"])
def test_errors_that_echo_the_request_do_not_leak_keys(
    status: int, exception_type: str | None, expected: type[LeadSquaredError], auth: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A server that quotes the request back, keys and all, raw and encoded.
        echo = f"bad request {request.url} {ACCESS_KEY} {SECRET_KEY} {dict(request.headers)}"
        body = {"Status": "Error", "ExceptionMessage": echo}
        if exception_type is not None:
            body["ExceptionType"] = exception_type
        return httpx.Response(status, json=body)

    with make_client(handler, auth=auth) as client, pytest.raises(expected) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert_no_secret(raised.value)


@pytest.mark.parametrize("auth", ["query", "header"])
def test_successful_calls_log_no_keys(auth: str, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    with make_client(recorder, auth=auth) as client:
        client.update_lead("L1", {"mx_City": "Pune"})
    # The logging did happen (so the autouse check looked at something real).
    assert "Lead.Update" in caplog.text


@pytest.mark.parametrize("auth", ["query", "header"])
def test_keys_echoed_percent_encoded_in_lower_case_do_not_leak(auth: str) -> None:
    # .NET's UrlEncode writes %2f where Python writes %2F.
    echoes = [
        form.lower()
        for key in (ACCESS_KEY, SECRET_KEY)
        for form in (quote(key, safe=""), quote_plus(key))
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json=mx("MXInvalidInputException", " ".join(echoes)))

    with make_client(handler, auth=auth) as client, pytest.raises(LeadRejectedError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    for form in echoes:
        assert form not in str(raised.value)
    assert str(raised.value).count("***") == len(echoes)


def test_repr_holds_no_key() -> None:
    client = make_client(Recorder())
    try:
        for form in secret_forms():
            assert form not in repr(client)
            assert form not in str(client)
    finally:
        client.close()


def test_redact_covers_raw_and_encoded_keys() -> None:
    with make_client(Recorder()) as client:
        text = " ".join(secret_forms())
        redacted = client.redact(text)
    for form in secret_forms():
        assert form not in redacted


# -- answers too large to hold ---------------------------------------------------------------

HEAD, TAIL = b'{"Status":"Success","Message":"', b'"}'


class Unread(httpx.SyncByteStream):
    """A body that must never be read."""

    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("the body was read although its length was announced too large")


class Endless(httpx.SyncByteStream):
    """A success body of `size` bytes, made as it is read; counts what was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        block = b"x" * 65536
        yield HEAD
        left = self.size - len(HEAD) - len(TAIL)
        while left > 0:
            piece = block[: min(left, len(block))]
            left -= len(piece)
            self.read += len(piece)
            yield piece
        yield TAIL


def test_an_answer_announced_larger_than_the_cap_is_transient_and_never_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(3 << 30)}, stream=Unread())

    with (
        make_client(handler) as client,
        pytest.raises(RetriableError) as raised,
    ):
        client.update_lead("L1", {"mx_City": "Pune"})
    assert type(raised.value) is RetriableError
    assert "larger than the 4,194,304 bytes accepted" in str(raised.value)
    assert "3,221,225,472 bytes announced" in str(raised.value)


def test_an_unannounced_answer_is_read_only_up_to_the_cap() -> None:
    body = Endless(64 << 20)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    with make_client(handler) as client, pytest.raises(RetriableError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert type(raised.value) is RetriableError
    assert "larger than the 4,194,304 bytes accepted" in str(raised.value)
    assert body.read <= MAX_ANSWER_BYTES + 65536


class Once(httpx.SyncByteStream):
    """A body as it comes off the wire, in one piece."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body


def gzip_bomb(size: int, layers: int) -> bytes:
    """A gzip body of `size` zero bytes, gzipped again `layers - 1` times: a few hundred bytes
    for hundreds of MiB, made without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    body = b"".join(packer.compress(block) for _ in range(size // len(block))) + packer.flush()
    for _ in range(layers - 1):
        body = gzip.compress(body, 9)
    return body


@pytest.mark.parametrize("layers", [1, 2], ids=["gzip", "gzip-gzip"])
def test_a_compressed_answer_is_never_expanded_in_memory(layers: int) -> None:
    bomb = gzip_bomb(256 << 20, layers)
    encoding = ", ".join(["gzip"] * layers)
    recorder = Recorder()

    def handler(request: httpx.Request) -> httpx.Response:
        recorder(request)
        # A stream of its own: httpx expands a bytes `content` as soon as it is given.
        return httpx.Response(200, headers={"Content-Encoding": encoding}, stream=Once(bomb))

    tracemalloc.start()
    try:
        with make_client(handler) as client, pytest.raises(RetriableError) as raised:
            client.update_lead("L1", {"mx_City": "Pune"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_ANSWER_BYTES, f"{peak:,} bytes held for a {len(bomb):,}-byte answer"
    assert type(raised.value) is RetriableError
    assert f"Content-Encoding {encoding}" in str(raised.value)
    assert recorder.last.headers["Accept-Encoding"] == "identity"


# -- a key that cannot go in a request -----------------------------------------------------

NEWLINE_KEY = "Sk9CORE$/+=\n"


def raw_config(url: str, secret_key: str, **settings: Any) -> LeadSquaredConfig:
    """Keys that bypassed config validation, as a library caller's might."""
    return LeadSquaredConfig.model_construct(
        host=url, access_key=SecretStr(ACCESS_KEY), secret_key=SecretStr(secret_key), **settings
    )


def escaped_forms(key: str) -> list[str]:
    return [repr(key)[1:-1], repr(key.encode())[2:-1], json.dumps(key)[1:-1]]


def test_redact_covers_escaped_keys() -> None:
    with LeadSquaredClient(raw_config(HOST, "Sk9CORE$/+=é")) as client:
        key = "Sk9CORE$/+=é"
        text = " | ".join([*escaped_forms(key), key, quote(key, safe=""), quote_plus(key)])
        redacted = client.redact(text)
    assert "CORE" not in redacted
    assert redacted.count("***") == 6


@pytest.mark.parametrize(
    ("auth", "key"),
    [("header", NEWLINE_KEY), ("query", NEWLINE_KEY), ("header", "Sk9CORE-é")],
    ids=["newline-in-header", "newline-in-query", "not-ascii-in-header"],
)
def test_a_key_that_cannot_be_sent_is_fatal_before_any_call_and_never_shows(
    auth: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Emulator(rate_limit=None) as emulator:
        with pytest.raises(FatalRunError) as raised:
            LeadSquaredClient(raw_config(emulator.url, key, auth=auth))
        assert emulator.requests == []
    assert str(raised.value).startswith("leadsquared.secret_key holds ")
    for form in escaped_forms(key):
        assert_no_form(raised.value, form)
    assert_no_form(raised.value, "CORE")
    assert "CORE" not in caplog.text


@pytest.mark.parametrize(
    "error", [httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL]
)
def test_requests_that_cannot_be_built_are_fatal(error: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if error is httpx.InvalidURL:
            raise error(f"bad {SECRET_KEY!r}")
        raise error(f"bad {SECRET_KEY.encode()!r} in {request.url}", request=request)

    with make_client(handler) as client, pytest.raises(FatalRunError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    assert_no_secret(raised.value)


def assert_no_form(error: BaseException, form: str) -> None:
    assert form not in str(error)
    assert form not in "".join(traceback.format_exception(error))


# -- a stop while a call is in flight ------------------------------------------------------


class Blocking:
    """A handler that holds every request until released."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived.set()
        assert self.release.wait(60), "never released"
        return httpx.Response(200, json=SUCCESS)


@contextmanager
def stopped_mid_call(drain: float) -> Iterator[tuple[Future[None], Blocking]]:
    """A Lead.Update its server holds when the stop comes, with `drain` seconds left to be
    answered; the server is released at the end if the test has not released it."""
    stop, handler = threading.Event(), Blocking()
    config = LeadSquaredConfig(host=HOST, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    with (
        LeadSquaredClient(
            config, transport=httpx.MockTransport(handler), stop=stop, drain_seconds=drain
        ) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        calling = pool.submit(client.update_lead, "L1", {"mx_City": "Pune"})
        assert handler.arrived.wait(10)
        stop.set()
        try:
            yield calling, handler
        finally:
            handler.release.set()


def test_a_call_unanswered_when_the_drain_ends_is_abandoned() -> None:
    with stopped_mid_call(drain=0.2) as (calling, _), pytest.raises(CallAbandonedError) as raised:
        calling.result(timeout=30)
    assert "sync.drain_seconds (0.2 s)" in str(raised.value)


def test_a_call_answered_within_the_drain_completes() -> None:
    with stopped_mid_call(drain=60) as (calling, handler):
        handler.release.set()
        assert calling.result(timeout=30) is None


@pytest.mark.parametrize("stoppable", [True, False], ids=["with-stop", "without-stop"])
def test_an_answer_whose_head_trickles_in_ends_at_the_total_timeout(stoppable: bool) -> None:
    """httpx bounds each read, not the whole: a head sent a byte at a time within the read
    timeout would hold the call for as long as the server likes."""
    with Emulator(rate_limit=None) as emulator:
        emulator.add_lead("L1")
        emulator.fault_drip_seconds = 600  # far beyond this test's own bound
        emulator.fail_next(1, "drip-head")
        config = LeadSquaredConfig(
            host=emulator.url,
            access_key=DEFAULT_ACCESS_KEY,
            secret_key=DEFAULT_SECRET_KEY,
            timeout_seconds={"connect": 5, "read": 5, "total": 0.5},
        )
        stop = threading.Event() if stoppable else None
        with LeadSquaredClient(config, stop=stop) as client, ThreadPoolExecutor(1) as pool:
            calling = pool.submit(client.update_lead, "L1", {"mx_City": "Pune"})
            with pytest.raises(RetriableError) as raised:
                calling.result(timeout=60)
    assert "timeout_seconds.total" in str(raised.value)


# -- what a failed connection is put down to ------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "says"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "the host name does not resolve"),
        (
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
            "TLS handshake with",
        ),
        (OSError(113, "No route to host"), "no route to host"),
    ],
    ids=["refused", "dns", "tls", "other"],
)
def test_a_failed_connection_names_the_host_and_the_cause(cause: OSError, says: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise cause
        except OSError as exc:
            # As httpcore does it: the socket error is only the context of what is raised.
            raise httpx.ConnectError(str(exc), request=request)  # noqa: B904

    with make_client(handler) as client, pytest.raises(UnreachableError) as raised:
        client.update_lead("L1", {"mx_City": "Pune"})
    message = str(raised.value)
    assert HOST in message
    assert says in message
    assert "_ssl.c" not in message


# -- the calls of real tables ----------------------------------------------------------------


class OrderedLimiter:
    """Records, in one shared list, when each slot is taken and sent."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    def acquire(self) -> Any:
        self.events.append(f"acquire {self.name}")
        return self.name

    def going_out(self, slot: Any) -> Any:
        self.events.append(f"going out {self.name}")
        return slot

    def answered(self, slot: Any) -> None:
        self.events.append(f"answered {self.name}")

    def throttled(self, retry_after: float | None) -> None:
        self.events.append(f"throttled {self.name}")


def bulk_client(handler: Handler, events: list[str]) -> LeadSquaredClient:
    config = LeadSquaredConfig(host=HOST, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    return LeadSquaredClient(
        config,
        transport=httpx.MockTransport(handler),
        limiter=OrderedLimiter("account", events),
        bulk_limiter=OrderedLimiter("bulk", events),
    )


BULK_OK = {"Status": {"TotalCount": 1, "SuccessCount": 1}, "Details": {}}


def test_a_bulk_call_takes_both_slots_before_either_goes_out() -> None:
    events: list[str] = []
    recorder = Recorder(body=BULK_OK)
    with bulk_client(recorder, events) as client:
        client.bulk_update("EmailAddress", {"a@x.com": {"mx_City": "Pune", "Phone": None}})
        recorder.body = SUCCESS
        client.update_lead("L1", {"mx_City": "Goa"})
    assert events == [
        "acquire bulk",
        "acquire account",
        "going out bulk",
        "going out account",
        "answered bulk",
        "answered account",
        "acquire account",  # a single call takes the account's slot alone
        "going out account",
        "answered account",
    ]
    bulk, single = recorder.requests
    assert bulk.url.path == "/v2/LeadManagement.svc/Lead/Bulk/UpdateV2"
    assert json.loads(bulk.content) == {
        "SearchByKey": "EmailAddress",
        "Options": {"PushNonExistentLeadsToUnProcessedList": True},
        "LeadPropertiesList": [
            {
                "Fields": [
                    {"Attribute": "EmailAddress", "Value": "a@x.com"},
                    {"Attribute": "Phone", "Value": ""},
                    {"Attribute": "mx_City", "Value": "Pune"},
                ]
            }
        ],
    }
    assert single.url.path == "/v2/LeadManagement.svc/Lead.Update"


def test_a_throttled_bulk_call_holds_back_both_windows() -> None:
    events: list[str] = []
    throttled = {
        "Status": "Error",
        "ExceptionMessage": "API calls exceeded the limit of 5 in 5 second(s)",
    }
    with bulk_client(Recorder(429, throttled), events) as client, pytest.raises(ThrottledError):
        client.bulk_update("ProspectId", {"L1": {"mx_City": "Pune"}})
    assert {"throttled bulk", "throttled account"} <= set(events)


@pytest.mark.parametrize(
    ("match", "path", "parameter"),
    [
        ("EmailAddress", "Leads.GetByEmailaddress", "emailaddress"),
        ("Phone", "RetrieveLeadByPhoneNumber", "phone"),
    ],
)
def test_a_lookup_asks_by_the_value_and_returns_the_prospect_ids(
    match: str, path: str, parameter: str
) -> None:
    recorder = Recorder(body=[{"ProspectID": "P2"}, {"ProspectId": "P1"}, {"ProspectID": "P2"}])
    with make_client(recorder) as client:
        found = client.find_leads(match, "a+b&c@x.com")  # type: ignore[arg-type]
    assert found == ["P1", "P2"]
    assert recorder.last.url.path == f"/v2/LeadManagement.svc/{path}"
    assert query(recorder.last)[parameter] == ["a+b&c@x.com"]


@pytest.mark.parametrize(
    "answer", [[{"ProspectID": 7}], [{"ProspectID": "x" * 101}], ["P1"], [{"Name": "no id"}]]
)
def test_a_lookup_answer_without_a_usable_prospect_id_is_refused_for_the_lead(
    answer: Any,
) -> None:
    with make_client(Recorder(body=answer)) as client, pytest.raises(LeadRejectedError):
        client.find_leads("EmailAddress", "a@x.com")


@pytest.mark.parametrize(
    ("body", "host"),
    [
        ({"LSQCommonServiceURLs": {"api": "api-in21.leadsquared.com"}}, "api-in21.leadsquared.com"),
        ({"LSQCommonServiceURLs": {"api": ""}}, None),
        ({"LSQCommonServiceURLs": "nonsense"}, None),
        ({}, None),
    ],
)
def test_the_account_host_is_read_from_user_by_access_key(body: Any, host: str | None) -> None:
    recorder = Recorder(body=body)
    with make_client(recorder) as client:
        assert client.account_host() == host
    assert recorder.last.url.path == "/v2/Authentication.svc/UserByAccessKey.Get"
    assert query(recorder.last)["accessKey"] == [ACCESS_KEY]
