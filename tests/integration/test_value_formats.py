"""What reaches LeadSquared for each kind of source value, end to end on both databases: the
formats the README's table promises, and values held back rather than sent wrong."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.testing.emulator import Emulator
from tests.integration.test_ingest import table_connector
from tests.support import execute

THIRTY_EIGHT_DIGITS = "1234567890123456789012345678901234.5678"


def sent_values(emulator: Emulator) -> list[tuple[str | None, dict[str, str]]]:
    return [
        (r.lead_id, {f["Attribute"]: f["Value"] for f in r.body})
        for r in emulator.requests
        if r.api == "Lead.Update"
    ]


def insert(sync: Connector, table: str, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    statement = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    )
    with sync.engine.begin() as connection:
        connection.execute(sa.text(statement), rows)


@pytest.fixture
def priced(db_url: str, emulator: Emulator) -> Iterator[Connector]:
    for lead_id in ("L1", "L2", "L3"):
        emulator.add_lead(lead_id)
    ddl = "CREATE TABLE priced (id INTEGER PRIMARY KEY, price NUMERIC, lead TEXT)"
    with table_connector(db_url, emulator, "priced", {"price": "mx_Price"}, ddl) as sync:
        yield sync


def test_a_38_digit_numeric_reaches_leadsquared_exactly(
    priced: Connector, emulator: Emulator
) -> None:
    if priced.engine.dialect.name == "sqlite":
        # SQLite keeps a NUMERIC as a 64-bit integer or a double: these are exact there.
        values = {"L1": "1234567890123456789", "L2": "123.456789012345", "L3": "-0.000001"}
        insert(
            priced,
            "priced",
            [
                {"id": 1, "price": 1234567890123456789, "lead": "L1"},
                {"id": 2, "price": 123.456789012345, "lead": "L2"},
                {"id": 3, "price": -0.000001, "lead": "L3"},
            ],
        )
    else:
        values = {"L1": THIRTY_EIGHT_DIGITS, "L2": "0.00000000000000000000000000000000000001"}
        execute(
            priced.engine,
            f"INSERT INTO priced VALUES (1, {THIRTY_EIGHT_DIGITS}, 'L1'), "
            f"(2, {values['L2']}, 'L2')",
        )

    priced.run_once()

    assert {lead: emulator.lead(lead)["mx_Price"] for lead in values} == values


def test_a_change_in_the_last_digit_of_38_is_sent(priced: Connector, emulator: Emulator) -> None:
    if priced.engine.dialect.name == "sqlite":
        before, after = "1234567890123456789", "1234567890123456788"
    else:
        before, after = THIRTY_EIGHT_DIGITS, THIRTY_EIGHT_DIGITS[:-1] + "9"
    execute(priced.engine, f"INSERT INTO priced VALUES (1, {before}, 'L1')")
    priced.run_once()
    emulator.clear_requests()

    execute(priced.engine, f"UPDATE priced SET price = {after}")
    priced.run_once()

    assert sent_values(emulator) == [("L1", {"mx_Price": after})]
