"""connector.responses.classify: every kind of answer LeadSquared gives, and what it means."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.responses import MAX_RETRY_AFTER_SECONDS, Classified, Expect, Outcome, classify

RATE_LIMIT_MESSAGE = "API calls exceeded the limit of 25 in 5 second(s)"
GATEWAY_PAGE = (
    "<html><head><title>{status} Bad Gateway</title></head>"
    "<body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
)


def update_answer(status: int, headers: dict[str, str], text: str) -> Classified:
    """How an answer to Lead.Update is classified."""
    return classify(status, headers, text, expect=Expect.STATUS_SUCCESS)


def error_body(exception_type: str | None, message: str, **extra: Any) -> str:
    body: dict[str, Any] = {"Status": "Error", "ExceptionMessage": message, **extra}
    if exception_type is not None:
        body["ExceptionType"] = exception_type
    return json.dumps(body)


def test_success() -> None:
    result = update_answer(200, {}, '{"Status":"Success","Message":{"AffectedRows":1}}')
    assert result.outcome is Outcome.SUCCESS
    assert result.status == 200
    assert result.body == {"Status": "Success", "Message": {"AffectedRows": 1}}


@pytest.mark.parametrize("text", ['[{"ProspectID": "L1"}]', "[]"], ids=["found", "none"])
def test_success_with_a_list_body_where_a_list_is_expected(text: str) -> None:
    # Leads.GetById answers a JSON list, with no envelope at all.
    result = classify(200, {}, text, expect=Expect.LIST)
    assert result.outcome is Outcome.SUCCESS
    assert result.body == json.loads(text)


NOT_A_SUCCESS = {
    "empty-list": "[]",
    "list-of-leads": '[{"ProspectID": "L1"}]',
    "empty-object": "{}",
    "pending": '{"Status": "Pending"}',
    "lower-case": '{"Status": "success"}',
    "no-status": '{"Message": {"AffectedRows": 1}}',
    "json-string": '"Success"',
    "json-null": "null",
    "json-number": "1",
}


@pytest.mark.parametrize("text", NOT_A_SUCCESS.values(), ids=NOT_A_SUCCESS.keys())
@pytest.mark.parametrize("status", [200, 201, 204])
def test_a_2xx_without_status_success_is_not_a_success(status: int, text: str) -> None:
    result = update_answer(status, {}, text)
    assert result.outcome is Outcome.TRANSIENT
    assert f"HTTP {status} without an object with Status: Success" in result.message


@pytest.mark.parametrize(
    "text", ["{}", '{"Status": "Success"}', '"x"'], ids=["empty-object", "envelope", "string"]
)
def test_a_2xx_that_is_not_a_list_where_a_list_is_expected_is_not_a_success(text: str) -> None:
    result = classify(200, {}, text, expect=Expect.LIST)
    assert result.outcome is Outcome.TRANSIENT
    assert "a JSON list" in result.message


def test_an_unexpected_body_is_quoted_short_and_on_one_line() -> None:
    result = update_answer(200, {}, json.dumps({"Unexpected": "x" * 500, "Lines": "a\nb"}))
    assert result.outcome is Outcome.TRANSIENT
    assert len(result.message) < 200
    assert "\n" not in result.message


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (429, error_body("MXAPIRateLimitExceededException", RATE_LIMIT_MESSAGE)),
        (429, ""),
        (429, "Too Many Requests"),
        (200, error_body("MXAPIRateLimitExceededException", RATE_LIMIT_MESSAGE)),
        (403, error_body("MXAPIRateLimitExceededException", RATE_LIMIT_MESSAGE)),
        (403, error_body("MXAPIRateLimitExceededException", "slow down")),
        (500, error_body("MXAPIRateLimitExceededException", RATE_LIMIT_MESSAGE)),
        (200, error_body(None, RATE_LIMIT_MESSAGE)),
        (403, error_body(None, RATE_LIMIT_MESSAGE)),
        (500, error_body(None, RATE_LIMIT_MESSAGE)),
        (403, json.dumps({"Message": RATE_LIMIT_MESSAGE})),
        (200, error_body(None, RATE_LIMIT_MESSAGE.upper())),
        (
            403,
            error_body("MXAPIRateLimitExceededException", RATE_LIMIT_MESSAGE, IsMXException=True),
        ),
    ],
    ids=[
        "429-mx",
        "429-empty",
        "429-text",
        "200-mx",
        "403-mx",
        "403-mx-other-message",
        "500-mx",
        "200-text-only",
        "403-text-only",
        "500-text-only",
        "403-message-field",
        "200-uppercase-text",
        "403-is-mx-exception",
    ],
)
def test_throttled(status: int, text: str) -> None:
    result = update_answer(status, {}, text)
    assert result.outcome is Outcome.THROTTLED
    assert result.status == status


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"Retry-After": "0"}, 0.0),
        # Not a delay at all: as if absent, so the account waits a whole window.
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "1e400"}, None),
        # A delay far beyond any rate window would hold every process of the account back
        # for that long (for ever, past what a datetime holds): kept to the cap.
        ({"Retry-After": "1e12"}, MAX_RETRY_AFTER_SECONDS),
        ({"Retry-After": str(365 * 86400)}, MAX_RETRY_AFTER_SECONDS),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
    ids=[
        "seconds",
        "lower-case-fraction",
        "zero",
        "negative",
        "nan",
        "infinite",
        "overflowing",
        "beyond-a-datetime",
        "a-year",
        "http-date",
        "garbage",
        "absent",
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    result = update_answer(429, headers, error_body("MXAPIRateLimitExceededException", "x"))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after == expected


def test_retry_after_is_kept_on_transient_answers() -> None:
    result = update_answer(503, {"Retry-After": "4"}, GATEWAY_PAGE.format(status=503))
    assert (result.outcome, result.retry_after) == (Outcome.TRANSIENT, 4.0)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_with_html_are_transient(status: int) -> None:
    result = update_answer(
        status, {"Content-Type": "text/html"}, GATEWAY_PAGE.format(status=status)
    )
    assert result.outcome is Outcome.TRANSIENT
    assert str(status) in result.message


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (200, "<html>maintenance</html>"),
        (200, ""),
        (200, '{"Status": "Succ'),
        (500, "<html>Internal Server Error</html>"),
        (500, json.dumps({"Status": "Error", "ExceptionMessage": "try again"})),
        (408, ""),
    ],
    ids=["200-html", "200-empty", "200-truncated-json", "500-html", "500-no-mx-type", "408"],
)
def test_other_transient_answers(status: int, text: str) -> None:
    assert update_answer(status, {}, text).outcome is Outcome.TRANSIENT


def test_unknown_attributes_are_listed() -> None:
    result = update_answer(
        500,
        {},
        error_body("MXUnknownAttributeException", "Attribute(s) does not exist - mx_A, mx_B"),
    )
    assert result.outcome is Outcome.REJECTED
    assert result.exception_type == "MXUnknownAttributeException"
    assert result.unknown_attributes == ("mx_A", "mx_B")
    assert "MXUnknownAttributeException" in result.message
    assert "mx_A, mx_B" in result.message


def test_a_single_unknown_attribute() -> None:
    result = update_answer(
        500, {}, error_body("MXUnknownAttributeException", "Attribute(s) does not exist - mx_X")
    )
    assert result.unknown_attributes == ("mx_X",)


@pytest.mark.parametrize("status", [500, 200, 503])
def test_the_generic_mx_exception_is_ambiguous_not_rejected(status: int) -> None:
    message = "There was an error processing the request."
    result = update_answer(status, {}, error_body("MXException", message, IsMXException=True))
    assert result.outcome is Outcome.AMBIGUOUS
    assert result.message == f"MXException: {message}"


@pytest.mark.parametrize(
    ("exception_type", "message"),
    [
        ("MXInvalidEntityException", "Lead does not exist in the system"),
        ("MXInvalidEntityReferenceException", "Lead not found"),
        ("MXDuplicateEntryException", "A Lead with same Phone Number already exists"),
        ("MXInvalidInputException", "Invalid value for attribute mx_Date"),
        ("MXMandatoryAttributeMissingException", "leadId is mandatory"),
    ],
)
def test_mx_errors_as_500_are_rejected(exception_type: str, message: str) -> None:
    result = update_answer(500, {}, error_body(exception_type, message, IsMXException=True))
    assert result.outcome is Outcome.REJECTED
    assert result.exception_type == exception_type
    assert result.unknown_attributes == ()
    assert exception_type in result.message
    assert message in result.message


@pytest.mark.parametrize(
    "text",
    [
        error_body("MXInvalidInputException", "Request body is not as per specification"),
        error_body(None, "Request body is not as per specification"),
        "Bad Request",
        "",
    ],
    ids=["mx", "no-type", "text", "empty"],
)
def test_400_is_rejected(text: str) -> None:
    result = update_answer(400, {}, text)
    assert result.outcome is Outcome.REJECTED
    assert result.message


@pytest.mark.parametrize(
    "text",
    [
        error_body("MXInvalidEntityException", "Lead does not exist in the system"),
        error_body(None, "Something went wrong"),
        json.dumps({"Status": "Error"}),
    ],
    ids=["mx", "no-type", "bare"],
)
def test_200_with_status_error_is_rejected(text: str) -> None:
    result = update_answer(200, {}, text)
    assert result.outcome is Outcome.REJECTED
    assert result.status == 200


@pytest.mark.parametrize(
    ("status", "text", "hint"),
    [
        (401, error_body("MXUnAuthorizedAccessException", "Invalid keys"), "access_key"),
        (401, "", "access_key"),
        (404, error_body("MXInvalidAPIException", "API not found"), "leadsquared.host"),
        (404, "<html>Not Found</html>", "leadsquared.host"),
    ],
    ids=["401-mx", "401-empty", "404-mx", "404-html"],
)
def test_fatal(status: int, text: str, hint: str) -> None:
    result = update_answer(status, {}, text)
    assert result.outcome is Outcome.FATAL
    assert hint in result.message


# -- hostile answers -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("opening", ["[", '{"a":'], ids=["lists", "objects"])
def test_json_nested_too_deep_to_parse_is_a_transient_answer_not_a_crash(
    status: int, opening: str
) -> None:
    # Well under the size cap, and deeper than Python's parser can recurse.
    depth = 200_000
    text = opening * depth + "1" + ("]" if opening == "[" else "}") * depth
    result = update_answer(status, {}, text)
    assert result.outcome is Outcome.TRANSIENT
    assert result.body is None


@pytest.mark.parametrize(
    ("location", "origin"),
    [
        (
            "https://api-in21.leadsquared.com/v2/x?accessKey=AK&secretKey=SK",
            "https://api-in21.leadsquared.com",
        ),
        ("https://other.example:8443/", "https://other.example:8443"),
    ],
)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_fatal_naming_only_where_it_points(
    status: int, location: str, origin: str
) -> None:
    result = update_answer(status, {"location": location}, "")
    assert result.outcome is Outcome.FATAL
    assert f"redirected to {origin} (HTTP {status})" in result.message
    assert "leadsquared.host" in result.message
    assert "Key" not in result.message, "the query string, which holds the keys, is left out"


def test_a_redirect_without_a_location_is_fatal_and_says_so() -> None:
    result = update_answer(302, {}, "")
    assert result.outcome is Outcome.FATAL
    assert "redirected (HTTP 302)" in result.message
    assert "leadsquared.host" in result.message


def test_an_unexpected_json_body_is_quoted_as_parsed_not_as_escaped() -> None:
    # Escapes .NET's serialisers use: whatever the escaping, the quote shows the plain text,
    # so that whoever redacts it finds a key written in it.
    text = '{"Status":"Pending","Echo":"a\\/b\\u002Bc\\u00e9"}'
    result = update_answer(200, {}, text)
    assert result.outcome is Outcome.TRANSIENT
    assert "a/b+cé" in result.message


@pytest.mark.parametrize("status", [200, 500])
def test_a_message_holding_a_lone_surrogate_comes_out_as_text_any_database_stores(
    status: int,
) -> None:
    # json.dumps writes both escaped (\udfff, \ud800), as a server may.
    text = error_body("MXInvalidInputException\udfff", "bad value \ud800 for mx_City")
    result = update_answer(status, {}, text)
    assert result.outcome is Outcome.REJECTED
    assert "bad value ? for mx_City" in result.message
    result.message.encode("utf-8")  # what SQLite and PostgreSQL need of it


@pytest.mark.parametrize("status", [200, 500])
def test_a_value_over_a_limit_is_the_leads_error_not_throttling(status: int) -> None:
    # Only the account's calls exceeding their limit is throttling: this lead's value would
    # otherwise hold back the whole account, again and again, without ever being parked.
    message = "Value of mx_Notes exceeded the limit of 200 characters"
    result = update_answer(status, {}, error_body("MXInvalidInputException", message))
    assert result.outcome is Outcome.REJECTED
    assert message in result.message
