"""Gap-safe ingest under out-of-order commits, what the capture triggers record, and names
that need quoting.

Concurrency is made with real transactions held open on their own connections, never sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.schema import change as change_table
from connector.testing.emulator import Emulator
from tests.support import config_dict, execute, lead_state, load, source_values


@pytest.fixture
def pg_sync(pg_url: str, pg_app: sa.Engine, emulator: Emulator) -> Iterator[Connector]:
    with Connector(load(config_dict(pg_url, emulator, name=unique_name()))) as connector:
        connector.init()
        yield connector


def unique_name() -> str:
    # PostgreSQL's run lock is keyed by connector name across the whole database, which other
    # test schemas share: a name of its own keeps this test's runs from being skipped.
    return f"t_{uuid.uuid4().hex[:12]}"


def lead_updates(emulator: Emulator, lead_id: str) -> list[dict[str, str]]:
    return [
        {field["Attribute"]: field["Value"] for field in request.body}
        for request in emulator.requests
        if request.api == "Lead.Update" and request.lead_id == lead_id
    ]


def pushed_state(emulator: Emulator) -> dict[str, dict[str, str]]:
    return emulator.leads()


def expected_state(url: str) -> dict[str, dict[str, str]]:
    return {
        lead: {attribute: value for attribute, value in values.items() if value is not None}
        for lead, values in source_values(url).items()
    }


def change_rows(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        query = sa.select(change_table.c.row_key).order_by(change_table.c.change_id)
        return list(connection.execute(query).scalars())


# -- out-of-order commits (PostgreSQL) ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_transaction_committing_late_is_neither_waited_for_nor_skipped(
    pg_url: str, pg_app: sa.Engine, pg_sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    execute(
        pg_app,
        "INSERT INTO customers (id, city, plan, lsq_prospect_id) VALUES "
        "(1, 'Pune', 'free', 'L1'), (2, 'Goa', 'free', 'L2')",
    )
    assert pg_sync.run_once().status == "ok"
    assert pushed_state(emulator) == expected_state(pg_url)
    emulator.clear_requests()

    t1 = pg_app.connect()
    try:
        t1_tx = t1.begin()
        t1.exec_driver_sql("UPDATE customers SET city = 'Delhi' WHERE id = 1")
        t1_xid = t1.exec_driver_sql("SELECT pg_current_xact_id()::text::bigint").scalar_one()
        t1_change = t1.execute(
            sa.select(sa.func.max(change_table.c.change_id)).where(change_table.c.row_key == "1")
        ).scalar_one()

        with pg_app.begin() as t2:
            t2.exec_driver_sql("UPDATE customers SET city = 'Agra' WHERE id = 2")
            t2_xid = t2.exec_driver_sql("SELECT pg_current_xact_id()::text::bigint").scalar_one()
            t2_change = t2.execute(
                sa.select(sa.func.max(change_table.c.change_id)).where(
                    change_table.c.row_key == "2"
                )
            ).scalar_one()
        # T1 took the lower transaction id and the lower change id, and commits last.
        assert (t1_xid, t1_change) < (t2_xid, t2_change)

        report = pg_sync.run_once()  # must return while T1 is still open
        assert report.status == "ok"
        assert lead_updates(emulator, "L1") == []

        t1_tx.commit()
    finally:
        t1.close()

    assert pg_sync.run_once().status == "ok"
    assert pushed_state(emulator) == expected_state(pg_url)
    assert pushed_state(emulator)["L1"]["mx_City"] == "Delhi"
    assert pushed_state(emulator)["L2"]["mx_City"] == "Agra"
    assert lead_updates(emulator, "L1") == [{"mx_City": "Delhi"}]
    assert lead_updates(emulator, "L2") == [{"mx_City": "Agra"}]

    # Nothing is left behind for a third run.
    emulator.clear_requests()
    assert pg_sync.run_once().counts.changes_ingested == 0
    assert emulator.requests == []


@pytest.mark.timeout(60)
def test_rolled_back_transaction_holds_nothing_back(
    pg_url: str, pg_app: sa.Engine, pg_sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    execute(
        pg_app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1'), "
        "(2, 'Goa', 'L2')",
    )
    t1 = pg_app.connect()
    try:
        t1_tx = t1.begin()
        t1.exec_driver_sql("UPDATE customers SET city = 'Never' WHERE id = 1")
        execute(pg_app, "UPDATE customers SET city = 'Agra' WHERE id = 2")
        t1_tx.rollback()
    finally:
        t1.close()
    assert pg_sync.run_once().status == "ok"
    assert pushed_state(emulator) == {"L1": {"mx_City": "Pune"}, "L2": {"mx_City": "Agra"}}


# -- what the PostgreSQL triggers record ------------------------------------------------------


def test_update_of_unmapped_columns_records_nothing_on_postgresql(
    pg_app: sa.Engine, pg_sync: Connector
) -> None:
    execute(
        pg_app,
        "INSERT INTO customers (id, name, city, lsq_prospect_id) VALUES "
        "(1, 'Ada', 'Pune', 'L1'), (2, 'Bob', NULL, 'L2')",
    )
    execute(pg_app, "DELETE FROM lsq_sync_change")
    execute(
        pg_app,
        "UPDATE customers SET name = 'Eve', notes = 'n'",
        "UPDATE customers SET city = city, plan = NULL WHERE id IN (1, 2)",  # no real change
        "UPDATE customers SET city = NULL WHERE id = 2",  # NULL to NULL is no change either
    )
    assert change_rows(pg_app) == []


def test_mapped_and_lead_id_changes_are_recorded_once_per_row_on_postgresql(
    pg_app: sa.Engine, pg_sync: Connector
) -> None:
    execute(
        pg_app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        "(1, 'Pune', 'L1'), (2, 'Goa', 'L2'), (3, NULL, NULL)",
    )
    execute(pg_app, "DELETE FROM lsq_sync_change")
    execute(
        pg_app,
        # One statement touching three rows, of which only row 1 really changes.
        "UPDATE customers SET city = CASE WHEN id = 1 THEN 'Delhi' ELSE city END",
        "UPDATE customers SET lsq_prospect_id = 'L3' WHERE id = 3",
        "UPDATE customers SET city = NULL WHERE id = 2",
    )
    assert change_rows(pg_app) == ["1", "3", "2"]


def test_key_changing_update_is_captured_on_postgresql(
    pg_url: str, pg_app: sa.Engine, pg_sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    execute(pg_app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    execute(pg_app, "DELETE FROM lsq_sync_change")
    execute(pg_app, "UPDATE customers SET id = 10 WHERE id = 1")
    assert change_rows(pg_app) == ["10"]
    execute(pg_app, "UPDATE customers SET city = 'Goa' WHERE id = 10")
    assert pg_sync.run_once().status == "ok"
    assert emulator.lead("L1") == {"mx_City": "Goa"}
    assert lead_state(pg_sync, "L1").source_key == "10"


# -- names that need quoting (both databases) -------------------------------------------------

QUOTED_DDL = (
    'CREATE TABLE "Order Items" ('
    '"Item ID" INTEGER PRIMARY KEY, '
    '"City Name" TEXT, '
    '"select" TEXT, '
    '"Bob\'s ""Col""" TEXT, '
    '"Lead Ref" TEXT, '
    '"Other Stuff" TEXT)'
)
QUOTED_INSERT = (
    'INSERT INTO "Order Items" ("Item ID", "City Name", "select", "Bob\'s ""Col""", "Lead Ref") '
    "VALUES (1, 'Pune', 'yes', 'it''s', 'L1'), (2, 'Goa', NULL, NULL, 'L2')"
)
QUOTED_MAPPING = {"City Name": "mx_City", "select": "mx_Select", 'Bob\'s "Col"': "mx_Odd"}


@pytest.fixture
def quoted_sync(db_url: str, emulator: Emulator) -> Iterator[Connector]:
    execute_url(db_url, QUOTED_DDL)
    config = config_dict(
        db_url,
        emulator,
        name=unique_name(),
        source={"table": "Order Items", "key": "Item ID"},
        lead_id={"column": "Lead Ref"},
    )
    config["mapping"] = dict(QUOTED_MAPPING)  # replaces, where a keyword would merge
    with Connector(load(config)) as connector:
        connector.init()
        yield connector


def execute_url(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        execute(engine, *statements)
    finally:
        engine.dispose()


def test_names_needing_quotes_work_end_to_end(
    db_url: str, quoted_sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    execute_url(
        db_url,
        QUOTED_INSERT,
    )
    report = quoted_sync.run_once()
    assert (report.status, report.counts.changes_ingested, report.counts.leads_pushed) == (
        "ok",
        2,
        2,
    )
    assert emulator.leads() == {
        "L1": {"mx_City": "Pune", "mx_Select": "yes", "mx_Odd": "it's"},
        "L2": {"mx_City": "Goa"},
    }

    emulator.clear_requests()
    execute_url(
        db_url,
        'UPDATE "Order Items" SET "Other Stuff" = \'unmapped\'',
        'UPDATE "Order Items" SET "select" = \'no\' WHERE "Item ID" = 2',
    )
    report = quoted_sync.run_once()
    assert report.counts.changes_ingested == 1
    assert lead_updates(emulator, "L2") == [{"mx_Select": "no"}]
    assert lead_updates(emulator, "L1") == []
