"""Rows the connector cannot send or cannot even read: each holds back only itself, and
`status` and the run summary say which row, which column, and why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector import Connector, RunReport
from connector.clock import SystemClock
from connector.ingest import ingest
from connector.quarantine import isolate
from connector.report import print_status
from connector.testing.emulator import Emulator
from tests.integration.test_ingest import table_connector
from tests.integration.test_value_formats import insert, leads_held, one_run, sent_values
from tests.support import config_dict, execute, load


@pytest.fixture
def sync(db_url: str, app: sa.Engine, emulator: Emulator) -> Iterator[Connector]:
    with Connector(load(config_dict(db_url, emulator))) as sync:
        sync.init()
        yield sync


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
    report, held = one_run(
        db_url,
        emulator,
        "measured",
        mapping,
        ddl,
        f"INSERT INTO measured VALUES (1, 1.5, 2.5, 'L1'), (2, 1, {infinite}, 'L2'), "
        f"(3, 1, 1e300, 'L3'), (4, 1, {minus_infinite}, 'L4')"
        + (", (5, 'NaN', 1, 'L5'), (6, 1, 'NaN', 'L6')" if postgres else ""),
        read=leads_held,
    )

    assert (report.status, report.counts.leads_pushed) == ("ok", 1)
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


# -- rows that cannot be ingested at all: each held back alone, named, and retried on change --


def row_problems(sync: Connector) -> dict[str, tuple[str | None, str | None, str]]:
    """source key -> (lead id, column, reason) of every row held back at ingest."""
    with sync.engine.connect() as connection:
        return {
            p.key: (p.lead_id, p.column, p.reason)
            for p in sync.tables.problems.row_problems(connection)
        }


def status_of(sync: Connector, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    print_status(sync)
    return capsys.readouterr().out


@pytest.fixture
def events(db_url: str, emulator: Emulator) -> Iterator[Connector]:
    for lead_id in ("L1", "L2", "L3"):
        emulator.add_lead(lead_id)
    ddl = "CREATE TABLE events (id INTEGER PRIMARY KEY, city TEXT, seen DATE, lead TEXT)"
    mapping = {"city": "mx_City", "seen": "mx_Seen"}
    with table_connector(db_url, emulator, "events", mapping, ddl) as sync:
        yield sync


def test_a_date_in_year_10000_holds_back_only_its_row_until_it_changes(
    events: Connector, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    execute(
        events.engine,
        "INSERT INTO events VALUES (1, 'Pune', '2020-01-02', 'L1'), "
        "(2, 'Goa', '10000-01-01', 'L2'), (3, 'Agra', NULL, 'L3')",
    )

    report = events.run_once()

    assert (report.status, report.counts.leads_pushed, report.counts.rows_held_back) == ("ok", 2, 1)
    assert "1 row held back" in report.summary()
    assert emulator.lead("L1") == {"mx_City": "Pune", "mx_Seen": "2020-01-02"}
    assert emulator.lead("L3") == {"mx_City": "Agra"}
    assert emulator.lead("L2") == {}
    [(key, (lead_id, column, reason))] = row_problems(events).items()
    assert (key, lead_id, column) == ("2", "L2", "seen")
    assert "10000-01-01" in reason
    assert f"row 2 (lead L2), column 'seen': {reason}" in status_of(events, capsys)

    execute(events.engine, "UPDATE events SET seen = '2021-03-04' WHERE id = 2")
    report = events.run_once()

    assert (report.status, report.counts.leads_pushed, report.counts.rows_held_back) == ("ok", 1, 0)
    assert emulator.lead("L2") == {"mx_City": "Goa", "mx_Seen": "2021-03-04"}
    assert row_problems(events) == {}


def test_a_timestamp_of_infinity_holds_back_only_its_row(
    pg_url: str, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    ddl = "CREATE TABLE events (id INTEGER PRIMARY KEY, city TEXT, seen TIMESTAMP, lead TEXT)"
    mapping = {"city": "mx_City", "seen": "mx_Seen"}
    with table_connector(pg_url, emulator, "events", mapping, ddl) as sync:
        execute(
            sync.engine,
            "INSERT INTO events VALUES (1, 'Pune', 'infinity', 'L1'), "
            "(2, 'Goa', '2020-01-02 03:04:05', 'L2')",
        )
        report = sync.run_once()
        problems = row_problems(sync)
        status = status_of(sync, capsys)

    assert (report.status, report.counts.leads_pushed, report.counts.rows_held_back) == ("ok", 1, 1)
    assert emulator.lead("L2") == {"mx_City": "Goa", "mx_Seen": "2020-01-02 03:04:05"}
    assert problems == {
        "1": ("L1", "seen", "timestamp too large (after year 10K): 'infinity'"),
    }
    assert (
        "row 1 (lead L1), column 'seen': timestamp too large (after year 10K): 'infinity'" in status
    )


def test_a_lead_id_too_long_to_be_a_prospect_id_holds_back_only_its_row(
    sync: Connector, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    long_id = "L" * 101
    execute(
        app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        f"(1, 'Pune', 'L1'), (2, 'Goa', '{long_id}'), (3, 'Agra', '{'L' * 100}')",
    )
    assert sync.source.desired_query(["1", "2", "3"]) is not None  # the database folds these

    report = sync.run_once()

    assert (report.status, report.counts.rows_held_back) == ("ok", 1)
    assert emulator.lead("L1") == {"mx_City": "Pune"}
    [(lead_id, column, reason)] = row_problems(sync).values()
    assert row_problems(sync).keys() == {"2"}
    assert column == "lsq_prospect_id"
    assert reason == "a lead id longer than 100 characters cannot be a ProspectId"
    assert lead_id is not None
    assert lead_id.startswith("LLLL")
    assert len(lead_id) <= 100

    execute(app, "UPDATE customers SET lsq_prospect_id = NULL WHERE id = 2")
    sync.run_once()
    assert row_problems(sync) == {}


def sqlite_run(
    tmp_path: Path, emulator: Emulator, ddl: str, insert: str, key: str = "id"
) -> tuple[RunReport, dict[str, tuple[str | None, str | None, str]]]:
    """One run over a SQLite table `rows` (made by `ddl`, column `t` mapped) after `insert`,
    with lead L1 in LeadSquared: its report and `row_problems`."""
    emulator.add_lead("L1")
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    return one_run(url, emulator, "rows", {"t": "mx_T"}, ddl, insert, read=row_problems, key=key)


def test_sqlite_text_that_is_not_utf8_holds_back_only_its_row(
    tmp_path: Path, emulator: Emulator
) -> None:
    report, problems = sqlite_run(
        tmp_path,
        emulator,
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, t TEXT, lead TEXT)",
        "INSERT INTO rows VALUES (1, 'plain', 'L1'), (2, CAST(x'4a6f73e9' AS TEXT), 'L2'), "
        "(3, 'x', CAST(x'4ce9' AS TEXT))",
    )

    assert (report.status, report.counts.leads_pushed, report.counts.rows_held_back) == ("ok", 1, 2)
    assert emulator.lead("L1") == {"mx_T": "plain"}
    assert {key: problem[:2] for key, problem in problems.items()} == {
        "2": ("L2", "t"),
        "3": (None, "lead"),
    }
    assert all("Could not decode to UTF-8" in problem[2] for problem in problems.values())


def test_poison_of_every_kind_never_stops_the_other_rows(db_url: str, emulator: Emulator) -> None:
    """Control characters and huge text are values like any other; a blank lead id is no
    lead id; none of them stops a row that can be sent."""
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    emulator.add_lead("L3")
    ddl = "CREATE TABLE rows (code VARCHAR(20) PRIMARY KEY, t TEXT, lead TEXT)"
    huge = "x" * 1_000_000
    with table_connector(db_url, emulator, "rows", {"t": "mx_T"}, ddl, key="code") as sync:
        insert(
            sync,
            "rows",
            [
                {"code": "ctl", "t": "\x01\x1b[31m\r\n\t", "lead": "L1"},
                {"code": "big", "t": huge, "lead": "L2"},
                {"code": "blank", "t": "y", "lead": " \t\u3000"},
                {"code": "ok", "t": "fine", "lead": "L3"},
            ],
        )
        report = sync.run_once()

    assert (report.status, report.counts.leads_pushed, report.counts.rows_without_lead_id) == (
        "ok",
        3,
        1,
    )
    assert emulator.lead("L1") == {"mx_T": "\x01\x1b[31m\r\n\t"}
    assert emulator.lead("L2") == {"mx_T": huge}
    assert emulator.lead("L3") == {"mx_T": "fine"}


def test_a_table_gone_during_ingest_fails_it_and_holds_back_no_row(events: Connector) -> None:
    execute(events.engine, "INSERT INTO events VALUES (1, 'Pune', NULL, 'L1')")
    source = events.source  # reflected while the table is there
    execute(events.engine, "ALTER TABLE events RENAME TO events_gone")

    with pytest.raises(sa.exc.DBAPIError, match="events"):
        ingest(
            events.engine,
            tables=events.tables,
            source=source,
            clock=SystemClock(),
            batch_size=100,
        )

    assert row_problems(events) == {}
    with events.engine.connect() as connection:
        assert events.tables.changes.pending_changes(connection) == 1


def test_a_lost_connection_is_not_taken_for_a_bad_row(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    attempts: list[Sequence[str]] = []
    try:
        with engine.connect() as connection, engine.connect() as other:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()

            def attempt(keys: Sequence[str]) -> None:
                attempts.append(keys)
                # Waits (up to 30 s) until the session is gone.
                other.exec_driver_sql(f"SELECT pg_terminate_backend({pid}, 30000)")
                connection.exec_driver_sql("SELECT 1")

            with pytest.raises(sa.exc.OperationalError, match="terminat"):
                isolate(connection, ["1", "2", "3", "4"], attempt)
    finally:
        engine.dispose()
    assert attempts == [["1", "2", "3", "4"]]  # never split into rows


def test_sqlite_a_key_that_is_not_utf8_holds_back_only_its_row(
    tmp_path: Path, emulator: Emulator
) -> None:
    report, problems = sqlite_run(
        tmp_path,
        emulator,
        "CREATE TABLE rows (code TEXT PRIMARY KEY, t TEXT, lead TEXT)",
        "INSERT INTO rows VALUES (CAST(x'4bff' AS TEXT), 'a', 'L2'), ('k1', 'b', 'L1')",
        key="code",
    )

    assert (report.status, report.counts.leads_pushed, report.counts.rows_held_back) == ("ok", 1, 1)
    assert emulator.lead("L1") == {"mx_T": "b"}
    assert problems == {
        "K\\xff": (None, "code", "the key is not UTF-8 text, so the row cannot be read")
    }


def test_a_row_held_back_at_ingest_holds_back_the_lead_another_row_has(
    events: Connector, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its values are unknown, but it has the lead id: the lead has two rows."""
    execute(
        events.engine,
        "INSERT INTO events VALUES (1, 'Pune', NULL, 'L1'), (2, 'Goa', '10000-01-01', 'L1')",
    )

    report = events.run_once()

    assert sent_values(emulator) == []
    assert (report.counts.leads_held_shared, report.counts.rows_held_back) == (1, 1)
    assert "rows 1 and 2 both have lead id L1" in status_of(events, capsys)

    execute(events.engine, "UPDATE events SET seen = '2021-03-04', lead = 'L2' WHERE id = 2")
    report = events.run_once()

    assert sorted(sent_values(emulator)) == [
        ("L1", {"mx_City": "Pune"}),
        ("L2", {"mx_City": "Goa", "mx_Seen": "2021-03-04"}),
    ]
    assert (report.counts.leads_held_shared, row_problems(events)) == (0, {})


def test_a_row_held_back_in_an_earlier_run_holds_back_the_lead_a_new_row_takes(
    events: Connector, emulator: Emulator
) -> None:
    execute(events.engine, "INSERT INTO events VALUES (2, 'Goa', '10000-01-01', 'L1')")
    events.run_once()
    execute(events.engine, "INSERT INTO events VALUES (1, 'Pune', NULL, 'L1')")

    report = events.run_once()

    assert sent_values(emulator) == []
    assert report.counts.leads_held_shared == 1

    execute(events.engine, "UPDATE events SET lead = NULL WHERE id = 2")
    events.run_once()

    assert sent_values(emulator) == [("L1", {"mx_City": "Pune"})]


def test_what_a_bad_row_held_back_clears_once_the_row_is_fixed_elsewhere_or_deleted(
    events: Connector, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    execute(
        events.engine,
        "INSERT INTO events VALUES (1, 'Pune', NULL, 'L1'), (2, 'Goa', NULL, 'L2')",
    )
    events.run_once()
    execute(
        events.engine,
        "UPDATE events SET seen = '10000-01-01'",
        "INSERT INTO events VALUES (3, 'Agra', '10000-01-01', 'L9')",
    )
    events.run_once()
    assert row_problems(events).keys() == {"1", "2", "3"}
    emulator.clear_requests()

    # Deletes are not captured; row 2 is fixed, and takes another lead id on the way.
    execute(
        events.engine,
        "DELETE FROM events WHERE id IN (1, 3)",
        "UPDATE events SET seen = '2021-03-04', lead = 'L3' WHERE id = 2",
    )
    events.run_once()

    assert sent_values(emulator) == [("L3", {"mx_City": "Goa", "mx_Seen": "2021-03-04"})]
    assert row_problems(events) == {}
    assert leads_held(events) == {
        "L1": "detached: row 1 was deleted or has no usable lead id; no row has this lead id, "
        "so nothing is sent to it",
        "L2": "detached: row 2 now has lead id L3; no row has this lead id, so nothing is sent "
        "to it",
        "L3": None,
    }
    status = status_of(events, capsys)
    assert "held back:" not in status
    assert "10000" not in status


def test_json_nested_deep_in_an_array_holds_back_only_its_lead(
    pg_url: str, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    # Shallow enough for json.loads, too deep for a Python function that recurses per level.
    deep = "[" * 500 + "]" * 500
    ddl = "CREATE TABLE docs (id INTEGER PRIMARY KEY, parts JSONB[], city TEXT, lead TEXT)"
    mapping = {"parts": "mx_Parts", "city": "mx_City"}
    report, held = one_run(
        pg_url,
        emulator,
        "docs",
        mapping,
        ddl,
        f"INSERT INTO docs VALUES (1, ARRAY['{deep}'::jsonb], 'Pune', 'L1'), "
        "(2, NULL, 'Goa', 'L2')",
        read=leads_held,
    )

    assert (report.status, report.counts.leads_pushed) == ("ok", 1)
    assert emulator.lead("L2") == {"mx_City": "Goa"}
    assert held["L1"] == "row 1, column 'parts': an array nested too deeply to be sent"


def test_a_lone_surrogate_in_an_array_of_json_holds_back_only_its_lead(
    pg_url: str, emulator: Emulator
) -> None:
    """json (unlike jsonb) keeps "\\ud800" as written; no UTF-8 request body can carry it."""
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    ddl = "CREATE TABLE docs (id INTEGER PRIMARY KEY, parts JSON[], lead TEXT)"
    report, held = one_run(
        pg_url,
        emulator,
        "docs",
        {"parts": "mx_Parts"},
        ddl,
        "INSERT INTO docs VALUES (1, ARRAY['\"\\ud800\"'::json], 'L1'), "
        "(2, ARRAY['\"\\u00e9\"'::json], 'L2')",
        read=leads_held,
    )

    assert (report.status, report.counts.leads_pushed) == ("ok", 1)
    assert emulator.lead("L2") == {"mx_Parts": '["é"]'}
    assert held["L1"] == (
        "row 1, column 'parts': an array holding a lone surrogate (\\ud800-\\udfff) cannot be sent"
    )
