"""What reaches LeadSquared for each kind of source value, end to end on both databases: the
formats the README's table promises, and values held back rather than sent wrong."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.sync import RunReport
from connector.testing.emulator import Emulator
from tests.integration.test_ingest import table_connector
from tests.support import execute

T = TypeVar("T")

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


def leads_held(sync: Connector) -> dict[str, str | None]:
    """lead id -> why the connector holds it back, for every lead it knows."""
    with sync.engine.connect() as connection:
        return {state.lead_id: state.hold for state in sync.tables.leads.all_leads(connection)}


def one_run(
    url: str,
    emulator: Emulator,
    table: str,
    mapping: dict[str, str],
    ddl: str,
    *writes: str,
    read: Callable[[Connector], T],
    key: str = "id",
) -> tuple[RunReport, T]:
    """One run over a new `table` (made by `ddl`, lead id column `lead`) after the
    application's `writes`: its report, and what `read` finds once it is over."""
    with table_connector(url, emulator, table, mapping, ddl, key=key) as sync:
        execute(sync.engine, *writes)
        return sync.run_once(), read(sync)


def test_postgresql_arrays_json_and_addresses_are_sent_in_their_documented_form(
    pg_url: str, emulator: Emulator
) -> None:
    for lead_id in ("L1", "L2", "L3", "L4"):
        emulator.add_lead(lead_id)
    ddl = (
        "CREATE TABLE profiles (id INTEGER PRIMARY KEY, tags TEXT[], prefs JSONB, raw JSON, "
        "counts INT[], ip INET, period INT4RANGE, wait INTERVAL, lead TEXT)"
    )
    mapping = {
        "tags": "mx_Tags",
        "prefs": "mx_Prefs",
        "raw": "mx_Raw",
        "counts": "mx_Counts",
        "ip": "mx_Ip",
        "period": "mx_Period",
        "wait": "mx_Wait",
    }
    with table_connector(pg_url, emulator, "profiles", mapping, ddl) as sync:
        execute(
            sync.engine,
            "INSERT INTO profiles (id, tags, prefs, raw, counts, ip, lead) VALUES "
            "(1, '{trial,à-la-carte}', '{\"b\": 1, \"a\": \"é\"}', '\"abc\"', '{1,NULL,3}', "
            "'10.1.2.3', 'L1'), "
            '(4, NULL, \'{"n": 1.0000000000000000000001}\', \'{"b":[], "a" : 2}\', NULL, '
            "'2001:db8::1/64', 'L4')",
            "INSERT INTO profiles (id, period, lead) VALUES (2, '[1,5)', 'L2')",
            "INSERT INTO profiles (id, wait, lead) VALUES (3, '1 mon 2 days', 'L3')",
        )
        sync.run_once()
        held = leads_held(sync)

    assert emulator.lead("L1") == {
        "mx_Tags": '["trial","à-la-carte"]',
        "mx_Prefs": '{"a":"é","b":1}',
        "mx_Raw": '"abc"',
        "mx_Counts": '["1",null,"3"]',
        "mx_Ip": "10.1.2.3",
    }
    assert emulator.lead("L4") == {
        "mx_Prefs": '{"n":1.0000000000000000000001}',
        "mx_Raw": '{"a":2,"b":[]}',
        "mx_Ip": "2001:db8::1/64",
    }
    assert emulator.lead("L2") == emulator.lead("L3") == {}
    assert held == {
        "L1": None,
        "L2": "row 2, column 'period': values of type 'Range' cannot be sent to LeadSquared",
        "L3": "row 3, column 'wait': intervals (durations) cannot be sent to LeadSquared",
        "L4": None,
    }


def test_sqlite_json_columns_are_sent_as_json_text_and_nul_in_text_is_held_back(
    tmp_path: Path, emulator: Emulator
) -> None:
    for lead_id in ("L1", "L2", "L3", "L4"):
        emulator.add_lead(lead_id)
    url = f"sqlite:///{tmp_path / 'json.db'}"
    ddl = "CREATE TABLE profiles (id INTEGER PRIMARY KEY, prefs JSON, note TEXT, lead TEXT)"
    mapping = {"prefs": "mx_Prefs", "note": "mx_Note"}
    with table_connector(url, emulator, "profiles", mapping, ddl) as sync:
        insert(
            sync,
            "profiles",
            [
                {"id": 1, "prefs": '{"b": 1, "a": "é"}', "note": "x", "lead": "L1"},
                {"id": 2, "prefs": '"abc"', "note": None, "lead": "L2"},
                {"id": 3, "prefs": "oops", "note": None, "lead": "L3"},
                {"id": 4, "prefs": None, "note": "a\x00b", "lead": "L4"},
            ],
        )
        report = sync.run_once()
        held = leads_held(sync)

    assert (report.status, report.counts.leads_pushed) == ("ok", 2)
    assert emulator.lead("L1") == {"mx_Prefs": '{"a":"é","b":1}', "mx_Note": "x"}
    assert emulator.lead("L2") == {"mx_Prefs": '"abc"'}
    assert emulator.lead("L3") == emulator.lead("L4") == {}
    assert held["L3"] == "row 3, column 'prefs': not valid JSON (Expecting value)"
    assert held["L4"] == (
        "row 4, column 'note': text holding a NUL character cannot be sent to LeadSquared"
    )


def test_sqlite_booleans_are_sent_only_when_stored_as_0_or_1(
    tmp_path: Path, emulator: Emulator
) -> None:
    """SQLite keeps any value in a BOOLEAN column: 'f' (as older ORMs wrote false) must not be
    read as true, as a Python truth test would."""
    for lead_id in ("L1", "L2", "L3", "L4", "L5"):
        emulator.add_lead(lead_id)
    url = f"sqlite:///{tmp_path / 'flags.db'}"
    ddl = "CREATE TABLE flags (id INTEGER PRIMARY KEY, active BOOLEAN, lead TEXT)"
    report, held = one_run(
        url,
        emulator,
        "flags",
        {"active": "mx_Active"},
        ddl,
        "INSERT INTO flags VALUES (1, 1, 'L1'), (2, 0, 'L2'), (3, 'f', 'L3'), "
        "(4, 'false', 'L4'), (5, 2, 'L5')",
        read=leads_held,
    )

    assert (report.status, report.counts.leads_pushed) == ("ok", 2)
    assert emulator.lead("L1") == {"mx_Active": "true"}
    assert emulator.lead("L2") == {"mx_Active": "false"}
    assert emulator.lead("L3") == emulator.lead("L4") == emulator.lead("L5") == {}
    assert held["L3"] == "row 3, column 'active': a boolean must be stored as 0 or 1, not as text"
    assert held["L5"] == "row 5, column 'active': a boolean must be stored as 0 or 1, not as 2"


def test_postgresql_arrays_of_domains_enums_and_json_keep_every_element_and_digit(
    pg_url: str, emulator: Emulator
) -> None:
    """The driver has no array loader for a domain's or an enum's array type, and parses JSON
    numbers into floats: each must still reach LeadSquared whole and exact."""
    for lead_id in ("L1", "L2"):
        emulator.add_lead(lead_id)
    ddl = [
        "CREATE DOMAIN label AS TEXT",
        "CREATE DOMAIN score AS NUMERIC",
        "CREATE DOMAIN document AS JSONB",
        "CREATE TYPE tier AS ENUM ('free', 'pro, plus')",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, labels label[], scores score[], "
        "tiers tier[], docs JSONB[], grid JSON[][], doc document, docs2 document[], lead TEXT)",
    ]
    mapping = {
        "labels": "mx_Labels",
        "scores": "mx_Scores",
        "tiers": "mx_Tiers",
        "docs": "mx_Docs",
        "grid": "mx_Grid",
        "doc": "mx_Doc",
        "docs2": "mx_Docs2",
    }
    big = "12345678901234567890.123"
    with table_connector(pg_url, emulator, "notes", mapping, *ddl) as sync:
        execute(
            sync.engine,
            "INSERT INTO notes VALUES (1, ARRAY['a,b', 'c'], '{1.50,NULL}', '{\"pro, plus\"}', "
            f"ARRAY['{{\"n\": {big}}}'::jsonb, NULL, '\"s\"', '2.50'], "
            "ARRAY[ARRAY['1.0'::json, '[0.1]']], "
            f"'{{\"n\": 0.1000000000000000000001}}', ARRAY['{big}'::document], 'L1')",
            "INSERT INTO notes (id, doc, lead) VALUES (2, '\"abc\"', 'L2')",
        )
        report = sync.run_once()

    assert (report.status, report.counts.leads_pushed) == ("ok", 2)
    assert emulator.lead("L1") == {
        "mx_Labels": '["a,b","c"]',
        "mx_Scores": '["1.5",null]',
        "mx_Tiers": '["pro, plus"]',
        "mx_Docs": f'[{{"n":{big}}},null,"s","2.50"]',
        "mx_Grid": '[["1.0",["0.1"]]]',
        "mx_Doc": '{"n":0.1000000000000000000001}',
        "mx_Docs2": f'["{big}"]',
    }
    assert emulator.lead("L2") == {"mx_Doc": '"abc"'}


@pytest.mark.parametrize(
    ("zone", "moment"),
    [("Asia/Kolkata", "9999-12-31 23:59:59"), ("America/New_York", "0001-01-01 00:00:00")],
)
def test_a_timestamptz_at_the_ends_of_the_calendar_is_sent_whatever_the_servers_time_zone(
    pg_url: str, emulator: Emulator, zone: str, moment: str
) -> None:
    """Sentinels such as 9999-12-31 and 0001-01-01 UTC fall outside the calendar once shifted
    to a session time zone on the other side of UTC, where the driver cannot load them."""
    emulator.add_lead("L1")
    in_zone = pg_url.replace("options=", f"options=-cTimeZone%3D{zone}%20", 1)
    assert in_zone != pg_url
    ddl = "CREATE TABLE stays (id INTEGER PRIMARY KEY, until TIMESTAMPTZ, lead TEXT)"
    with table_connector(in_zone, emulator, "stays", {"until": "mx_Until"}, ddl) as sync:
        execute(sync.engine, f"INSERT INTO stays VALUES (1, '{moment}+00', 'L1')")
        report = sync.run_once()

    assert (report.status, report.counts.rows_held_back) == ("ok", 0)
    assert emulator.lead("L1") == {"mx_Until": moment}


@pytest.mark.parametrize("search_path", ["own schema", "with public"])
def test_postgresql_hstore_xml_and_point_are_sent_as_postgresql_spells_them(
    pg_url: str, emulator: Emulator, search_path: str
) -> None:
    """Whether SQLAlchemy recognises hstore depends on the search_path: the spelling must not."""
    emulator.add_lead("L1")
    admin = sa.create_engine(pg_url)
    with admin.begin() as connection:
        # Extensions are database-wide; the tests share the database.
        connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS hstore SCHEMA public")
    admin.dispose()
    if search_path == "with public":
        assert "search_path%3D" in pg_url.rsplit("options=", 1)[-1]
        pg_url += "%2Cpublic"  # after the test's own schema, where the table is made
    ddl = (
        "CREATE TABLE shapes (id INTEGER PRIMARY KEY, attrs public.hstore, doc XML, "
        "spot POINT, lead TEXT)"
    )
    mapping = {"attrs": "mx_Attrs", "doc": "mx_Doc", "spot": "mx_Spot"}
    with table_connector(pg_url, emulator, "shapes", mapping, ddl) as sync:
        execute(
            sync.engine,
            "INSERT INTO shapes VALUES (1, 'b=>2, a=>\"é x\"', '<p>hi</p>', '(1.5,2)', 'L1')",
        )
        sync.run_once()

    assert emulator.lead("L1") == {
        "mx_Attrs": '"a"=>"é x", "b"=>"2"',
        "mx_Doc": "<p>hi</p>",
        "mx_Spot": "(1.5,2)",
    }
