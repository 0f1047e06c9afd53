"""connector.leads: folding changed rows into per-lead desired values, and push results."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.leads import DesiredChange, SourceRow, after_failure, after_push, fold_rows

ATTRIBUTES = frozenset({"Phone", "mx_City"})


def test_a_lead_gets_its_row_values() -> None:
    rows = [SourceRow("1", "L1", {"Phone": "111", "mx_City": "Pune"})]
    result = fold_rows(rows)
    assert result.changes == [DesiredChange("L1", "1", {"Phone": "111", "mx_City": "Pune"})]
    assert result.rows_without_lead == 0


def test_several_rows_of_one_lead_leave_the_last_ones_values_and_another_ones_key() -> None:
    rows = [
        SourceRow("1", "L1", {"Phone": "111", "mx_City": "Pune"}),
        SourceRow("2", "L2", {"Phone": "222", "mx_City": "Goa"}),
        SourceRow("3", "L1", {"Phone": "333", "mx_City": "Agra"}),
    ]
    result = fold_rows(rows)
    by_lead = {change.lead_id: change for change in result.changes}
    assert len(result.changes) == 2
    assert by_lead["L1"] == DesiredChange(
        "L1", "3", {"Phone": "333", "mx_City": "Agra"}, other_key="1"
    )
    assert by_lead["L2"] == DesiredChange("L2", "2", {"Phone": "222", "mx_City": "Goa"})


def test_rows_without_lead_id_are_counted_not_folded() -> None:
    rows = [
        SourceRow("1", None, {"Phone": "111", "mx_City": None}),
        SourceRow("2", "L2", {"Phone": "222", "mx_City": None}),
        SourceRow("3", None, {"Phone": "333", "mx_City": None}),
    ]
    result = fold_rows(rows)
    assert [change.lead_id for change in result.changes] == ["L2"]
    assert result.rows_without_lead == 2


def test_a_rows_hold_travels_with_its_lead() -> None:
    rows = [SourceRow("1", "L1", {"Phone": "111"}, hold="row 1, column 'city': binary")]
    [change] = fold_rows(rows).changes
    assert change.hold == "row 1, column 'city': binary"


# -- after_push -----------------------------------------------------------------------------


AFTER_PUSH = {
    "records-exactly-what-was-sent": (
        {"Phone": "222", "mx_City": "Goa"},
        {"Phone": "111", "mx_City": "Pune"},
        {"mx_City": "Goa", "Phone": "222"},
        ({"Phone": "222", "mx_City": "Goa"}, False),
    ),
    "keeps-attributes-not-sent": (
        {"Phone": "111", "mx_City": "Goa"},
        {"Phone": "111", "mx_City": "Pune"},
        {"mx_City": "Goa"},
        ({"Phone": "111", "mx_City": "Goa"}, False),
    ),
    # The plan sent Goa; meanwhile ingest recorded Agra as the new desired value.
    "desired-moved-on-during-the-call-stays-pending": (
        {"Phone": "111", "mx_City": "Agra"},
        {"Phone": "111", "mx_City": "Pune"},
        {"mx_City": "Goa"},
        ({"Phone": "111", "mx_City": "Goa"}, True),
    ),
    "sent-value-that-desired-moved-back-to-is-not-pending": (
        {"mx_City": "Goa"},
        {},
        {"mx_City": "Goa"},
        ({"mx_City": "Goa"}, False),
    ),
}


@pytest.mark.parametrize(
    ("desired", "pushed", "sent", "expected"), AFTER_PUSH.values(), ids=AFTER_PUSH.keys()
)
def test_after_push_records_what_was_sent_and_stays_pending_only_if_desired_moved_on(
    desired: dict[str, str],
    pushed: dict[str, str],
    sent: dict[str, str],
    expected: tuple[dict[str, str], bool],
) -> None:
    now_pushed, _, pending = after_push(
        desired=desired, pushed=pushed, sent=sent, attributes=ATTRIBUTES
    )
    assert (now_pushed, pending) == expected


# -- after_failure --------------------------------------------------------------------------

LATER = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("rejected", [True, False])
def test_a_failure_of_the_values_still_desired_sticks(rejected: bool) -> None:
    desired = {"mx_City": "Goa"}
    retry_at = None if rejected else LATER
    assert after_failure(
        desired, dict(desired), 2, rejected=rejected, next_attempt_at=retry_at
    ) == (3, rejected, retry_at)


@pytest.mark.parametrize("rejected", [True, False])
def test_a_failure_of_values_ingest_has_since_replaced_does_not_hold_the_new_ones(
    rejected: bool,
) -> None:
    retry_at = None if rejected else LATER
    assert after_failure(
        {"mx_City": "Agra"}, {"mx_City": "Goa"}, 0, rejected=rejected, next_attempt_at=retry_at
    ) == (1, False, None)


values_st = st.dictionaries(
    st.sampled_from(sorted(ATTRIBUTES)), st.none() | st.sampled_from(["a", "b", "c"])
)


@given(values_st, values_st)
def test_pushing_the_whole_plan_leaves_nothing_pending(
    desired: dict[str, str | None], pushed: dict[str, str | None]
) -> None:
    plan = {a: v for a, v in desired.items() if v != pushed.get(a)}
    _, _, pending = after_push(desired, pushed, plan, ATTRIBUTES)
    assert pending is False


SET_ASIDE = {
    "for-its-current-value-leaves-nothing-pending": ({"mx_Gone": "x"}, {"mx_Gone": "x"}, False),
    "with-a-new-value-is-pending-again": ({"mx_Gone": "y"}, {}, True),
    "back-to-what-was-pushed-is-no-longer-aside": ({"mx_Gone": "old"}, {}, False),
}


@pytest.mark.parametrize(
    ("desired_gone", "aside", "pending"), SET_ASIDE.values(), ids=SET_ASIDE.keys()
)
def test_an_attribute_set_aside_stays_aside_only_for_the_value_refused(
    desired_gone: dict[str, str], aside: dict[str, str], pending: bool
) -> None:
    assert after_push(
        desired={"Phone": "222", **desired_gone},
        pushed={"mx_Gone": "old"},
        sent={"Phone": "222"},
        attributes=frozenset({"Phone", "mx_Gone"}),
        set_aside={"mx_Gone": "x"},
    ) == ({"Phone": "222", "mx_Gone": "old"}, aside, pending)


def test_an_accepted_attribute_is_no_longer_set_aside() -> None:
    _, aside, pending = after_push(
        desired={"mx_Gone": "y"},
        pushed={},
        sent={"mx_Gone": "y"},
        attributes=frozenset({"mx_Gone"}),
        set_aside={"mx_Gone": "x"},
    )
    assert (aside, pending) == ({}, False)


def test_only_the_reasons_of_attributes_still_set_aside_are_kept() -> None:
    from connector.leads import reasons_kept  # noqa: PLC0415

    reasons = {"mx_A": "refused", "mx_B": "too long"}
    assert reasons_kept(reasons, {"mx_B": "x"}) == {"mx_B": "too long"}
    assert reasons_kept(reasons, {}) == {}
