"""Reading Lead/Bulk/UpdateV2's report into one answer per lead."""

from __future__ import annotations

from typing import Any

import pytest

from connector.bulk import read_report
from connector.outcomes import SUCCESS, AnswerKind

KEYS = ["L1", "L2", "L3", "L4"]


def report(
    failed: list[dict[str, Any]] | None = None,
    unprocessed: list[dict[str, Any]] | None = None,
    *,
    successes: int | None = None,
    total: int = len(KEYS),
) -> dict[str, Any]:
    failed = failed or []
    unprocessed = unprocessed or []
    if successes is None:
        successes = total - len(failed) - len(unprocessed)
    return {
        "Status": {
            "TotalCount": total,
            "SuccessCount": successes,
            "FailureCount": len(failed),
            "UnProcessedCount": len(unprocessed),
        },
        "Details": {"FailedLeads": failed, "UnProcessedLeads": unprocessed},
    }


def entry(value: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"Identifier": "ProspectId", "IdentifierValue": value, "Reason": reason, **extra}


def test_every_lead_succeeds_when_none_is_listed() -> None:
    assert read_report(report(), KEYS, search_by="ProspectId") == dict.fromkeys(KEYS, SUCCESS)


def test_each_lead_gets_its_own_outcome_in_a_mixed_answer() -> None:
    body = report(
        [
            entry("L2", "Attribute(s) does not exist - mx_Gone", ExceptionType="X"),
            entry(
                "L3", "Invalid value for attribute mx_Plan", ExceptionType="MXInvalidInputException"
            ),
        ],
        [entry("L4", "Lead does not exist")],
    )
    answers = read_report(body, KEYS, search_by="ProspectId")
    assert answers["L1"] is SUCCESS
    assert answers["L2"].kind is AnswerKind.REJECTED
    assert answers["L2"].unknown_attributes == {"mx_Gone"}
    assert answers["L3"].kind is AnswerKind.REJECTED
    assert answers["L3"].exception_type == "MXInvalidInputException"
    assert "mx_Plan" in answers["L3"].error
    assert answers["L4"].kind is AnswerKind.NOT_FOUND
    assert "ProspectId 'L4'" in answers["L4"].error


def test_an_email_is_matched_whatever_case_the_answer_spells_it_in() -> None:
    keys = ["Ann@Example.com", "bob@example.com"]
    body = report([entry(" ann@example.COM", "bad")], total=2)
    answers = read_report(body, keys, search_by="EmailAddress")
    assert answers["Ann@Example.com"].kind is AnswerKind.REJECTED
    assert answers["bob@example.com"] is SUCCESS


def test_a_phone_is_matched_exactly() -> None:
    body = report([entry("+44 20", "bad")], total=2)
    answers = read_report(body, ["+4420", "+44 20"], search_by="Phone")
    assert answers["+44 20"].kind is AnswerKind.REJECTED
    assert answers["+4420"] is SUCCESS


@pytest.mark.parametrize(
    "body",
    [
        # A count that does not add up: which lead failed is not known.
        report(successes=2),
        report(successes=None) | {"Status": {"TotalCount": 4}},
        # A listed lead that was never sent.
        report([entry("L9", "bad")], successes=3),
        # The same lead listed twice.
        report([entry("L1", "bad"), entry("L1", "bad")], successes=2),
        # An entry that names no lead.
        report([{"Reason": "bad"}], successes=3),
    ],
)
def test_a_lead_the_answer_does_not_account_for_is_sent_again(body: dict[str, Any]) -> None:
    answers = read_report(body, KEYS, search_by="ProspectId")
    assert all(answer is not SUCCESS for answer in answers.values())
    unlisted = [key for key in KEYS if answers[key].kind is AnswerKind.TRANSIENT]
    assert unlisted, answers
    assert all("does not account for every lead" in answers[key].error for key in unlisted)


@pytest.mark.parametrize(
    "details", ["nonsense", {"FailedLeads": "x"}, {"UnProcessedLeads": {"a": 1}}, 7]
)
def test_unreadable_details_leave_every_lead_to_be_sent_again(details: Any) -> None:
    body = report() | {"Details": details}
    answers = read_report(body, KEYS, search_by="ProspectId")
    assert {answer.kind for answer in answers.values()} == {AnswerKind.TRANSIENT}


def test_no_details_at_all_with_matching_counts_is_success() -> None:
    body = report()
    del body["Details"]
    assert read_report(body, KEYS, search_by="ProspectId") == dict.fromkeys(KEYS, SUCCESS)


def test_a_huge_reason_is_cut() -> None:
    body = report([entry("L1", "x" * 100_000)])
    assert len(read_report(body, KEYS, search_by="ProspectId")["L1"].error) < 1000


def test_a_leads_own_failure_is_classified_as_a_single_calls_would_be() -> None:
    body = report(
        [
            entry("L1", "There was an error processing the request", ExceptionType="MXException"),
            entry("L2", "API calls exceeded the limit of 5 in 5 second(s)"),
            entry("L3", "bad", ExceptionType="MXInvalidInputException"),
        ]
    )
    answers = read_report(body, KEYS, search_by="ProspectId")
    assert answers["L1"].kind is AnswerKind.AMBIGUOUS
    assert answers["L2"].kind is AnswerKind.THROTTLED
    assert answers["L3"].kind is AnswerKind.REJECTED
    assert answers["L4"] is SUCCESS


def test_null_lists_and_a_prospect_id_in_another_case_are_read() -> None:
    keys = ["6f1c2a9e-AAAA", "x-2"]
    body = report(total=2, successes=1) | {
        "Details": {"FailedLeads": [entry(" 6F1C2A9E-aaaa ", "bad")], "UnProcessedLeads": None}
    }
    answers = read_report(body, keys, search_by="ProspectId")
    assert answers["6f1c2a9e-AAAA"].kind is AnswerKind.REJECTED
    assert answers["x-2"] is SUCCESS
