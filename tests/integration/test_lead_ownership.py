"""One row per lead: a lead fed by several rows is held back until only one points to it, and
a lead no row points to any more is never sent a row's values again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import Connector
from connector.report import print_status
from connector.testing.emulator import Emulator
from tests.integration.test_ingest import run_ingest, table_connector
from tests.integration.test_value_formats import sent_values
from tests.support import config_dict, execute, load


@pytest.fixture
def sync(db_url: str, app: sa.Engine, emulator: Emulator) -> Iterator[Connector]:
    """The customers table, whose columns the database folds itself."""
    for lead_id in ("L1", "L2", "L3"):
        emulator.add_lead(lead_id)
    with Connector(load(config_dict(db_url, emulator))) as sync:
        sync.init()
        yield sync


@pytest.fixture(params=["sql", "python"])
def folded(request: pytest.FixtureRequest, db_url: str, emulator: Emulator) -> Iterator[Connector]:
    """A table whose rows the database folds itself, or (a NUMERIC column) Python does."""
    for lead_id in ("L1", "L2", "L3"):
        emulator.add_lead(lead_id)
    price = "INTEGER" if request.param == "sql" else "NUMERIC"
    ddl = f"CREATE TABLE customers (id INTEGER PRIMARY KEY, city TEXT, price {price}, lead TEXT)"
    mapping = {"city": "mx_City", "price": "mx_Price"}
    with table_connector(db_url, emulator, "customers", mapping, ddl) as sync:
        assert (sync.source.desired_query(["1"]) is not None) == (request.param == "sql")
        yield sync


def status_of(sync: Connector, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    print_status(sync)
    return capsys.readouterr().out


def test_two_rows_with_one_lead_id_in_one_batch_hold_the_lead_until_one_moves(
    folded: Connector, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sync = folded
    execute(
        sync.engine,
        "INSERT INTO customers (id, city, lead) VALUES "
        "(1, 'Pune', 'L1'), (2, 'Goa', 'L1'), (3, 'Agra', 'L3')",
    )

    report = sync.run_once()

    assert sent_values(emulator) == [("L3", {"mx_City": "Agra"})]
    assert report.counts.leads_held_shared == 1
    assert "1 lead held back: several rows have its lead id" in report.summary()
    status = status_of(sync, capsys)
    assert "lead L1 (row " in status
    assert "rows 1 and 2 both have lead id L1" in status or (
        "rows 2 and 1 both have lead id L1" in status
    )
    emulator.clear_requests()

    execute(sync.engine, "UPDATE customers SET lead = 'L2' WHERE id = 2")
    report = sync.run_once()

    assert sorted(sent_values(emulator)) == [
        ("L1", {"mx_City": "Pune"}),
        ("L2", {"mx_City": "Goa"}),
    ]
    assert report.counts.leads_held_shared == 0
    assert "L1" not in status_of(sync, capsys)


def test_a_second_row_claiming_a_pushed_lead_is_caught_across_runs(
    sync: Connector, emulator: Emulator
) -> None:
    execute(
        sync.engine, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')"
    )
    sync.run_once()
    emulator.clear_requests()

    # Its empty phone must not clear row 1's; nor its city overwrite row 1's.
    execute(
        sync.engine,
        "UPDATE customers SET phone = '111' WHERE id = 1",
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'Goa', 'L1')",
    )
    sync.run_once()
    assert sent_values(emulator) == []

    # The newcomer moves to its own lead: the one row left on L1 is pushed, its values.
    execute(sync.engine, "UPDATE customers SET lsq_prospect_id = 'L2' WHERE id = 2")
    sync.run_once()

    assert sorted(sent_values(emulator)) == [("L1", {"Phone": "111"}), ("L2", {"mx_City": "Goa"})]


def test_when_the_row_whose_values_are_stored_leaves_the_lead_the_other_rows_are_pushed(
    sync: Connector, emulator: Emulator
) -> None:
    execute(
        sync.engine, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')"
    )
    sync.run_once()
    execute(
        sync.engine, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'Goa', 'L1')"
    )
    sync.run_once()  # L1 now stores row 2's values, held back
    emulator.clear_requests()

    # Deletes are not captured: the push phase finds out for itself.
    execute(
        sync.engine,
        "DELETE FROM customers WHERE id = 2",
        "UPDATE customers SET plan = 'pro' WHERE id = 1",
    )
    sync.run_once()

    assert sent_values(emulator) == [("L1", {"mx_Plan": "pro"})]
    assert emulator.lead("L1") == {"mx_City": "Pune", "mx_Plan": "pro"}


def test_three_rows_on_one_lead_hold_it_until_only_one_is_left(
    sync: Connector, emulator: Emulator
) -> None:
    for key, city in ((1, "Pune"), (2, "Goa"), (3, "Agra")):
        execute(
            sync.engine,
            f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES ({key}, '{city}', 'L1')",
        )
        sync.run_once()
    assert sent_values(emulator) == [("L1", {"mx_City": "Pune"})]
    emulator.clear_requests()

    execute(sync.engine, "UPDATE customers SET lsq_prospect_id = NULL WHERE id = 2")
    assert sync.run_once().counts.leads_held_shared == 1  # rows 1 and 3 still
    assert sent_values(emulator) == []

    execute(sync.engine, "UPDATE customers SET lsq_prospect_id = 'L3' WHERE id = 3")
    sync.run_once()

    assert sorted(sent_values(emulator)) == [("L3", {"mx_City": "Agra"})]
    assert emulator.lead("L1") == {"mx_City": "Pune"}
    with sync.engine.connect() as connection:
        [state] = [s for s in sync.tables.leads.all_leads(connection) if s.lead_id == "L1"]
    assert (state.source_key, state.other_key, state.hold, state.pending) == (
        "1",
        None,
        None,
        False,
    )


# -- a row that moves to another lead ----------------------------------------------------------


def test_retry_never_sends_a_row_to_the_lead_it_left(
    sync: Connector, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    execute(
        sync.engine, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L9')"
    )
    report = sync.run_once()
    assert report.counts.leads_rejected == 1  # L9 is not a lead LeadSquared knows
    execute(sync.engine, "UPDATE customers SET lsq_prospect_id = 'L2' WHERE id = 1")
    sync.run_once()
    assert emulator.lead("L2") == {"mx_City": "Pune"}
    emulator.clear_requests()

    assert sync.retry(["L9"]) == 1
    report = sync.run_once()

    assert sent_values(emulator) == []
    assert report.counts.leads_detached == 1
    status = status_of(sync, capsys)
    assert (
        "lead L9 (row 1): held back by the connector, nothing sent: detached: row 1 now has "
        "lead id L2" in status
    )
    assert sync.retry(["L9"]) == 0  # it waits for a row, not for LeadSquared


def test_a_lead_deferred_before_its_row_moved_is_not_sent_the_rows_values(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    config = config_dict(db_url, emulator, leadsquared={"retry": {"attempts": 1}})
    with Connector(load(config)) as sync:
        sync.init()
        execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
        emulator.fail_next(1, "503")
        assert sync.run_once().counts.leads_deferred == 1
        with sync.engine.begin() as connection:  # as if its retry delay were over
            connection.execute(sa.text("UPDATE lsq_sync_lead SET next_attempt_at = NULL"))
        emulator.clear_requests()

        execute(app, "UPDATE customers SET lsq_prospect_id = 'L2' WHERE id = 1")
        report = sync.run_once()

    assert sent_values(emulator) == [("L2", {"mx_City": "Pune"})]
    assert report.counts.leads_detached == 1


# Each example starts from empty tables, so sharing the fixture's table is safe.
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leads=st.lists(st.sampled_from(["L1", "L2", "L3", None]), min_size=1, max_size=10))
def test_both_folds_agree_on_which_leads_several_rows_share(
    folded: Connector, leads: list[str | None]
) -> None:
    sync = folded
    rows = [{"id": n, "city": f"c{n}", "lead": lead} for n, lead in enumerate(leads, 1)]
    with sync.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM customers"))
        connection.execute(sa.text("DELETE FROM lsq_sync_lead"))
        connection.execute(
            sa.text("INSERT INTO customers (id, city, lead) VALUES (:id, :city, :lead)"), rows
        )

    run_ingest(sync)

    with sync.engine.connect() as connection:
        stored = {s.lead_id: s for s in sync.tables.leads.all_leads(connection)}
    rows_of = {lead: {str(r["id"]) for r in rows if r["lead"] == lead} for lead in stored}
    assert set(stored) == {lead for lead in leads if lead is not None}
    for lead_id, state in stored.items():
        assert state.source_key in rows_of[lead_id]
        assert (state.other_key is not None) == (len(rows_of[lead_id]) > 1)
        assert state.other_key in rows_of[lead_id] - {state.source_key} | {None}


def test_sqlite_rows_with_one_lead_id_as_an_integer_and_as_text_share_it(
    tmp_path: Path, emulator: Emulator
) -> None:
    """A column declared without a type keeps 5 and '5' apart; both are lead id 5."""
    huge = "9" * 20  # text only: no SQLite integer is that large
    emulator.add_lead("5")
    emulator.add_lead(huge)
    url = f"sqlite:///{tmp_path / 'untyped.db'}"
    ddl = "CREATE TABLE customers (id INTEGER PRIMARY KEY, city TEXT, lead)"
    with table_connector(url, emulator, "customers", {"city": "mx_City"}, ddl) as sync:
        execute(
            sync.engine,
            "INSERT INTO customers VALUES (1, 'Pune', 5), (2, 'Goa', '5'), (3, 'Agra', '5'), "
            f"(4, 'Goa', '{huge}'), (5, 'Agra', '{huge}')",
        )
        sync.run_once()
        execute(sync.engine, "UPDATE customers SET lead = NULL WHERE id IN (3, 5)")

        report = sync.run_once()

        assert sent_values(emulator) == [(huge, {"mx_City": "Goa"})]
        assert report.counts.leads_held_shared == 1
        emulator.clear_requests()

        execute(sync.engine, "UPDATE customers SET lead = NULL WHERE id = 2")
        sync.run_once()

    assert sent_values(emulator) == [("5", {"mx_City": "Pune"})]
