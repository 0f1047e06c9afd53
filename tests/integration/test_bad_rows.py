"""Rows the connector cannot send or cannot even read: each holds back only itself, and
`status` and the run summary say which row, which column, and why."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.report import print_status
from connector.testing.emulator import Emulator
from tests.integration.test_ingest import table_connector
from tests.integration.test_value_formats import sent_values
from tests.support import execute


def test_status_says_the_connector_held_back_a_lead_with_binary_data(
    db_url: str, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    binary = "BYTEA" if db_url.startswith("postgresql") else "BLOB"
    ddl = f"CREATE TABLE files (id INTEGER PRIMARY KEY, doc {binary}, city TEXT, lead TEXT)"
    with table_connector(
        db_url, emulator, "files", {"doc": "mx_Doc", "city": "mx_City"}, ddl
    ) as sync:
        with sync.engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO files VALUES (:id, :doc, :city, :lead)"),
                [
                    {"id": 1, "doc": b"%PDF", "city": "Pune", "lead": "L1"},
                    {"id": 2, "doc": None, "city": "Goa", "lead": "L2"},
                ],
            )
        sync.run_once()
        capsys.readouterr()
        print_status(sync)
        status = capsys.readouterr().out

    assert sent_values(emulator) == [("L2", {"mx_City": "Goa"})]
    assert "rejected by LeadSquared" not in status
    assert (
        "lead L1 (row 1): held back by the connector, nothing sent: row 1, column 'doc': "
        "binary values cannot be sent to LeadSquared"
    ) in status


def held_leads(sync: Connector) -> dict[str, str | None]:
    """lead id -> why the connector holds it back, for every lead it knows."""
    with sync.engine.connect() as connection:
        return {state.lead_id: state.hold for state in sync.store.all_leads(connection)}


def test_a_number_leadsquared_cannot_store_holds_back_only_its_lead(
    db_url: str, emulator: Emulator
) -> None:
    for lead_id in ("L1", "L2", "L3", "L4", "L5"):
        emulator.add_lead(lead_id)
    postgres = db_url.startswith("postgresql")
    ddl = (
        "CREATE TABLE measured (id INTEGER PRIMARY KEY, exact NUMERIC, approx "
        f"{'DOUBLE PRECISION' if postgres else 'REAL'}, lead TEXT)"
    )
    mapping = {"exact": "mx_Exact", "approx": "mx_Approx"}
    infinite, minus_infinite = ("'Infinity'", "'-Infinity'") if postgres else ("9e999", "-9e999")
    with table_connector(db_url, emulator, "measured", mapping, ddl) as sync:
        execute(
            sync.engine,
            f"INSERT INTO measured VALUES (1, 1.5, 2.5, 'L1'), (2, 1, {infinite}, 'L2'), "
            f"(3, 1, 1e300, 'L3'), (4, 1, {minus_infinite}, 'L4')"
            + (", (5, 'NaN', 1, 'L5'), (6, 1, 'NaN', 'L6')" if postgres else ""),
        )
        report = sync.run_once()
        held = held_leads(sync)

    assert (report.status, report.leads_pushed) == ("ok", 1)
    assert sent_values(emulator) == [("L1", {"mx_Approx": "2.5", "mx_Exact": "1.5"})]
    assert held["L1"] is None
    assert held["L2"] == "row 2, column 'approx': infinite numbers cannot be sent to LeadSquared"
    assert held["L3"] == (
        "row 3, column 'approx': numbers of more than 38 digits cannot be sent to LeadSquared"
    )
    assert held["L4"] == "row 4, column 'approx': infinite numbers cannot be sent to LeadSquared"
    if postgres:
        assert held["L5"] == "row 5, column 'exact': not a number (NaN), cannot be sent"
        assert held["L6"] == "row 6, column 'approx': not a number (NaN), cannot be sent"
