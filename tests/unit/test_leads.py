"""connector.leads: folding changed rows into per-lead desired values, and push results."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.leads import DesiredChange, LeadState, SourceRow, after_push, fold_rows

ATTRIBUTES = frozenset({"Phone", "mx_City"})


def state(
    lead_id: str,
    desired: dict[str, str | None],
    pushed: dict[str, str | None],
    source_key: str = "1",
) -> LeadState:
    return LeadState(
        lead_id=lead_id,
        source_key=source_key,
        desired=desired,
        pushed=pushed,
        pending=desired != pushed,
    )


def test_new_lead_becomes_pending_with_its_values() -> None:
    rows = [SourceRow("1", "L1", {"Phone": "111", "mx_City": "Pune"})]
    result = fold_rows(rows, {}, ATTRIBUTES)
    assert result.changes == [
        DesiredChange("L1", "1", {"Phone": "111", "mx_City": "Pune"}, pending=True)
    ]
    assert result.rows_without_lead == 0


def test_several_rows_of_one_lead_coalesce_and_the_last_wins() -> None:
    rows = [
        SourceRow("1", "L1", {"Phone": "111", "mx_City": "Pune"}),
        SourceRow("2", "L2", {"Phone": "222", "mx_City": "Goa"}),
        SourceRow("3", "L1", {"Phone": "333", "mx_City": "Agra"}),
    ]
    result = fold_rows(rows, {}, ATTRIBUTES)
    by_lead = {change.lead_id: change for change in result.changes}
    assert len(result.changes) == 2
    assert by_lead["L1"] == DesiredChange("L1", "3", {"Phone": "333", "mx_City": "Agra"}, True)
    assert by_lead["L2"].desired == {"Phone": "222", "mx_City": "Goa"}


def test_rows_without_lead_id_are_counted_not_folded() -> None:
    rows = [
        SourceRow("1", None, {"Phone": "111", "mx_City": None}),
        SourceRow("2", "L2", {"Phone": "222", "mx_City": None}),
        SourceRow("3", None, {"Phone": "333", "mx_City": None}),
    ]
    result = fold_rows(rows, {}, ATTRIBUTES)
    assert [change.lead_id for change in result.changes] == ["L2"]
    assert result.rows_without_lead == 2


def test_unchanged_desired_values_are_skipped() -> None:
    values: dict[str, str | None] = {"Phone": "111", "mx_City": "Pune"}
    existing = {"L1": state("L1", dict(values), {}, source_key="1")}
    result = fold_rows([SourceRow("1", "L1", dict(values))], existing, ATTRIBUTES)
    assert result.changes == []


def test_same_values_from_another_row_are_still_written() -> None:
    # The lead's source row changed (say its key was updated): record where it comes from now.
    values: dict[str, str | None] = {"Phone": "111", "mx_City": "Pune"}
    existing = {"L1": state("L1", dict(values), dict(values), source_key="1")}
    result = fold_rows([SourceRow("9", "L1", dict(values))], existing, ATTRIBUTES)
    assert result.changes == [DesiredChange("L1", "9", values, pending=False)]


def test_pending_is_computed_against_what_was_pushed() -> None:
    pushed: dict[str, str | None] = {"Phone": "111", "mx_City": "Pune"}
    existing = {
        "L1": state("L1", {"Phone": "111", "mx_City": "Goa"}, pushed),
        "L2": state("L2", {"Phone": "111", "mx_City": "Pune"}, pushed, source_key="2"),
    }
    rows = [
        # Set back to what LeadSquared already holds: a change of desired, but nothing to send.
        SourceRow("1", "L1", {"Phone": "111", "mx_City": "Pune"}),
        # Really differs from what was pushed.
        SourceRow("2", "L2", {"Phone": "222", "mx_City": "Pune"}),
    ]
    result = fold_rows(rows, existing, ATTRIBUTES)
    assert {c.lead_id: c.pending for c in result.changes} == {"L1": False, "L2": True}


def test_pending_ignores_unmapped_attributes() -> None:
    rows = [SourceRow("1", "L1", {"Phone": "111", "mx_Old": "x"})]
    existing = {"L1": state("L1", {"Phone": "000"}, {"Phone": "111"})}
    [change] = fold_rows(rows, existing, frozenset({"Phone"})).changes
    assert change.pending is False


def test_none_on_a_never_pushed_lead_is_not_pending() -> None:
    rows = [SourceRow("1", "L1", {"Phone": None, "mx_City": None})]
    [change] = fold_rows(rows, {}, ATTRIBUTES).changes
    assert change.pending is False


# -- after_push -----------------------------------------------------------------------------


def test_after_push_records_exactly_what_was_sent() -> None:
    pushed, pending = after_push(
        desired={"Phone": "222", "mx_City": "Goa"},
        pushed={"Phone": "111", "mx_City": "Pune"},
        sent={"mx_City": "Goa", "Phone": "222"},
        attributes=ATTRIBUTES,
    )
    assert pushed == {"Phone": "222", "mx_City": "Goa"}
    assert pending is False


def test_after_push_keeps_attributes_not_sent() -> None:
    pushed, pending = after_push(
        desired={"Phone": "111", "mx_City": "Goa"},
        pushed={"Phone": "111", "mx_City": "Pune"},
        sent={"mx_City": "Goa"},
        attributes=ATTRIBUTES,
    )
    assert pushed == {"Phone": "111", "mx_City": "Goa"}
    assert pending is False


def test_desired_moved_on_during_the_call_stays_pending() -> None:
    # The plan sent Goa; meanwhile ingest recorded Agra as the new desired value.
    pushed, pending = after_push(
        desired={"Phone": "111", "mx_City": "Agra"},
        pushed={"Phone": "111", "mx_City": "Pune"},
        sent={"mx_City": "Goa"},
        attributes=ATTRIBUTES,
    )
    assert pushed == {"Phone": "111", "mx_City": "Goa"}
    assert pending is True


def test_sent_value_that_desired_moved_back_to_is_not_pending() -> None:
    pushed, pending = after_push(
        desired={"mx_City": "Goa"}, pushed={}, sent={"mx_City": "Goa"}, attributes=ATTRIBUTES
    )
    assert (pushed, pending) == ({"mx_City": "Goa"}, False)


values_st = st.dictionaries(
    st.sampled_from(sorted(ATTRIBUTES)), st.none() | st.sampled_from(["a", "b", "c"])
)


@given(values_st, values_st)
def test_pushing_the_whole_plan_leaves_nothing_pending(
    desired: dict[str, str | None], pushed: dict[str, str | None]
) -> None:
    plan = {a: v for a, v in desired.items() if v != pushed.get(a)}
    _, pending = after_push(desired, pushed, plan, ATTRIBUTES)
    assert pending is False
