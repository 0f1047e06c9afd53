"""The LeadSquared emulator, exercised over real loopback HTTP."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.testing.emulator import (
    ADMIN_PREFIX,
    API_PREFIX,
    Emulator,
    LeadField,
    LeadSchema,
    MissingLeadError,
    SchemaError,
    main,
)

ACCESS_KEY = "u$ac/ce+ss=key"
SECRET_KEY = "s$ec/re+t=key"
KEYS = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
DEFAULT_KEYS = {"accessKey": "emulator-access-key", "secretKey": "emulator-secret-key"}
SUCCESS = {"Status": "Success", "Message": {"AffectedRows": 1}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(access_key=ACCESS_KEY, secret_key=SECRET_KEY, rate_limit=None) as running:
        running.add_lead("L1", FirstName="Ada", mx_City="Paris")
        yield running


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url + API_PREFIX, timeout=5.0) as http:
        yield http


def update(
    client: httpx.Client,
    lead_id: str | None,
    fields: dict[str, Any],
    **params: str,
) -> httpx.Response:
    query = {**KEYS, **params}
    if lead_id is not None:
        query["leadId"] = lead_id
    body = [{"Attribute": name, "Value": value} for name, value in fields.items()]
    return client.post("Lead.Update", params=query, json=body)


def update_stream(client: httpx.Client) -> AbstractContextManager[httpx.Response]:
    """A Lead.Update setting L1's city to Rome, its answer to be read as it arrives."""
    query = {**KEYS, "leadId": "L1"}
    body = [{"Attribute": "mx_City", "Value": "Rome"}]
    return client.stream("POST", "Lead.Update", params=query, json=body)


def assert_one_fault_left_l1_alone(emulator: Emulator, status: int) -> None:
    """The only request so far was a fault answered with `status`, and L1 did not change."""
    [recorded] = emulator.requests
    assert (recorded.status, recorded.outcome) == (status, "fault")
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}


def assert_error(response: httpx.Response, status: int, exception_type: str) -> str:
    assert response.status_code == status
    body = response.json()
    assert body["Status"] == "Error"
    assert body["ExceptionType"] == exception_type
    message: str = body["ExceptionMessage"]
    return message


def test_update_changes_only_the_attributes_sent(emulator: Emulator, client: httpx.Client) -> None:
    response = update(client, "L1", {"mx_City": "London", "Phone": None}, postUpdatedLead="true")

    assert response.status_code == 200
    assert response.json() == {"Status": "Success", "Message": {"AffectedRows": 1}}
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "London", "Phone": ""}
    [recorded] = emulator.requests
    assert (recorded.method, recorded.api, recorded.lead_id) == ("POST", "Lead.Update", "L1")
    assert (recorded.status, recorded.outcome, recorded.post_updated_lead) == (200, "success", True)
    assert recorded.body == [
        {"Attribute": "mx_City", "Value": "London"},
        {"Attribute": "Phone", "Value": None},
    ]


def test_leads_returns_a_copy(emulator: Emulator) -> None:
    emulator.leads()["L1"]["FirstName"] = "Changed"

    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"accessKey": ACCESS_KEY, "secretKey": "wrong"}, {}),
        ({}, {"x-LSQ-AccessKey": ACCESS_KEY, "x-LSQ-SecretKey": "wrong"}),
        ({}, {}),
    ],
    ids=["query", "headers", "missing"],
)
def test_bad_keys_get_401_and_change_nothing(
    emulator: Emulator, client: httpx.Client, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = client.post(
        "Lead.Update",
        params={**params, "leadId": "L1"},
        headers=headers,
        json=[{"Attribute": "mx_City", "Value": "Rome"}],
    )

    assert_error(response, 401, "MXUnAuthorizedAccessException")
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}
    assert emulator.requests[0].outcome == "unauthorized"


def test_keys_in_headers_are_accepted(emulator: Emulator, client: httpx.Client) -> None:
    response = client.post(
        "Lead.Update",
        params={"leadId": "L1"},
        headers={"x-LSQ-AccessKey": ACCESS_KEY, "x-LSQ-SecretKey": SECRET_KEY},
        json=[{"Attribute": "mx_City", "Value": "Rome"}],
    )

    assert response.status_code == 200
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Rome"}


def test_url_encoded_keys_with_special_characters_are_accepted(client: httpx.Client) -> None:
    # httpx percent-encodes $ / + = in query values; parameter names are case-insensitive.
    response = client.post(
        "Lead.Update",
        params={"ACCESSKEY": ACCESS_KEY, "secretkey": SECRET_KEY, "leadId": "L1"},
        json=[{"Attribute": "mx_City", "Value": "Rome"}],
    )

    assert response.status_code == 200


def test_an_unencoded_plus_in_a_key_reads_as_a_space(client: httpx.Client) -> None:
    raw_query = f"accessKey={ACCESS_KEY}&secretKey={SECRET_KEY}&leadId=L1"

    response = client.post(f"Lead.Update?{raw_query}", json=[])

    assert_error(response, 401, "MXUnAuthorizedAccessException")


def test_unknown_attribute_rejects_the_whole_update() -> None:
    with (
        Emulator(attributes=["FirstName", "mx_City"], rate_limit=None) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        emulator.add_lead("L1", FirstName="Ada")
        response = client.post(
            "Lead.Update",
            params={
                "accessKey": "emulator-access-key",
                "secretKey": "emulator-secret-key",
                "leadId": "L1",
            },
            json=[
                {"Attribute": "FirstName", "Value": "Grace"},
                {"Attribute": "mx_A", "Value": "1"},
                {"Attribute": "mx_B", "Value": "2"},
            ],
        )

        message = assert_error(response, 500, "MXUnknownAttributeException")
        assert message == "Attribute(s) does not exist - mx_A, mx_B"
        assert emulator.lead("L1") == {"FirstName": "Ada"}


def test_rejected_value_rejects_the_whole_update(emulator: Emulator, client: httpx.Client) -> None:
    emulator.reject_values("mx_Date", lambda value: not value.startswith("20"))

    response = update(client, "L1", {"mx_City": "Rome", "mx_Date": "yesterday"})

    message = assert_error(response, 500, "MXInvalidInputException")
    assert "mx_Date" in message
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}


def test_unknown_lead_is_an_mx_error(emulator: Emulator, client: httpx.Client) -> None:
    response = update(client, "NOPE", {"mx_City": "Rome"})

    message = assert_error(response, 500, "MXInvalidEntityException")
    assert message == "Lead does not exist in the system"
    assert emulator.lead("NOPE") is None


@pytest.mark.parametrize(
    ("error", "expected_message"),
    [
        ("MXInvalidEntityException", "Lead does not exist in the system"),
        ("MXInvalidEntityReferenceException", "Lead not found"),
    ],
)
def test_missing_lead_error_picks_the_exception_for_unknown_leads(
    error: MissingLeadError, expected_message: str
) -> None:
    with (
        Emulator(rate_limit=None, missing_lead_error=error) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        emulator.add_lead("L1", mx_City="Paris")
        response = client.post(
            "Lead.Update",
            params={**DEFAULT_KEYS, "leadId": "NOPE"},
            json=[{"Attribute": "mx_City", "Value": "Rome"}],
        )

        assert assert_error(response, 500, error) == expected_message
        assert emulator.leads() == {"L1": {"mx_City": "Paris"}}


def test_unknown_missing_lead_error_is_refused() -> None:
    with pytest.raises(ValueError, match="missing_lead_error"):
        Emulator(missing_lead_error="MXNotFound")  # type: ignore[arg-type]


@pytest.fixture
def unique_emulator() -> Iterator[Emulator]:
    with Emulator(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        rate_limit=None,
        unique_attributes={"EmailAddress", "Phone"},
    ) as running:
        running.add_lead("L1", FirstName="Ada", EmailAddress="ada@example.com", Phone="111")
        running.add_lead("L2", FirstName="Grace", Phone="222")
        running.add_lead("L3", Phone="")
        yield running


@pytest.mark.parametrize(
    ("fields", "attribute"),
    [
        ({"mx_City": "Rome", "Phone": "111"}, "Phone"),
        ({"EmailAddress": "ada@example.com"}, "EmailAddress"),
        ({"EmailAddress": "ADA@Example.com"}, "EmailAddress"),
    ],
    ids=["phone", "email", "email-in-other-case"],
)
def test_taking_another_leads_unique_value_is_rejected_whole(
    unique_emulator: Emulator, fields: dict[str, str], attribute: str
) -> None:
    with httpx.Client(base_url=unique_emulator.url + API_PREFIX) as client:
        response = update(client, "L2", fields)

    message = assert_error(response, 500, "MXDuplicateEntryException")
    assert message == f"A Lead with same {attribute} already exists."
    assert unique_emulator.lead("L2") == {"FirstName": "Grace", "Phone": "222"}
    assert unique_emulator.requests[0].outcome == "error"


@pytest.mark.parametrize(
    ("lead_id", "fields"),
    [
        ("L1", {"Phone": "111", "EmailAddress": "ada@example.com", "mx_City": "Rome"}),
        ("L2", {"Phone": "333", "FirstName": "Ada"}),
        ("L2", {"Phone": ""}),
    ],
    ids=["keeping-its-own-values", "new-value-and-shared-non-unique", "clearing"],
)
def test_values_no_other_lead_holds_are_accepted(
    unique_emulator: Emulator, lead_id: str, fields: dict[str, str]
) -> None:
    before = unique_emulator.lead(lead_id)
    assert before is not None

    with httpx.Client(base_url=unique_emulator.url + API_PREFIX) as client:
        response = update(client, lead_id, fields)

    assert response.status_code == 200
    assert unique_emulator.lead(lead_id) == {**before, **fields}


def test_an_auto_created_lead_cannot_take_a_unique_value() -> None:
    with (
        Emulator(rate_limit=None, auto_create_leads=True, unique_attributes=["Phone"]) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        emulator.add_lead("L1", Phone="111")
        response = client.post(
            "Lead.Update",
            params={**DEFAULT_KEYS, "leadId": "NEW"},
            json=[{"Attribute": "Phone", "Value": "111"}],
        )

        assert_error(response, 500, "MXDuplicateEntryException")
        assert emulator.lead("NEW") is None


def test_auto_create_leads_creates_unknown_leads() -> None:
    with (
        Emulator(rate_limit=None, auto_create_leads=True) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        response = client.post(
            "Lead.Update",
            params={
                "accessKey": "emulator-access-key",
                "secretKey": "emulator-secret-key",
                "leadId": "NEW",
            },
            json=[{"Attribute": "mx_City", "Value": 42}],
        )

        assert response.status_code == 200
        assert emulator.leads() == {"NEW": {"mx_City": "42"}}


def test_missing_lead_id_is_a_mandatory_attribute_error(client: httpx.Client) -> None:
    response = update(client, None, {"mx_City": "Rome"})

    assert_error(response, 500, "MXMandatoryAttributeMissingException")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"Attribute": "mx_City", "Value": "Rome"}', "application/json"),
        (b'[{"Attribute": "mx_City"}]', "application/json"),
        (b"not json", "application/json"),
        (b'[{"Attribute": "mx_City", "Value": "Rome"}]', "text/plain"),
    ],
    ids=["not-a-list", "no-value", "not-json", "wrong-content-type"],
)
def test_malformed_update_is_a_400(
    emulator: Emulator, client: httpx.Client, content: bytes, content_type: str
) -> None:
    response = client.post(
        "Lead.Update",
        params={**KEYS, "leadId": "L1"},
        content=content,
        headers={"Content-Type": content_type},
    )

    assert_error(response, 400, "MXInvalidRequestException")
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}


@pytest.mark.parametrize("status", [429, 200, 403])
def test_rate_limit_throttles_in_every_observed_form(status: int) -> None:
    clock = FakeClock()
    with (
        Emulator(rate_limit=(3, 1.0), throttle_status=status, clock=clock) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        emulator.add_lead("L1")
        params = {
            "accessKey": "emulator-access-key",
            "secretKey": "emulator-secret-key",
            "id": "L1",
        }
        allowed = [client.get("Leads.GetById", params=params) for _ in range(3)]
        clock.now += 0.5
        throttled = client.get("Leads.GetById", params=params)

        assert [response.status_code for response in allowed] == [200, 200, 200]
        message = assert_error(throttled, status, "MXAPIRateLimitExceededException")
        assert message == "API calls exceeded the limit of 3 in 1 second(s)"
        assert "Retry-After" not in throttled.headers
        assert emulator.throttled_count == 1
        assert emulator.requests[-1].outcome == "throttled"

        # The throttled call must not count: once the first three slide out, three more fit.
        clock.now += 0.51
        again = [client.get("Leads.GetById", params=params) for _ in range(4)]
        assert [response.status_code for response in again[:3]] == [200, 200, 200]
        assert again[3].json()["ExceptionType"] == "MXAPIRateLimitExceededException"


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(2.0, "2"), (3, "3"), (1.5, "1.5"), (0.25, "0.25"), (0, "0")],
)
def test_set_rate_limit_retry_after_is_sent_on_throttled_answers(
    emulator: Emulator, client: httpx.Client, retry_after: float, header: str
) -> None:
    emulator.set_rate_limit(1, 60.0, retry_after=retry_after)

    admitted = client.get("Leads.GetById", params={**KEYS, "id": "L1"})
    throttled = client.get("Leads.GetById", params={**KEYS, "id": "L1"})

    assert admitted.status_code == 200
    assert "Retry-After" not in admitted.headers
    assert_error(throttled, 429, "MXAPIRateLimitExceededException")
    assert throttled.headers["Retry-After"] == header


def test_retry_after_in_the_constructor_goes_with_any_throttle_status() -> None:
    with (
        Emulator(rate_limit=(1, 60.0), throttle_status=200, retry_after=4.0) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        emulator.add_lead("L1")
        client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"})
        throttled = client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"})

        assert_error(throttled, 200, "MXAPIRateLimitExceededException")
        assert throttled.headers["Retry-After"] == "4"

        emulator.set_rate_limit(1, 60.0, status=200)
        client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"})
        throttled = client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"})

        assert_error(throttled, 200, "MXAPIRateLimitExceededException")
        assert "Retry-After" not in throttled.headers


@pytest.mark.parametrize("retry_after", [-1.0, float("inf"), float("nan")])
def test_bad_retry_after_is_refused(emulator: Emulator, retry_after: float) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        emulator.set_rate_limit(1, 1.0, retry_after=retry_after)


def test_unauthenticated_requests_do_not_count_into_the_rate_limit() -> None:
    with (
        Emulator(rate_limit=(1, 60.0), clock=FakeClock()) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        bad = client.get("Leads.GetById", params={"id": "L1"})
        good = client.get(
            "Leads.GetById",
            params={
                "accessKey": "emulator-access-key",
                "secretKey": "emulator-secret-key",
                "id": "L1",
            },
        )

        assert (bad.status_code, good.status_code) == (401, 200)


def test_503_fault_is_an_html_page_then_service_resumes(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.fail_next(2, "503")

    first = update(client, "L1", {"mx_City": "Rome"})
    second = update(client, "L1", {"mx_City": "Rome"})
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}
    third = update(client, "L1", {"mx_City": "Rome"})

    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Content-Type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        first.json()
    assert [r.outcome for r in emulator.requests] == ["fault", "fault", "success"]
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Rome"}


def test_mx500_fault_is_a_json_mx_error(emulator: Emulator, client: httpx.Client) -> None:
    emulator.fail_next(1, "mx500")

    response = update(client, "L1", {"mx_City": "Rome"})

    assert_error(response, 500, "MXException")


def test_drop_fault_closes_the_connection_without_an_answer(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.fail_next(1, "drop")

    with pytest.raises(httpx.RemoteProtocolError):
        update(client, "L1", {"mx_City": "Rome"})

    assert_one_fault_left_l1_alone(emulator, 0)
    assert update(client, "L1", {"mx_City": "Rome"}).status_code == 200


def test_timeout_fault_leaves_the_client_waiting(emulator: Emulator) -> None:
    emulator.fail_next(1, "timeout")

    with (
        httpx.Client(base_url=emulator.url + API_PREFIX, timeout=0.2) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        update(impatient, "L1", {"mx_City": "Rome"})

    assert emulator.requests[0].outcome == "fault"


def test_drip_fault_outlasts_the_client_budget_without_a_read_timeout(
    emulator: Emulator,
) -> None:
    emulator.fault_drip_seconds = 0.6
    emulator.fail_next(1, "drip")

    # Every read would time out after 0.5 s, yet the whole body takes longer than that.
    with httpx.Client(base_url=emulator.url + API_PREFIX, timeout=0.5) as client:
        started = time.monotonic()
        with update_stream(client) as response:
            pieces = list(response.iter_raw())
        elapsed = time.monotonic() - started

        assert response.status_code == 200
        assert json.loads(b"".join(pieces)) == SUCCESS
        assert len(pieces) >= 2
        assert elapsed >= 0.55
        assert_one_fault_left_l1_alone(emulator, 200)

        # The connection is still usable, and a retry applies the update.
        assert update(client, "L1", {"mx_City": "Rome"}).json() == SUCCESS
        assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Rome"}


def test_drip_head_fault_drips_the_status_line_and_headers(emulator: Emulator) -> None:
    emulator.fault_drip_seconds = 0.6
    emulator.fail_next(1, "drip-head")

    # Every read would time out after 0.5 s, yet the head alone takes longer than that.
    with httpx.Client(base_url=emulator.url + API_PREFIX, timeout=0.5) as client:
        started = time.monotonic()
        with update_stream(client) as response:
            headed = time.monotonic() - started
            content = response.read()

    assert headed >= 0.55
    assert response.status_code == 200
    assert response.headers["X-Drip"].startswith("aaa")
    assert json.loads(content) == SUCCESS
    assert_one_fault_left_l1_alone(emulator, 200)


def test_client_giving_up_on_a_drip_then_retrying_applies_once(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.fault_drip_seconds = 0.6
    emulator.set_fault_rate(1.0, ["drip"], seed=1)

    deadline = time.monotonic() + 0.1
    gave_up = False
    with update_stream(client) as response:
        for _ in response.iter_raw():
            if time.monotonic() > deadline:
                gave_up = True  # the total budget is spent; closing abandons the answer
                break

    assert gave_up
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}
    emulator.set_fault_rate(0.0, [])
    assert update(client, "L1", {"mx_City": "Rome"}).json() == SUCCESS
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Rome"}
    assert [r.outcome for r in emulator.requests] == ["fault", "success"]


def test_stop_ends_a_drip_with_the_rest_of_the_body(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.fault_drip_seconds = 10.0
    emulator.fail_next(1, "drip")
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(update, client, "L1", {"mx_City": "Rome"})
        emulator.wait_for_requests(1, timeout=5.0)

        emulator.stop()

        response = pending.result(timeout=5.0)
    assert response.status_code == 200
    assert response.json() == SUCCESS
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}


def test_fault_rate_with_every_request_failing(emulator: Emulator, client: httpx.Client) -> None:
    emulator.set_fault_rate(1.0, ["502", "504"], seed=7)

    statuses = {update(client, "L1", {"mx_City": "Rome"}).status_code for _ in range(8)}

    assert statuses <= {502, 504}
    emulator.set_fault_rate(0.0, [])
    assert update(client, "L1", {"mx_City": "Rome"}).status_code == 200


def streamed_update(client: httpx.Client, chunk_size: int) -> tuple[httpx.Headers, int, bytes]:
    """A Lead.Update whose answer is read chunk by chunk and dropped: its headers, its size,
    and its first and last few bytes."""
    edges = b""
    size = 0
    with update_stream(client) as response:
        for chunk in response.iter_raw(chunk_size):
            if size == 0:
                edges = chunk[:40]
            size += len(chunk)
            tail = chunk[-10:]
        return response.headers, size, edges + b"..." + tail


@pytest.mark.parametrize("kind", ["huge", "huge-chunked"])
def test_huge_faults_stream_a_success_body_of_the_size_asked(
    emulator: Emulator, client: httpx.Client, kind: str
) -> None:
    emulator.fault_huge_bytes = 3 * 1024 * 1024 + 17
    emulator.fail_next(1, kind)

    headers, size, edges = streamed_update(client, 64 * 1024)

    assert size == emulator.fault_huge_bytes
    assert edges.startswith(b'{"Status":"Success","Message":"xxx')
    assert edges.endswith(b'xxxxxxxx"}')
    if kind == "huge":
        assert headers["Content-Length"] == str(emulator.fault_huge_bytes)
    else:
        assert "Content-Length" not in headers
        assert headers["Transfer-Encoding"] == "chunked"
    assert_one_fault_left_l1_alone(emulator, 200)
    assert update(client, "L1", {"mx_City": "Rome"}).json() == SUCCESS


def test_a_huge_body_is_never_held_whole_by_the_emulator(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.fault_huge_bytes = 64 * 1024 * 1024
    emulator.fail_next(1, "huge-chunked")
    tracemalloc.start()
    try:
        _, size, _ = streamed_update(client, 256 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert size == emulator.fault_huge_bytes
    assert peak < emulator.fault_huge_bytes / 4, f"{peak:,} bytes held at once"


def test_a_client_that_stops_reading_a_huge_body_leaves_the_emulator_serving(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.fail_next(1, "huge")
    with update_stream(client) as response:
        assert response.headers["Content-Length"] == str(1 << 30)
        next(response.iter_raw(1024))

    assert update(client, "L1", {"mx_City": "Rome"}).json() == SUCCESS
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Rome"}


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, "[]"), (200, b"{}"), (200, '{"Status":"Pending"}'), (200, '"Success"'), (502, "")],
)
def test_answer_next_answers_exactly_that_and_applies_nothing(
    emulator: Emulator, client: httpx.Client, status: int, body: str | bytes
) -> None:
    emulator.answer_next(2, status, body)
    emulator.fail_next(1, "503")

    answers = [update(client, "L1", {"mx_City": "Rome"}) for _ in range(3)]

    expected = body if isinstance(body, bytes) else body.encode()
    assert [(a.status_code, a.content) for a in answers[:2]] == [(status, expected)] * 2
    assert answers[0].headers["Content-Type"].startswith("application/json")
    assert answers[2].status_code == 503, "queued answers and faults take their turns"
    assert [r.outcome for r in emulator.requests] == ["fault"] * 3
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}
    assert update(client, "L1", {"mx_City": "Rome"}).json() == SUCCESS


def test_answer_next_sends_the_headers_given(emulator: Emulator, client: httpx.Client) -> None:
    elsewhere = "https://elsewhere.example/v2/LeadManagement.svc/Lead.Update"
    emulator.answer_next(1, 301, "", headers=[("Location", elsewhere), ("X-Echo", "a b")])

    answer = update(client, "L1", {"mx_City": "Rome"})

    assert answer.status_code == 301
    assert (answer.headers["Location"], answer.headers["X-Echo"]) == (elsewhere, "a b")
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Paris"}


def test_answer_next_refuses_what_is_not_an_answer(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="HTTP status"):
        emulator.answer_next(1, 42, "[]")
    with pytest.raises(ValueError, match="negative"):
        emulator.answer_next(-1, 200, "[]")


def test_unknown_fault_kind_is_refused(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emulator.fail_next(1, "418")


def test_held_request_is_applied_but_unanswered_until_release(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.hold()
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [
            pool.submit(update, client, "L1", {"mx_City": "Rome"}),
            pool.submit(client.get, "Leads.GetById", params={**KEYS, "id": "L1"}),
        ]
        # Both logged while held: one held request does not block the other.
        arrived = emulator.wait_for_requests(2, timeout=5.0)
        assert {r.api for r in arrived} == {"Lead.Update", "Leads.GetById"}
        assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Rome"}
        assert not any(future.done() for future in pending)

        emulator.release()

        assert [future.result(timeout=5.0).status_code for future in pending] == [200, 200]


def test_wait_for_requests_times_out(emulator: Emulator) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        emulator.wait_for_requests(1, timeout=0.05)


def test_get_by_id_finds_a_lead(client: httpx.Client) -> None:
    response = client.get("Leads.GetById", params={**KEYS, "id": "L1"})

    assert response.status_code == 200
    assert response.json() == [{"ProspectID": "L1", "FirstName": "Ada", "mx_City": "Paris"}]


def test_get_by_id_of_a_missing_lead_is_an_empty_list(
    emulator: Emulator, client: httpx.Client
) -> None:
    response = client.get("Leads.GetById", params={**KEYS, "id": "NOPE"})

    assert response.status_code == 200
    assert response.json() == []
    assert emulator.requests[0].lead_id == "NOPE"


# Finding leads by email and by phone


@pytest.fixture
def findable(emulator: Emulator) -> Emulator:
    """L1 (no email, no phone) and three more: two share an email, written differently, and
    a phone number, as Phone on one and Mobile on the other."""
    emulator.add_lead("L2", EmailAddress="Ada@Example.com", Phone="+91 80 1234")
    emulator.add_lead("L3", EmailAddress=" ada@example.com ", Mobile="+91 80 1234")
    emulator.add_lead("L4", EmailAddress="grace@example.com", Phone="+91801234")
    return emulator


@pytest.mark.parametrize("asked", ["ADA@example.COM", " ada@example.com", "Ada@Example.com"])
def test_get_by_email_finds_every_lead_with_it_ignoring_case_and_spaces(
    findable: Emulator, client: httpx.Client, asked: str
) -> None:
    response = client.get("Leads.GetByEmailaddress", params={**KEYS, "emailaddress": asked})

    assert response.status_code == 200
    assert response.json() == [
        {"ProspectID": "L2", "EmailAddress": "Ada@Example.com", "Phone": "+91 80 1234"},
        {"ProspectID": "L3", "EmailAddress": " ada@example.com ", "Mobile": "+91 80 1234"},
    ]
    [recorded] = findable.requests
    assert (recorded.api, recorded.lead_id, recorded.outcome) == (
        "Leads.GetByEmailaddress",
        None,
        "success",
    )


@pytest.mark.parametrize(
    ("phone", "found"),
    [("+91 80 1234", ["L2", "L3"]), ("+91801234", ["L4"]), ("91 80 1234", []), ("1234", [])],
    ids=["phone-and-mobile", "as-written", "no-plus", "a-part"],
)
def test_retrieve_by_phone_matches_phone_or_mobile_exactly_as_written(
    findable: Emulator, client: httpx.Client, phone: str, found: list[str]
) -> None:
    response = client.get("RetrieveLeadByPhoneNumber", params={**KEYS, "phone": phone})

    assert response.status_code == 200
    leads = findable.leads()
    assert response.json() == [{"ProspectID": lead_id, **leads[lead_id]} for lead_id in found]
    assert findable.requests[0].api == "RetrieveLeadByPhoneNumber"


@pytest.mark.parametrize(
    ("api", "params"),
    [
        ("Leads.GetByEmailaddress", {"emailaddress": "nobody@example.com"}),
        ("RetrieveLeadByPhoneNumber", {"phone": "+44 20 0000"}),
    ],
)
def test_finding_nothing_is_an_empty_list(
    findable: Emulator, client: httpx.Client, api: str, params: dict[str, str]
) -> None:
    response = client.get(api, params={**KEYS, **params})

    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize(
    ("api", "params"),
    [
        ("Leads.GetByEmailaddress", {}),
        ("Leads.GetByEmailaddress", {"emailaddress": " "}),
        ("RetrieveLeadByPhoneNumber", {}),
        ("RetrieveLeadByPhoneNumber", {"phone": ""}),
        ("Leads.GetById", {}),
    ],
    ids=["no-email", "blank-email", "no-phone", "empty-phone", "no-id"],
)
def test_a_lookup_without_its_parameter_is_a_mandatory_attribute_error(
    findable: Emulator, client: httpx.Client, api: str, params: dict[str, str]
) -> None:
    response = client.get(api, params={**KEYS, **params})

    message = assert_error(response, 500, "MXMandatoryAttributeMissingException")
    assert message.endswith("is mandatory")
    assert findable.requests[0].outcome == "error"


@pytest.mark.parametrize(
    ("api", "params"),
    [
        ("Leads.GetByEmailaddress", {"emailaddress": "ada@example.com"}),
        ("RetrieveLeadByPhoneNumber", {"phone": "+91801234"}),
    ],
)
def test_a_lookup_with_bad_keys_is_a_401(
    findable: Emulator, client: httpx.Client, api: str, params: dict[str, str]
) -> None:
    response = client.get(api, params={**params, "accessKey": ACCESS_KEY, "secretKey": "wrong"})

    assert_error(response, 401, "MXUnAuthorizedAccessException")
    assert findable.requests[0].outcome == "unauthorized"


# Lead/Bulk/UpdateV2

BULK_SCHEMA = {
    "fields": {
        "FirstName": {"type": "Text"},
        "EmailAddress": {"type": "Email"},
        "Phone": {"type": "Phone"},
        "mx_City": {"type": "Text"},
        "mx_Seats": {"type": "Number"},
    }
}


def bulk_body(search_key: str, leads: list[dict[str, Any]], push: bool = True) -> dict[str, Any]:
    return {
        "SearchByKey": search_key,
        "Options": {"PushNonExistentLeadsToUnProcessedList": push},
        "LeadPropertiesList": [
            {"Fields": [{"Attribute": name, "Value": value} for name, value in lead.items()]}
            for lead in leads
        ],
    }


def bulk(
    client: httpx.Client, search_key: str, leads: list[dict[str, Any]], push: bool = True
) -> httpx.Response:
    return client.post("Lead/Bulk/UpdateV2", params=KEYS, json=bulk_body(search_key, leads, push))


@pytest.fixture
def bulk_emulator() -> Iterator[Emulator]:
    with Emulator(
        access_key=ACCESS_KEY, secret_key=SECRET_KEY, rate_limit=None, schema=BULK_SCHEMA
    ) as running:
        running.add_lead("L1", FirstName="Ada", EmailAddress="ada@example.com")
        # Two leads with one email, as an account that does not enforce its uniqueness has.
        running.add_lead("L2", EmailAddress="twin@example.com")
        running.add_lead("L3", EmailAddress="TWIN@example.com")
        running.add_lead("L4", Phone="+91 80 1234")
        yield running


@pytest.fixture
def bulk_client(bulk_emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bulk_emulator.url + API_PREFIX, timeout=5.0) as http:
        yield http


def test_bulk_judges_each_lead_on_its_own_and_counts_the_outcomes(
    bulk_emulator: Emulator, bulk_client: httpx.Client
) -> None:
    before = bulk_emulator.leads()

    response = bulk(
        bulk_client,
        "ProspectId",
        [
            {"ProspectId": "L1", "mx_City": "Rome", "mx_Seats": 3},
            {"ProspectId": "L2", "mx_City": "Oslo", "mx_Colour": "red", "mx_Size": "L"},
            {"ProspectId": "L3", "mx_City": "Oslo", "mx_Seats": "many"},
            {"ProspectId": "NOPE", "mx_City": "Lima"},
            {"ProspectId": "L4", "mx_City": "Pune"},
        ],
    )

    assert response.status_code == 200
    assert response.json() == {
        "Status": {"TotalCount": 5, "SuccessCount": 2, "FailureCount": 2, "UnProcessedCount": 1},
        "Details": {
            "FailedLeads": [
                {
                    "Identifier": "ProspectId",
                    "IdentifierValue": "L2",
                    "Reason": "Attribute(s) does not exist - mx_Colour, mx_Size",
                    "ExceptionType": "MXUnknownAttributeException",
                },
                {
                    "Identifier": "ProspectId",
                    "IdentifierValue": "L3",
                    "Reason": "Invalid value for attribute mx_Seats: not a number",
                    "ExceptionType": "MXInvalidInputException",
                },
            ],
            "UnProcessedLeads": [
                {
                    "Identifier": "ProspectId",
                    "IdentifierValue": "NOPE",
                    "Reason": "Lead does not exist",
                }
            ],
        },
    }
    assert bulk_emulator.leads() == {
        **before,
        "L1": {**before["L1"], "mx_City": "Rome", "mx_Seats": "3"},
        "L4": {**before["L4"], "mx_City": "Pune"},
    }


def test_bulk_by_email_fails_a_value_several_leads_share(
    bulk_emulator: Emulator, bulk_client: httpx.Client
) -> None:
    response = bulk(
        bulk_client,
        "EmailAddress",
        [
            {"EmailAddress": "twin@example.com", "mx_City": "Oslo"},
            {"EmailAddress": " ADA@example.com", "mx_City": "Rome"},
        ],
    )

    assert response.json()["Status"] == {
        "TotalCount": 2,
        "SuccessCount": 1,
        "FailureCount": 1,
        "UnProcessedCount": 0,
    }
    [failed] = response.json()["Details"]["FailedLeads"]
    assert failed["IdentifierValue"] == "twin@example.com"
    assert failed["ExceptionType"] == "MXDuplicateEntryException"
    assert failed["Reason"] == "2 leads have this EmailAddress; it must identify exactly one lead"
    # The search key identifies the lead: it is not written, even in another case.
    assert bulk_emulator.lead("L1") == {
        "FirstName": "Ada",
        "EmailAddress": "ada@example.com",
        "mx_City": "Rome",
    }
    assert "mx_City" not in (bulk_emulator.lead("L2") or {})


def test_bulk_by_phone_matches_the_phone_as_written(
    bulk_emulator: Emulator, bulk_client: httpx.Client
) -> None:
    response = bulk(
        bulk_client,
        "Phone",
        [{"Phone": "+91 80 1234", "mx_City": "Pune"}, {"Phone": "+91801234", "mx_City": "Goa"}],
    )

    assert response.json()["Status"]["SuccessCount"] == 1
    assert response.json()["Details"]["UnProcessedLeads"] == [
        {"Identifier": "Phone", "IdentifierValue": "+91801234", "Reason": "Lead does not exist"}
    ]
    assert bulk_emulator.lead("L4") == {"Phone": "+91 80 1234", "mx_City": "Pune"}


@pytest.mark.parametrize("options", [{"PushNonExistentLeadsToUnProcessedList": False}, {}, None])
def test_bulk_without_the_option_fails_a_lead_not_found(
    bulk_emulator: Emulator, bulk_client: httpx.Client, options: dict[str, bool] | None
) -> None:
    body = bulk_body("ProspectId", [{"ProspectId": "NOPE", "mx_City": "Lima"}])
    if options is None:
        del body["Options"]
    else:
        body["Options"] = options

    response = bulk_client.post("Lead/Bulk/UpdateV2", params=KEYS, json=body)

    assert response.json() == {
        "Status": {"TotalCount": 1, "SuccessCount": 0, "FailureCount": 1, "UnProcessedCount": 0},
        "Details": {
            "FailedLeads": [
                {
                    "Identifier": "ProspectId",
                    "IdentifierValue": "NOPE",
                    "Reason": "Lead does not exist in the system",
                    "ExceptionType": "MXInvalidEntityException",
                }
            ],
            "UnProcessedLeads": [],
        },
    }


def test_bulk_checks_rejected_values_unique_attributes_and_a_missing_identifier() -> None:
    with (
        Emulator(rate_limit=None, unique_attributes=["Phone"]) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        emulator.add_lead("L1", Phone="111")
        emulator.add_lead("L2", Phone="222")
        emulator.reject_values("mx_Date", lambda value: value == "never", "MXCustomException")
        response = client.post(
            "Lead/Bulk/UpdateV2",
            params=DEFAULT_KEYS,
            json=bulk_body(
                "ProspectId",
                [
                    {"ProspectId": "L2", "Phone": "111"},
                    {"ProspectId": "L2", "mx_Date": "never"},
                    {"mx_Date": "2026-01-01"},
                    {"ProspectId": "", "mx_Date": "2026-01-01"},
                    {"ProspectId": "L2", "mx_Date": "2026-01-01"},
                ],
            ),
        )

        failed = response.json()["Details"]["FailedLeads"]
        assert [(f["IdentifierValue"], f["ExceptionType"], f["Reason"]) for f in failed] == [
            ("L2", "MXDuplicateEntryException", "A Lead with same Phone already exists."),
            ("L2", "MXCustomException", "Invalid value for attribute mx_Date"),
            ("", "MXMandatoryAttributeMissingException", "ProspectId is mandatory"),
            ("", "MXMandatoryAttributeMissingException", "ProspectId is mandatory"),
        ]
        assert emulator.leads() == {
            "L1": {"Phone": "111"},
            "L2": {"Phone": "222", "mx_Date": "2026-01-01"},
        }


def test_bulk_never_creates_a_lead_even_with_auto_create_leads() -> None:
    with (
        Emulator(rate_limit=None, auto_create_leads=True) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        body = bulk_body("ProspectId", [{"ProspectId": "NEW", "mx_City": "Lima"}])
        response = client.post("Lead/Bulk/UpdateV2", params=DEFAULT_KEYS, json=body)

        assert response.json()["Status"]["UnProcessedCount"] == 1
        assert emulator.leads() == {}


def test_bulk_of_25_leads_is_taken_and_of_26_refused_whole(
    bulk_emulator: Emulator, bulk_client: httpx.Client
) -> None:
    refused = bulk(bulk_client, "ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}] * 26)
    message = assert_error(refused, 400, "MXInvalidRequestException")
    assert message == "At most 25 leads can be updated in one call, got 26"
    assert "mx_City" not in (bulk_emulator.lead("L1") or {})

    taken = bulk(bulk_client, "ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}] * 25)
    assert taken.json()["Status"]["SuccessCount"] == 25


@pytest.mark.parametrize(
    ("search_key", "status", "exception_type"),
    [
        ("mx_City", 500, "MXInvalidInputException"),
        ("prospectid", 500, "MXInvalidInputException"),
        ("FirstName", 500, "MXInvalidInputException"),
        ("", 500, "MXMandatoryAttributeMissingException"),
        (None, 500, "MXMandatoryAttributeMissingException"),
        (7, 400, "MXInvalidRequestException"),
    ],
)
def test_bulk_by_another_search_key_is_refused_whole(
    bulk_emulator: Emulator,
    bulk_client: httpx.Client,
    search_key: object,
    status: int,
    exception_type: str,
) -> None:
    body = bulk_body("ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}])
    body["SearchByKey"] = search_key
    if search_key is None:
        del body["SearchByKey"]

    response = bulk_client.post("Lead/Bulk/UpdateV2", params=KEYS, json=body)

    assert_error(response, status, exception_type)
    assert "mx_City" not in (bulk_emulator.lead("L1") or {})


GOOD_FIELDS = [{"Attribute": "ProspectId", "Value": "L1"}, {"Attribute": "mx_City", "Value": "X"}]


@pytest.mark.parametrize(
    "body",
    [
        [{"Fields": GOOD_FIELDS}],
        {"SearchByKey": "ProspectId"},
        {"SearchByKey": "ProspectId", "LeadPropertiesList": {"Fields": GOOD_FIELDS}},
        {"SearchByKey": "ProspectId", "LeadPropertiesList": [GOOD_FIELDS]},
        {"SearchByKey": "ProspectId", "LeadPropertiesList": [{"Fields": GOOD_FIELDS}, {}]},
        {"SearchByKey": "ProspectId", "LeadPropertiesList": [{"Fields": [{"Attribute": "A"}]}]},
        {"SearchByKey": "ProspectId", "Options": [], "LeadPropertiesList": []},
        {
            "SearchByKey": "ProspectId",
            "Options": {"PushNonExistentLeadsToUnProcessedList": "yes"},
            "LeadPropertiesList": [],
        },
    ],
    ids=[
        "a-list",
        "no-leads",
        "leads-not-a-list",
        "no-fields-key",
        "one-lead-bad",
        "no-value",
        "options-not-an-object",
        "option-not-a-boolean",
    ],
)
def test_malformed_bulk_is_a_400_and_applies_nothing(
    bulk_emulator: Emulator, bulk_client: httpx.Client, body: object
) -> None:
    response = bulk_client.post("Lead/Bulk/UpdateV2", params=KEYS, json=body)

    assert_error(response, 400, "MXInvalidRequestException")
    assert "mx_City" not in (bulk_emulator.lead("L1") or {})


def test_bulk_must_be_sent_as_json(bulk_emulator: Emulator, bulk_client: httpx.Client) -> None:
    body = json.dumps(bulk_body("ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}]))

    response = bulk_client.post(
        "Lead/Bulk/UpdateV2", params=KEYS, content=body, headers={"Content-Type": "text/plain"}
    )

    assert_error(response, 400, "MXInvalidRequestException")
    assert "mx_City" not in (bulk_emulator.lead("L1") or {})


def test_bulk_of_no_leads_counts_nothing(bulk_client: httpx.Client) -> None:
    response = bulk(bulk_client, "ProspectId", [])

    assert response.json()["Status"] == {
        "TotalCount": 0,
        "SuccessCount": 0,
        "FailureCount": 0,
        "UnProcessedCount": 0,
    }


def test_bulk_calls_are_logged_with_their_leads_and_no_lead_id(
    bulk_emulator: Emulator, bulk_client: httpx.Client
) -> None:
    three = bulk_body("ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}] * 3)
    bulk_client.post("Lead/Bulk/UpdateV2", params={**KEYS, "leadId": "L9"}, json=three)
    bulk(bulk_client, "ProspectId", [{"ProspectId": "L4", "mx_City": "Pune"}])

    recorded = bulk_emulator.requests
    assert [(r.method, r.api, r.lead_id, r.status) for r in recorded] == [
        ("POST", "Lead/Bulk/UpdateV2", None, 200)
    ] * 2
    assert [len(r.body["LeadPropertiesList"]) for r in recorded] == [3, 1]
    assert recorded[0].body == three


def test_bulk_with_bad_keys_is_a_401_and_applies_nothing(
    bulk_emulator: Emulator, bulk_client: httpx.Client
) -> None:
    body = bulk_body("ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}])

    response = bulk_client.post(
        "Lead/Bulk/UpdateV2", params={"accessKey": ACCESS_KEY, "secretKey": "x"}, json=body
    )

    assert_error(response, 401, "MXUnAuthorizedAccessException")
    assert "mx_City" not in (bulk_emulator.lead("L1") or {})


# The bulk rate limit

ONE_BULK = bulk_body("ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}])


@contextmanager
def limited(clock: FakeClock, **limits: Any) -> Iterator[tuple[Emulator, httpx.Client]]:
    """An emulator with lead L1 and the `limits` given, timed by `clock`, and a client."""
    with (
        Emulator(clock=clock, **limits) as emulator,
        httpx.Client(base_url=emulator.url + API_PREFIX) as client,
    ):
        emulator.add_lead("L1")
        yield emulator, client


def post_bulk(client: httpx.Client) -> httpx.Response:
    return client.post("Lead/Bulk/UpdateV2", params=DEFAULT_KEYS, json=ONE_BULK)


def get_l1(client: httpx.Client) -> httpx.Response:
    return client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"})


def test_bulk_calls_are_limited_to_5_in_5_seconds_by_default() -> None:
    clock = FakeClock()
    with limited(clock, rate_limit=None) as (emulator, client):
        admitted = [post_bulk(client) for _ in range(5)]
        emulator.reset(requests_only=True)
        emulator.add_lead("L1")  # a throttled call must apply nothing: start it bare
        clock.now += 4.99
        throttled = post_bulk(client)
        single = get_l1(client)

        assert [r.status_code for r in admitted] == [200] * 5
        message = assert_error(throttled, 429, "MXAPIRateLimitExceededException")
        assert message == "API calls exceeded the limit of 5 in 5 second(s)"
        assert single.status_code == 200, "other calls are not held to the bulk limit"
        assert (emulator.throttled_count, emulator.bulk_throttled_count) == (1, 1)
        assert [r.outcome for r in emulator.requests] == ["throttled", "success"]
        assert emulator.lead("L1") == {}

        clock.now += 0.01
        assert post_bulk(client).json()["Status"]["SuccessCount"] == 1


def test_a_bulk_call_counts_in_the_account_window_too() -> None:
    clock = FakeClock()
    with limited(clock, rate_limit=(3, 60.0), bulk_rate_limit=(10, 60.0)) as (emulator, client):
        admitted = [post_bulk(client), post_bulk(client), get_l1(client)]
        single = get_l1(client)
        bulk_call = post_bulk(client)

        assert [r.status_code for r in admitted] == [200] * 3
        assert assert_error(single, 429, "MXAPIRateLimitExceededException").endswith(
            "limit of 3 in 60 second(s)"
        )
        assert assert_error(bulk_call, 429, "MXAPIRateLimitExceededException").endswith(
            "limit of 3 in 60 second(s)"
        )
        assert (emulator.throttled_count, emulator.bulk_throttled_count) == (2, 0)


def test_a_bulk_call_the_bulk_window_refuses_does_not_count_in_the_account_window() -> None:
    clock = FakeClock()
    with limited(clock, rate_limit=(3, 60.0), bulk_rate_limit=(1, 60.0)) as (emulator, client):
        first = post_bulk(client)
        refused = post_bulk(client)
        singles = [get_l1(client) for _ in range(3)]

        assert first.status_code == 200
        assert assert_error(refused, 429, "MXAPIRateLimitExceededException").endswith(
            "limit of 1 in 60 second(s)"
        )
        assert [r.status_code for r in singles] == [200, 200, 429]
        assert (emulator.throttled_count, emulator.bulk_throttled_count) == (2, 1)


def test_a_bulk_refusal_takes_the_accounts_throttle_status_and_retry_after() -> None:
    clock = FakeClock()
    limits = {"throttle_status": 200, "retry_after": 2.0, "bulk_rate_limit": (1, 5.0)}
    with limited(clock, **limits) as (_, client):
        post_bulk(client)
        refused = post_bulk(client)

    assert_error(refused, 200, "MXAPIRateLimitExceededException")
    assert refused.headers["Retry-After"] == "2"


def test_no_bulk_limit_and_set_bulk_rate_limit() -> None:
    clock = FakeClock()
    with limited(clock, rate_limit=None, bulk_rate_limit=None) as (emulator, client):
        assert {post_bulk(client).status_code for _ in range(12)} == {200}

        emulator.set_bulk_rate_limit(2, 1.0)
        statuses = [post_bulk(client).status_code for _ in range(3)]
        clock.now += 1.0
        after_the_window = post_bulk(client)

        assert statuses == [200, 200, 429]
        assert after_the_window.status_code == 200
        assert emulator.bulk_throttled_count == 1


@pytest.mark.parametrize(("calls", "window"), [(0, 5.0), (-1, 5.0), (5, 0.0), (5, -1.0)])
def test_a_bad_bulk_rate_limit_is_refused(calls: int, window: float) -> None:
    with pytest.raises(ValueError, match="bulk rate limit"):
        Emulator(bulk_rate_limit=(calls, window))
    with pytest.raises(ValueError, match="bulk rate limit"):
        Emulator().set_bulk_rate_limit(calls, window)


def test_command_line_bulk_rate_limit() -> None:
    options = ["--lead", "L1", "--bulk-rate-limit", "1", "--bulk-window", "60"]
    with (
        command_line_emulator(*options) as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        answers = [post_bulk(client) for _ in range(2)]
    with (
        command_line_emulator("--lead", "L1", "--bulk-rate-limit", "0") as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        unlimited = [post_bulk(client).status_code for _ in range(7)]

    assert answers[0].json()["Status"]["SuccessCount"] == 1
    message = assert_error(answers[1], 429, "MXAPIRateLimitExceededException")
    assert message == "API calls exceeded the limit of 1 in 60 second(s)"
    assert unlimited == [200] * 7


# UserByAccessKey.Get

USER_BY_ACCESS_KEY = "/v2/Authentication.svc/UserByAccessKey.Get"


def test_user_by_access_key_names_the_emulators_own_host(emulator: Emulator) -> None:
    with httpx.Client(base_url=emulator.url) as client:
        response = client.get(USER_BY_ACCESS_KEY, params=KEYS)

    assert response.status_code == 200
    host = emulator.url.removeprefix("http://")
    user = response.json()
    assert user.pop("Id")
    assert user == {
        "FirstName": "Emulator",
        "LastName": "User",
        "EmailAddress": "api@emulator.test",
        "Role": "Administrator",
        "LSQCommonServiceURLs": {"api": host, "app": host},
    }
    assert emulator.api_host == host
    [recorded] = emulator.requests
    assert (recorded.method, recorded.api, recorded.lead_id) == ("GET", "UserByAccessKey.Get", None)


def test_user_by_access_key_names_the_api_host_given() -> None:
    with (
        Emulator(api_host="api-us11.leadsquared.com") as emulator,
        httpx.Client(base_url=emulator.url) as client,
    ):
        response = client.get(
            USER_BY_ACCESS_KEY,
            headers={
                "x-LSQ-AccessKey": DEFAULT_KEYS["accessKey"],
                "x-LSQ-SecretKey": DEFAULT_KEYS["secretKey"],
            },
        )

        assert response.json()["LSQCommonServiceURLs"]["api"] == "api-us11.leadsquared.com"
        assert emulator.api_host == "api-us11.leadsquared.com"


@pytest.mark.parametrize("params", [{"accessKey": ACCESS_KEY, "secretKey": "wrong"}, {}])
def test_user_by_access_key_with_bad_keys_is_a_401(
    emulator: Emulator, params: dict[str, str]
) -> None:
    with httpx.Client(base_url=emulator.url) as client:
        response = client.get(USER_BY_ACCESS_KEY, params=params)

    assert_error(response, 401, "MXUnAuthorizedAccessException")
    assert emulator.requests[0].outcome == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", USER_BY_ACCESS_KEY),
        ("GET", API_PREFIX + "UserByAccessKey.Get"),
        ("GET", "/v2/Authentication.svc/Lead.Update"),
    ],
    ids=["wrong-method", "lead-service", "lead-api-in-the-auth-service"],
)
def test_user_by_access_key_is_only_where_leadsquared_has_it(
    emulator: Emulator, method: str, path: str
) -> None:
    with httpx.Client(base_url=emulator.url) as client:
        response = client.request(method, path, params=KEYS)

    assert_error(response, 404, "MXInvalidAPIException")


def test_user_by_access_key_counts_against_the_rate_limit() -> None:
    clock = FakeClock()
    with limited(clock, rate_limit=(2, 5.0)) as (emulator, client):
        user = client.get(emulator.url + USER_BY_ACCESS_KEY, params=DEFAULT_KEYS)
        single = get_l1(client)
        throttled = client.get(emulator.url + USER_BY_ACCESS_KEY, params=DEFAULT_KEYS)

        assert (user.status_code, single.status_code) == (200, 200)
        assert_error(throttled, 429, "MXAPIRateLimitExceededException")
        assert emulator.throttled_count == 1


@pytest.mark.parametrize(
    "host", ["", "https://api.leadsquared.com", "api.leadsquared.com/v2", "a b", ".x"]
)
def test_a_bad_api_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="api_host"):
        Emulator(api_host=host)


def test_command_line_api_host() -> None:
    with command_line_emulator("--api-host", "api-in21.leadsquared.com:443") as (url, _):
        response = httpx.get(url + USER_BY_ACCESS_KEY, params=DEFAULT_KEYS)

    assert response.json()["LSQCommonServiceURLs"]["api"] == "api-in21.leadsquared.com:443"


# Faults on every new endpoint

NEW_ENDPOINTS = {
    "Leads.GetByEmailaddress": (
        "GET",
        API_PREFIX + "Leads.GetByEmailaddress",
        {"emailaddress": "a@b.c"},
    ),
    "RetrieveLeadByPhoneNumber": ("GET", API_PREFIX + "RetrieveLeadByPhoneNumber", {"phone": "1"}),
    "Lead/Bulk/UpdateV2": ("POST", API_PREFIX + "Lead/Bulk/UpdateV2", {}),
    "UserByAccessKey.Get": ("GET", USER_BY_ACCESS_KEY, {}),
}


def call_new_endpoint(client: httpx.Client, api: str) -> httpx.Response:
    """One call of a new endpoint (a bulk call sets L1's city to Rome), with the right keys."""
    method, path, params = NEW_ENDPOINTS[api]
    body = bulk_body("ProspectId", [{"ProspectId": "L1", "mx_City": "Rome"}])
    return client.request(
        method, path, params={**KEYS, **params}, json=body if method == "POST" else None
    )


@pytest.mark.parametrize("api", list(NEW_ENDPOINTS))
@pytest.mark.parametrize(("kind", "status"), [("503", 503), ("mx500", 500), ("drop", 0)])
def test_faults_apply_to_the_new_endpoints_and_apply_nothing(
    emulator: Emulator, api: str, kind: str, status: int
) -> None:
    emulator.fail_next(1, kind)
    with httpx.Client(base_url=emulator.url) as client:
        if kind == "drop":
            with pytest.raises(httpx.RemoteProtocolError):
                call_new_endpoint(client, api)
        else:
            assert call_new_endpoint(client, api).status_code == status
        assert_one_fault_left_l1_alone(emulator, status)
        assert emulator.requests[0].api == api

        assert call_new_endpoint(client, api).status_code == 200


@pytest.mark.parametrize("api", list(NEW_ENDPOINTS))
def test_a_held_answer_from_a_new_endpoint_waits_for_release(emulator: Emulator, api: str) -> None:
    emulator.hold()
    with (
        httpx.Client(base_url=emulator.url, timeout=5.0) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pending = pool.submit(call_new_endpoint, client, api)
        [arrived] = emulator.wait_for_requests(1, timeout=5.0)
        assert arrived.api == api
        assert not pending.done()

        emulator.release()

        assert pending.result(timeout=5.0).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", API_PREFIX + "Leads.GetByNothing"),
        ("GET", API_PREFIX + "Lead.Update"),
        ("POST", "/v2/Other.svc/Leads.GetById"),
    ],
    ids=["unknown-api", "wrong-method", "wrong-service"],
)
def test_unknown_api_is_a_404(emulator: Emulator, method: str, path: str) -> None:
    with httpx.Client(base_url=emulator.url) as client:
        response = client.request(method, path, params=KEYS)

    assert_error(response, 404, "MXInvalidAPIException")
    [recorded] = emulator.requests
    assert (recorded.api, recorded.outcome) == (path.rsplit("/", 1)[-1], "error")


def test_clear_requests_empties_the_log(emulator: Emulator, client: httpx.Client) -> None:
    client.get("Leads.GetById", params={**KEYS, "id": "L1"})

    emulator.clear_requests()

    assert emulator.requests == []


def test_no_record_or_log_line_holds_a_key(
    emulator: Emulator, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="connector.testing.emulator")

    update(client, "L1", {"mx_City": "Rome"})
    client.get("Leads.GetById", params={**KEYS, "id": "L1"})
    client.get("Nope", params=KEYS)
    client.post("Lead.Update", params={"accessKey": ACCESS_KEY, "secretKey": "s3cr3t-typo"})

    recorded = repr(emulator.requests)
    assert len(emulator.requests) == 4
    assert "Lead.Update" in caplog.text
    for secret in (SECRET_KEY, ACCESS_KEY, "s3cr3t-typo", "secretKey", "s%24ec"):
        assert secret not in recorded
        assert secret not in caplog.text


def test_stop_is_idempotent_and_url_needs_a_start() -> None:
    emulator = Emulator()
    with pytest.raises(RuntimeError):
        _ = emulator.url

    emulator.start()
    url = emulator.url
    emulator.stop()
    emulator.stop()

    with pytest.raises(httpx.ConnectError):
        httpx.get(url + API_PREFIX + "Leads.GetById")


def test_stop_ends_a_held_request(emulator: Emulator, client: httpx.Client) -> None:
    emulator.hold()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(client.get, "Leads.GetById", params={**KEYS, "id": "L1"})
        emulator.wait_for_requests(1, timeout=5.0)

        emulator.stop()

        assert pending.result(timeout=5.0).status_code == 200


@contextmanager
def command_line_emulator(*args: str) -> Iterator[tuple[str, list[str]]]:
    """Yield the URL and banner of an emulator served by the CLI; it must exit 0 on Ctrl-C."""
    process = subprocess.Popen(
        [sys.executable, "-m", "connector.testing.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(4)]
        yield banner[0].rsplit(" ", 1)[-1].strip(), banner
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_command_line_serves_until_interrupted() -> None:
    with command_line_emulator("--lead", "L1", "L2") as (url, banner):
        response = httpx.get(
            url + API_PREFIX + "Leads.GetById", params={**DEFAULT_KEYS, "id": "L2"}
        )
        assert response.json() == [{"ProspectID": "L2"}]
    assert banner[2] == "secret key: emulator-secret-key\n"


def test_command_line_sets_retry_after_unique_attributes_and_missing_lead_error() -> None:
    options = [
        *("--lead", "L1", "L2", "--rate-limit", "3", "--window", "60", "--retry-after", "2.5"),
        *("--unique-attribute", "Phone", "EmailAddress"),
        *("--missing-lead-error", "MXInvalidEntityReferenceException"),
    ]
    with (
        command_line_emulator(*options) as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        query = {**DEFAULT_KEYS, "leadId": "L1"}
        phone = [{"Attribute": "Phone", "Value": "111"}]
        taken = client.post("Lead.Update", params=query, json=phone)
        duplicate = client.post("Lead.Update", params={**query, "leadId": "L2"}, json=phone)
        missing = client.post("Lead.Update", params={**query, "leadId": "NOPE"}, json=phone)
        throttled = client.post("Lead.Update", params=query, json=phone)

    assert taken.json() == SUCCESS
    assert_error(duplicate, 500, "MXDuplicateEntryException")
    assert_error(missing, 500, "MXInvalidEntityReferenceException")
    assert_error(throttled, 429, "MXAPIRateLimitExceededException")
    assert throttled.headers["Retry-After"] == "2.5"


# Lead schema, LeadsMetaData.Get

SCHEMA = {
    "fields": {
        "FirstName": {"type": "Text", "max_length": 5},
        "EmailAddress": {"type": "Email", "display_name": "Email"},
        "mx_Plan": {"type": "Select", "options": ["Free", "Pro"], "mandatory": True},
        "mx_Seats": {"type": "Number"},
        "mx_Since": {"type": "Date"},
        "mx_At": {"type": "Time"},
        "mx_Active": {"type": "Boolean"},
        "Phone": {"type": "Phone"},
        "Website": {"type": "Website"},
    }
}


@pytest.fixture
def typed(emulator_with_schema: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator_with_schema.url + API_PREFIX, timeout=5.0) as http:
        yield http


@pytest.fixture
def emulator_with_schema() -> Iterator[Emulator]:
    with Emulator(
        access_key=ACCESS_KEY, secret_key=SECRET_KEY, rate_limit=None, schema=SCHEMA
    ) as running:
        running.add_lead("L1", FirstName="Ada")
        yield running


@pytest.mark.parametrize(
    "case",
    [
        ("FirstName", "Grace", "Gracie", "longer than 5 characters"),
        ("EmailAddress", "ada@example.com", "ada@example", "not an email address"),
        ("mx_Plan", "Pro", "pro", "not one of the field's options"),
        ("mx_Seats", "-12.5", "12a", "not a number"),
        ("mx_Since", "2026-02-28 14:15:00", "2026-02-30", "not a date"),
        ("mx_At", "23:59:59", "24:00", "not a time"),
        ("mx_Active", "False", "yes", "not true or false"),
        ("Phone", "+91 (80) 1234-5678", "call me", "not a phone number"),
        ("Website", "https://example.com/a", "example", "not a website"),
    ],
)
def test_schema_refuses_an_invalid_value_and_the_whole_update(
    emulator_with_schema: Emulator, typed: httpx.Client, case: tuple[str, str, str, str]
) -> None:
    attribute, good, bad, reason = case
    refused = update(typed, "L1", {"mx_Seats": "3", attribute: bad})
    message = assert_error(refused, 500, "MXInvalidInputException")
    assert message.startswith(f"Invalid value for attribute {attribute}: {reason}")
    assert bad not in message
    assert emulator_with_schema.lead("L1") == {"FirstName": "Ada"}

    accepted = update(typed, "L1", {attribute: good})
    cleared = update(typed, "L1", {"mx_Plan": ""})

    assert (accepted.json(), cleared.json()) == (SUCCESS, SUCCESS)
    # A later key wins: for FirstName, `good` replaces "Ada".
    assert emulator_with_schema.lead("L1") == {"FirstName": "Ada", attribute: good, "mx_Plan": ""}


def test_schema_names_the_only_attributes(typed: httpx.Client) -> None:
    response = update(typed, "L1", {"mx_City": "Paris", "FirstName": "Bo"})

    message = assert_error(response, 500, "MXUnknownAttributeException")
    assert message == "Attribute(s) does not exist - mx_City"


def test_leads_metadata_get_describes_the_schema(typed: httpx.Client) -> None:
    every = typed.get("LeadsMetaData.Get", params=KEYS)
    one = typed.get("LeadsMetaData.Get", params={**KEYS, "schemaName": "mx_Plan"})
    bare = typed.get(
        "LeadsMetaData.Get", params={**KEYS, "schemaName": "mx_Plan", "excludeOptionSets": "1"}
    )
    unknown = typed.get("LeadsMetaData.Get", params={**KEYS, "schemaName": "mx_Nope"})
    no_keys = typed.get("LeadsMetaData.Get")

    assert every.status_code == 200
    assert [field["SchemaName"] for field in every.json()] == list(SCHEMA["fields"])
    assert every.json()[0] == {
        "SchemaName": "FirstName",
        "DisplayName": "FirstName",
        "DataType": "Text",
        "IsMandatory": False,
        "MaxLength": "5",
    }
    assert every.json()[1]["DisplayName"] == "Email"
    plan = {
        "SchemaName": "mx_Plan",
        "DisplayName": "mx_Plan",
        "DataType": "Select",
        "IsMandatory": True,
        "MaxLength": "",
    }
    assert one.json() == [{**plan, "Options": [{"Value": "Free"}, {"Value": "Pro"}]}]
    assert bare.json() == [plan]
    assert unknown.json() == []
    assert_error(no_keys, 401, "MXUnAuthorizedAccessException")


def test_without_a_schema_nothing_changes(emulator: Emulator, client: httpx.Client) -> None:
    metadata = client.get("LeadsMetaData.Get", params=KEYS)
    anything = update(client, "L1", {"mx_Anything": "x" * 500})

    assert_error(metadata, 404, "MXInvalidAPIException")
    assert anything.json() == SUCCESS


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"fields": {"mx_A": {"type": "Text"}}, "extra": 1}, "one key, 'fields'"),
        ({"fields": {}}, "'fields' must map"),
        ({"fields": {"mx_A": {"type": "Integer"}}}, "fields.mx_A.type: must be one of"),
        ({"fields": {"mx_A": {"max_length": 0}}}, "fields.mx_A.max_length"),
        ({"fields": {"mx_A": {"max_length": True}}}, "fields.mx_A.max_length"),
        ({"fields": {"mx_A": {"type": "Select"}}}, "needs at least one option"),
        ({"fields": {"mx_A": {"options": ["x"]}}}, "only a Select field has options"),
        ({"fields": {"mx_A": {"mandatory": "yes"}}}, "fields.mx_A.mandatory"),
        ({"fields": {"mx_A": {"colour": "red"}}}, "fields.mx_A.colour: unknown property"),
        ({"fields": {"mx_A": []}}, "fields.mx_A: must be a mapping"),
    ],
)
def test_a_bad_schema_is_refused_naming_the_place(schema: object, problem: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(problem)):
        LeadSchema.from_mapping(schema)


def test_a_bad_schema_reports_every_problem_at_once() -> None:
    schema = {"fields": {"mx_A": {"type": "Nope"}, "mx_B": {"max_length": -1}}}

    with pytest.raises(SchemaError) as raised:
        LeadSchema.from_mapping(schema)

    assert "fields.mx_A.type" in str(raised.value)
    assert "fields.mx_B.max_length" in str(raised.value)


def test_schema_and_attributes_are_one_or_the_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        Emulator(attributes=["mx_A"], schema=SCHEMA)


def test_a_schema_object_serves_as_well_as_a_mapping() -> None:
    schema = LeadSchema((LeadField("mx_Plan", "Select", options=("Free",)),))
    with Emulator(rate_limit=None, schema=schema) as running:
        running.add_lead("L1")
        with httpx.Client(base_url=running.url + API_PREFIX) as http:
            refused = update_with(http, DEFAULT_KEYS, "L1", {"mx_Plan": "Pro"})
    assert_error(refused, 500, "MXInvalidInputException")


def update_with(
    client: httpx.Client, keys: dict[str, str], lead_id: str, fields: dict[str, str]
) -> httpx.Response:
    body = [{"Attribute": name, "Value": value} for name, value in fields.items()]
    return client.post("Lead.Update", params={**keys, "leadId": lead_id}, json=body)


# The admin endpoint


@pytest.fixture
def admin(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url + ADMIN_PREFIX, timeout=5.0) as http:
        yield http


def test_admin_reads_every_lead_and_one(
    emulator: Emulator, client: httpx.Client, admin: httpx.Client
) -> None:
    emulator.add_lead("L/2")
    update(client, "L1", {"mx_City": "Rome"})

    every = admin.get("leads")
    one = admin.get("leads/L1")
    slashed = admin.get("leads/L%2F2")
    missing = admin.get("leads/NOPE")

    assert every.json() == {"L1": {"FirstName": "Ada", "mx_City": "Rome"}, "L/2": {}}
    assert one.json() == {"FirstName": "Ada", "mx_City": "Rome"}
    assert (slashed.status_code, slashed.json()) == (200, {})
    assert (missing.status_code, missing.json()) == (404, {"error": "no lead 'NOPE'"})


def test_admin_puts_a_lead(emulator: Emulator, admin: httpx.Client) -> None:
    put = admin.put("leads/L9", json={"FirstName": "Bo"})
    refused = admin.put("leads/L9", json={"Seats": 3})

    assert (put.status_code, put.json()) == (200, {"FirstName": "Bo"})
    assert refused.status_code == 400
    assert emulator.lead("L9") == {"FirstName": "Bo"}


def test_admin_reads_the_request_log_without_any_key(
    emulator: Emulator, client: httpx.Client, admin: httpx.Client
) -> None:
    update(client, "L1", {"mx_City": "Rome", "mx_Note": f"pasted {SECRET_KEY} here"})
    client.get("Leads.GetById", params={**KEYS, "id": "L1"})
    client.get("Leads.GetById", headers={"x-LSQ-AccessKey": ACCESS_KEY, "x-LSQ-SecretKey": "k"})

    log = admin.get("requests")

    assert log.status_code == 200
    first, second, third = log.json()
    assert first["api"] == "Lead.Update"
    assert first["lead_id"] == "L1"
    assert (first["status"], first["outcome"]) == (200, "success")
    assert first["body"][1] == {"Attribute": "mx_Note", "Value": "pasted [redacted] here"}
    assert (second["api"], second["status"]) == ("Leads.GetById", 200)
    assert (third["status"], third["outcome"]) == (401, "unauthorized")
    for secret in (SECRET_KEY, ACCESS_KEY, "secretKey", "s%24ec"):
        assert secret not in log.text


def test_admin_requests_are_not_logged_throttled_or_faulted(
    emulator: Emulator, admin: httpx.Client
) -> None:
    emulator.set_rate_limit(1, 60.0)
    emulator.fail_next(5, "503")

    answers = [admin.get("leads").status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    assert emulator.requests == []


def test_admin_resets_the_log_only_or_leads_too(
    emulator: Emulator, client: httpx.Client, admin: httpx.Client
) -> None:
    update(client, "L1", {"mx_City": "Rome"})

    log_only = admin.post("reset", params={"only": "requests"})
    assert log_only.status_code == 200
    assert emulator.requests == []
    assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "Rome"}

    update(client, "L1", {"mx_City": "Oslo"})
    everything = admin.post("reset")
    assert everything.status_code == 200
    assert (emulator.requests, emulator.leads()) == ([], {})

    assert admin.post("reset", params={"only": "leads"}).status_code == 400
    assert admin.get("reset").status_code == 404
    assert admin.delete("leads/L1").status_code == 405


def test_reset_from_python(emulator: Emulator, client: httpx.Client) -> None:
    update(client, "L1", {"mx_City": "Rome"})

    emulator.reset(requests_only=True)
    assert (emulator.requests, list(emulator.leads())) == ([], ["L1"])

    emulator.reset()
    assert emulator.leads() == {}


# The new command-line flags


def test_command_line_serves_a_schema_file_and_the_admin_endpoint(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("fields:\n  mx_Plan: {type: Select, options: [Free, Pro]}\n")
    with (
        command_line_emulator("--schema", str(schema), "--lead", "L1") as (url, banner),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        refused = update_with(client, DEFAULT_KEYS, "L1", {"mx_Plan": "Gold"})
        accepted = update_with(client, DEFAULT_KEYS, "L1", {"mx_Plan": "Pro"})
        metadata = client.get("LeadsMetaData.Get", params=DEFAULT_KEYS)
        leads = httpx.get(url + ADMIN_PREFIX + "leads")
        log = httpx.get(url + ADMIN_PREFIX + "requests")

    assert_error(refused, 500, "MXInvalidInputException")
    assert accepted.json() == SUCCESS
    assert [field["SchemaName"] for field in metadata.json()] == ["mx_Plan"]
    assert leads.json() == {"L1": {"mx_Plan": "Pro"}}
    assert [entry["status"] for entry in log.json()] == [500, 200, 200]
    assert "emulator-secret-key" not in log.text
    assert banner[3] == f"admin: {url}{ADMIN_PREFIX}\n"


def test_command_line_reads_a_json_schema_and_attributes(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"fields": {"mx_Seats": {"type": "Number"}}}))
    with (
        command_line_emulator("--schema", str(schema), "--lead", "L1") as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        refused = update_with(client, DEFAULT_KEYS, "L1", {"mx_Seats": "many"})
    with (
        command_line_emulator("--attribute", "mx_A", "--lead", "L1") as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        unknown = update_with(client, DEFAULT_KEYS, "L1", {"mx_B": "x"})

    assert_error(refused, 500, "MXInvalidInputException")
    assert_error(unknown, 500, "MXUnknownAttributeException")


def test_command_line_fault_rate_and_latency() -> None:
    options = ["--lead", "L1", "--rate-limit", "0", "--fault-rate", "1", "--fault-kind", "mx500"]
    with (
        command_line_emulator(*options, "--latency", "0.3", "0.4") as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        started = time.monotonic()
        faulted = client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"})
        elapsed = time.monotonic() - started

    assert_error(faulted, 500, "MXException")
    assert elapsed >= 0.3


def test_command_line_throttle_status() -> None:
    options = ["--lead", "L1", "--rate-limit", "1", "--window", "60", "--throttle-status", "403"]
    with (
        command_line_emulator(*options) as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        responses = [
            client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"}) for _ in range(2)
        ]

    assert responses[0].status_code == 200
    assert_error(responses[1], 403, "MXAPIRateLimitExceededException")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--fault-rate", "1.5", "--fault-kind", "503"], "argument --fault-rate"),
        (["--fault-rate", "0.5"], "argument --fault-rate: needs at least one --fault-kind"),
        (["--fault-kind", "boom"], "argument --fault-kind"),
        (["--latency", "-1"], "argument --latency"),
        (["--latency", "2", "1"], "argument --latency"),
        (["--latency", "1", "2", "3"], "argument --latency"),
        (["--retry-after", "nan"], "argument --retry-after"),
        (["--window", "0"], "argument --window"),
        (["--rate-limit", "-3"], "argument --rate-limit"),
        (["--bulk-window", "0"], "argument --bulk-window"),
        (["--api-host", "http://127.0.0.1:1"], "argument --api-host"),
        (["--port", "70000"], "argument --port"),
        (["--throttle-status", "500"], "argument --throttle-status"),
        (["--fault-huge-bytes", "lots"], "argument --fault-huge-bytes"),
        (["--schema", "/nonexistent/schema.yaml"], "argument --schema: cannot read"),
        (["--schema", "SCHEMA", "--attribute", "mx_A"], "argument --attribute"),
    ],
)
def test_command_line_refuses_a_bad_value_naming_its_flag(
    tmp_path: Path, options: list[str], named: str
) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("fields:\n  mx_A: {type: Text}\n")
    argv = ["--port", "0", *[str(schema) if part == "SCHEMA" else part for part in options]]

    process = subprocess.run(
        [sys.executable, "-m", "connector", "emulator", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert process.returncode == 2
    assert named in process.stderr
    assert "Traceback" not in process.stderr
    assert process.stdout == ""


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--bulk-rate-limit", "-1"], "argument --bulk-rate-limit"),
        (["--bulk-rate-limit", "many"], "argument --bulk-rate-limit"),
        (["--bulk-rate-limit", "2.5"], "argument --bulk-rate-limit"),
        (["--bulk-window", "0"], "argument --bulk-window"),
        (["--bulk-window", "inf"], "argument --bulk-window"),
        (["--api-host", "https://api.leadsquared.com"], "argument --api-host"),
        (["--api-host", ""], "argument --api-host"),
        (["--api-host", "api.leadsquared.com/v2"], "argument --api-host"),
    ],
)
def test_command_line_refuses_a_bad_new_flag_naming_it(
    options: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process, to spare a subprocess per case: argparse exits before anything is served.
    with pytest.raises(SystemExit) as exited:
        main(["--port", "0", *options])

    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert captured.out == ""


def test_command_line_refuses_a_bad_schema_file_naming_the_field(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("fields:\n  mx_A: {type: Integer}\n")

    with pytest.raises(SystemExit) as exited:
        main(["--port", "0", "--schema", str(schema)])

    assert exited.value.code == 2


def test_command_line_port_in_use_is_an_error_not_a_traceback(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    port = emulator.url.rsplit(":", 1)[-1]

    assert main(["--port", port]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
