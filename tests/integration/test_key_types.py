"""Source keys of every type a primary key commonly has: the key the triggers record as text
must find its row again, whatever the application's session settings, and its lead is pushed
and pushed again after a change, once each."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.clock import SystemClock
from connector.ingest import ingest
from connector.leads import RowProblem
from connector.testing.emulator import Emulator
from tests.support import config_dict, execute, load

# (key DDL, the key's literal); every one a PRIMARY KEY of its own table.
KEYS = {
    "uuid": ("uuid", "'6f1c0a3e-2b5d-4c8e-9a1f-0d2e3c4b5a69'"),
    "numeric": ("numeric(12,2)", "12.50"),
    "bigint": ("bigint", "9007199254740993"),
    "char": ("char(8)", "'ab'"),
    "timestamp": ("timestamp", "'2026-11-30 10:11:12.5'"),
    "timestamptz": ("timestamptz", "'2026-11-30 10:11:12+05:30'"),
    "date": ("date", "'2026-02-28'"),
    "float8": ("float8", "0.1"),
}
# The application's session may print keys in other styles than the connector's.
SESSIONS = {
    "defaults": [],
    "other styles": [
        "SET DateStyle = 'SQL, DMY'",
        "SET TimeZone = 'America/Los_Angeles'",
        "SET extra_float_digits = -3",
    ],
}


# Keys whose Python spelling differs from the one capture records.
RESPELLED_KEYS = {"timestamptz": "'2026-11-30 10:11:12+05:30'", "char(8)": "'ab'"}


@contextmanager
def keyed(
    url: str, emulator: Emulator, mapping: dict[str, str], columns: str, connector_url: str = ""
) -> Iterator[tuple[Connector, sa.Engine]]:
    """An initialised connector on a new table `keyed` (its `columns`; the key `k`, the lead
    id `lead`), and the application's engine. `connector_url`: the connector's own, when it
    must differ from the application's."""
    config = config_dict(
        connector_url or url,
        emulator,
        source={"table": "keyed", "key": "k"},
        lead_id={"column": "lead"},
    )
    config["mapping"] = mapping  # replaced, not merged as config_dict merges sections
    app = sa.create_engine(url)
    try:
        execute(app, f"CREATE TABLE keyed ({columns})")
        with Connector(load(config)) as sync:
            sync.init()
            yield sync, app
    finally:
        app.dispose()


def in_another_time_zone(pg_url: str) -> str:
    """The URL with its session's time zone set, and not to UTC."""
    url = pg_url.replace("options=", "options=-cTimeZone%3DAsia/Kolkata%20", 1)
    assert url != pg_url
    return url


def row_problems(sync: Connector) -> list[RowProblem]:
    with sync.engine.connect() as connection:
        return sync.tables.problems.row_problems(connection)


@pytest.mark.parametrize("session", list(SESSIONS))
@pytest.mark.parametrize("kind", list(KEYS))
def test_postgresql_a_key_of_this_type_is_found_again(
    pg_url: str, emulator: Emulator, kind: str, session: str
) -> None:
    ddl, literal = KEYS[kind]
    emulator.add_lead("L1")
    columns = f"k {ddl} PRIMARY KEY, city TEXT, lead TEXT"
    with keyed(pg_url, emulator, {"city": "mx_City"}, columns) as (sync, app):
        for city in ("Pune", "Goa"):
            with app.begin() as connection:
                for statement in SESSIONS[session]:
                    connection.exec_driver_sql(statement)
                connection.exec_driver_sql(
                    f"INSERT INTO keyed VALUES ({literal}, '{city}', 'L1') "
                    "ON CONFLICT (k) DO UPDATE SET city = excluded.city"
                )
            report = sync.run_once()
            assert (report.status, report.counts.leads_pushed) == ("ok", 1), report.summary()
            assert emulator.lead("L1")["mx_City"] == city


def test_postgresql_a_recorded_key_that_does_not_read_back_holds_back_only_its_row(
    pg_url: str, emulator: Emulator
) -> None:
    """A key its column's type cannot parse (written by an older version's trigger in another
    DateStyle, say) is a row held back, not a run failing on every try."""
    emulator.add_lead("L1")
    columns = "k date PRIMARY KEY, city TEXT, lead TEXT"
    with keyed(pg_url, emulator, {"city": "mx_City"}, columns) as (sync, app):
        execute(
            app,
            "INSERT INTO keyed VALUES ('2026-11-30', 'Pune', 'L1')",
            "INSERT INTO lsq_sync_change (connector, row_key, tx_id) "
            f"VALUES ('{sync.config.name}', '30/11/2026', pg_current_xact_id()::text::bigint)",
        )
        report = sync.run_once()
        assert (report.status, report.counts.leads_pushed) == ("ok", 1), report.summary()
        assert [(p.key, p.column) for p in row_problems(sync)] == [("30/11/2026", "k")]


@pytest.mark.parametrize("ddl", list(RESPELLED_KEYS))
def test_postgresql_a_row_held_back_stays_held_back_until_deleted(
    pg_url: str, emulator: Emulator, ddl: str
) -> None:
    """Whether a held-back row still exists is asked by key: the recorded spelling must find
    it, not only Python's ('+00' against '+00:00'; a char(n) key's padding)."""
    columns = f"k {ddl} PRIMARY KEY, d date, lead TEXT"
    with keyed(pg_url, emulator, {"d": "mx_D"}, columns) as (sync, app):
        # A date the driver cannot load holds the row back.
        execute(app, f"INSERT INTO keyed VALUES ({RESPELLED_KEYS[ddl]}, 'infinity', 'L1')")
        for _ in range(2):
            assert sync.run_once().status == "ok"
            assert [p.column for p in row_problems(sync)] == ["d"]
        execute(app, "DELETE FROM keyed")
        assert sync.run_once().status == "ok"
        assert row_problems(sync) == []


def test_postgresql_backfill_spells_keys_as_the_triggers_do(
    pg_url: str, emulator: Emulator
) -> None:
    """The connector's own session may run in another time zone (set on its URL): one row
    must still be one key, not two change rows that read as two rows."""
    columns = "k timestamptz PRIMARY KEY, city TEXT, lead TEXT"
    elsewhere = in_another_time_zone(pg_url)
    with keyed(pg_url, emulator, {"city": "mx_City"}, columns, elsewhere) as (sync, app):
        execute(app, "INSERT INTO keyed VALUES ('2026-11-30 10:11:12.5+05:30', 'Pune', 'L1')")
        sync.backfill()
        with app.connect() as connection:
            keys = connection.exec_driver_sql("SELECT DISTINCT row_key FROM lsq_sync_change")
            assert list(keys.scalars()) == ["2026-11-30 04:41:12.5+00"]


def test_postgresql_a_key_the_driver_cannot_load_is_read_as_text(
    pg_url: str, emulator: Emulator
) -> None:
    """psycopg cannot load a date of 'infinity'; read as the text capture recorded, the row
    is synced like any other."""
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    columns = "k date PRIMARY KEY, city TEXT, lead TEXT"
    with keyed(pg_url, emulator, {"city": "mx_City"}, columns) as (sync, app):
        execute(
            app,
            "INSERT INTO keyed VALUES ('infinity', 'Pune', 'L1'), ('2026-11-30', 'Goa', 'L2')",
        )
        report = sync.run_once()
        assert (report.status, report.counts.leads_pushed) == ("ok", 2), report.summary()
        assert emulator.lead("L1")["mx_City"] == "Pune"
        assert row_problems(sync) == []


@pytest.mark.parametrize("ddl", list(RESPELLED_KEYS))
def test_postgresql_a_lead_whose_row_is_held_back_is_not_sent(
    pg_url: str, emulator: Emulator, ddl: str
) -> None:
    """The hold finds its lead by the row's key: one spelling, or the lead's older values
    go out while its row is held back."""
    emulator.add_lead("L1")
    columns = f"k {ddl} PRIMARY KEY, city TEXT, d date, lead TEXT"
    with keyed(pg_url, emulator, {"city": "mx_City", "d": "mx_D"}, columns) as (sync, app):
        execute(
            app, f"INSERT INTO keyed VALUES ({RESPELLED_KEYS[ddl]}, 'Pune', '2026-01-01', 'L1')"
        )
        # Ingested, not yet pushed: the lead is pending with the row's first values.
        ingest(
            sync.engine, tables=sync.tables, source=sync.source, clock=SystemClock(), batch_size=100
        )
        execute(app, "UPDATE keyed SET city = 'Goa', d = 'infinity'")
        report = sync.run_once()
        assert report.counts.leads_pushed == 0, report.summary()
        assert "mx_City" not in emulator.lead("L1")
        assert [p.column for p in row_problems(sync)] == ["d"]


def test_postgresql_a_held_back_row_stays_held_back_whatever_the_sessions_time_zone(
    pg_url: str, emulator: Emulator
) -> None:
    columns = "k timestamptz PRIMARY KEY, city TEXT, lead TEXT"
    elsewhere = in_another_time_zone(pg_url)
    with keyed(pg_url, emulator, {"city": "mx_City"}, columns, elsewhere) as (sync, app):
        too_long = "L" * 150  # cannot be a ProspectId
        execute(
            app, f"INSERT INTO keyed VALUES ('2026-11-30 10:11:12+05:30', 'Pune', '{too_long}')"
        )
        for _ in range(3):
            assert sync.run_once().status == "ok"
            problems = [(p.key, p.column) for p in row_problems(sync)]
            assert problems == [("2026-11-30 04:41:12+00", "lead")]
