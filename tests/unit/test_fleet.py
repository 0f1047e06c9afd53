"""The fair share and the moves a daemon makes toward it (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.fleet import Moves, fair_share, member_key, plan_moves


def test_the_shares_of_the_live_daemons_cover_every_connector_and_differ_by_at_most_one() -> None:
    assert fair_share(20, 2) == 10
    assert fair_share(5, 2) == 3
    assert fair_share(20, 3) == 7
    assert fair_share(3, 5) == 1
    assert fair_share(4, 0) == 4, "a daemon that cannot count the others counts itself alone"


@given(st.integers(0, 500), st.integers(1, 50))
def test_the_shares_always_cover_the_connectors(connectors: int, daemons: int) -> None:
    share = fair_share(connectors, daemons)
    assert share * daemons >= connectors
    assert (share - 1) * daemons < connectors or share == 0


def test_a_daemon_under_its_share_claims_free_connectors_up_to_it() -> None:
    assert plan_moves(["a"], ["b", "c", "d"], 3) == Moves(claim=("b", "c"))
    assert plan_moves([], ["b"], 3) == Moves(claim=("b",))
    assert plan_moves(["a"], ["a", "b"], 2) == Moves(claim=("b",)), "never its own again"


def test_a_daemon_over_its_share_releases_its_newest_and_claims_nothing() -> None:
    assert plan_moves(["old", "mid", "new"], ["free"], 1) == Moves(release=("mid", "new"))


def test_a_daemon_at_its_share_moves_nothing() -> None:
    assert plan_moves(["a", "b"], ["c"], 2) == Moves()


def test_member_keys_are_32_bit_and_differ_by_schema() -> None:
    keys = {member_key(f"test.schema_{n}") for n in range(100)}
    assert len(keys) == 100
    assert all(-(2**31) <= key < 2**31 for key in keys)
