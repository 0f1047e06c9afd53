"""connector.ownership's decisions: which leads are sent, held, detached or counted again."""

from __future__ import annotations

import pytest

from connector.leads import LeadState
from connector.ownership import Look, Settlement, detached_reason, first_look, settle


def lead(source_key: str = "1", other_key: str | None = None) -> LeadState:
    return LeadState("L1", source_key, {}, {}, pending=True, other_key=other_key)


@pytest.mark.parametrize(
    ("state", "now", "look"),
    [
        (lead("1"), {"1": "L1"}, Look.SEND),
        (lead("1"), {"1": "L2"}, Look.DETACHED),
        (lead("1"), {"1": None}, Look.DETACHED),
        (lead("1"), {}, Look.DETACHED),
        (lead("1", "2"), {"1": "L1", "2": "L1"}, Look.SHARED),
        (lead("1", "2"), {"1": "L1", "2": "L2"}, Look.RECOUNT),
        (lead("1", "2"), {"1": None, "2": "L1"}, Look.RECOUNT),
        (lead("1", "2"), {"1": None, "2": None}, Look.RECOUNT),
    ],
    ids=repr,
)
def test_first_look(state: LeadState, now: dict[str, str | None], look: Look) -> None:
    assert first_look(state, now) is look


@pytest.mark.parametrize(
    ("state", "pointing", "settlement"),
    [
        (lead("1", "2"), [], Settlement(None)),
        (lead("1", "2"), ["1"], Settlement("1")),
        (lead("1", "2"), ["2"], Settlement("2")),
        (lead("1", "2"), ["1", "3"], Settlement("1", "3")),
        (lead("1", "2"), ["2", "3"], Settlement("2", "3")),
        (lead("3", "2"), ["1", "3", "4"], Settlement("3", "1")),
    ],
    ids=repr,
)
def test_settle_keeps_the_stored_row_while_it_still_points_here(
    state: LeadState, pointing: list[str], settlement: Settlement
) -> None:
    assert settle(state, pointing) == settlement


def test_a_detached_lead_says_where_its_row_went() -> None:
    assert "row 1 now has lead id L2" in detached_reason(lead("1"), {"1": "L2"})
    assert "row 1 was deleted or has no usable lead id" in detached_reason(lead("1"), {})
