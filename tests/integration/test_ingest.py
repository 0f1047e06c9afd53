"""Ingest on real databases: desired values folded by PostgreSQL equal Python's, batches are
all-or-nothing, and consumed change rows are deleted later but always deleted."""

from __future__ import annotations

import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import connector.ingest
from connector import Connector
from connector.changelog import START, ChangeCursor, ChangeLog, change_log
from connector.clock import SystemClock
from connector.counts import RunCounts, Tally
from connector.ingest import ingest
from connector.leads import FoldResult, fold_rows
from connector.schema import change, cursor, lead
from connector.source import SourceTable
from connector.sqlfold import PYTHON_WHITESPACE
from connector.tables import ConnectorTables
from connector.testing.emulator import Emulator
from connector.values import dumps
from tests.support import config_dict, create_customers, execute, load

# Every type the database folds itself, beside the columns of tests.support's customers.
TYPED_DDL = """
CREATE TABLE typed (
    id INTEGER PRIMARY KEY,
    t TEXT,
    v VARCHAR(40),
    i INTEGER,
    b BIGINT,
    s SMALLINT,
    f BOOLEAN,
    lead TEXT
)
"""
TYPED_MAPPING = {"t": "mx_T", "v": "mx_V", "i": "mx_I", "b": "mx_B", "s": "mx_S", "f": "mx_F"}


def run_ingest(sync: Connector, batch_size: int = 5000) -> RunCounts:
    """What ingest reported through its events."""
    tally = Tally()
    ingest(
        sync.engine,
        tables=sync.tables,
        source=sync.source,
        clock=SystemClock(),
        batch_size=batch_size,
        events=tally,
    )
    return tally.counts()


def ingested(changes: int, without_lead_id: int = 0, held_back: int = 0) -> RunCounts:
    return RunCounts(
        changes_ingested=changes, rows_without_lead_id=without_lead_id, rows_held_back=held_back
    )


def expected_result(changes: int, folded: FoldResult) -> RunCounts:
    """What ingest reports for changed rows that the Python fold folds as `folded`."""
    held_back = folded.rows_holding_lead + len(folded.problems)
    return ingested(changes, folded.rows_without_lead, held_back)


def leads_by_id(engine: sa.Engine, name: str) -> dict[str, tuple[str, str]]:
    """lead id -> (source key, desired JSON text), as stored."""
    with engine.connect() as connection:
        query = sa.select(lead.c.lead_id, lead.c.source_key, lead.c.desired).where(
            lead.c.connector == name
        )
        return {row.lead_id: (row.source_key, row.desired) for row in connection.execute(query)}


def lead_rows(sync: Connector) -> dict[str, tuple[Any, ...]]:
    """lead id -> (source key, desired JSON text, hold), as stored."""
    with sync.engine.connect() as connection:
        query = sa.select(lead.c.lead_id, lead.c.source_key, lead.c.desired, lead.c.hold).where(
            lead.c.connector == sync.config.name
        )
        return {row[0]: tuple(row[1:]) for row in connection.execute(query)}


def change_positions(engine: sa.Engine) -> list[tuple[int, int]]:
    with engine.connect() as connection:
        query = sa.select(change.c.tx_id, change.c.change_id).order_by(change.c.change_id)
        return [(row.tx_id, row.change_id) for row in connection.execute(query)]


def cursor_position(engine: sa.Engine, name: str) -> ChangeCursor:
    with engine.connect() as connection:
        return change_log(engine, name).load_cursor(connection)


def table_connector(
    url: str,
    emulator: Emulator,
    table: str,
    mapping: dict[str, str],
    *statements: str,
    key: str = "id",
    **sections: Any,
) -> Connector:
    """An initialised connector for `table`, made by `statements`, whose lead id column is
    `lead`; use it as a context manager."""
    engine = sa.create_engine(url)
    execute(engine, *statements)
    engine.dispose()
    config = config_dict(
        url,
        emulator,
        source={"table": table, "key": key},
        lead_id={"column": "lead"},
        **sections,
    )
    config["mapping"] = mapping  # replaced, not merged as config_dict merges sections
    sync = Connector(load(config))
    sync.init()
    return sync


@pytest.fixture
def sync(db_url: str, app: sa.Engine, emulator: Emulator) -> Iterator[Connector]:
    with Connector(load(config_dict(db_url, emulator))) as sync:
        sync.init()
        yield sync


# -- desired values folded by PostgreSQL ----------------------------------------------------


@pytest.fixture
def typed(pg_url: str, emulator: Emulator) -> Iterator[Connector]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with table_connector(pg_url, emulator, "typed", TYPED_MAPPING, TYPED_DDL, name=name) as sync:
        yield sync


def test_python_whitespace_is_what_str_strip_removes() -> None:
    every = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    assert every == PYTHON_WHITESPACE


def test_both_databases_fold_these_types_themselves(sync: Connector) -> None:
    assert sync.source.desired_query(["1"]) is not None


@pytest.mark.parametrize("table", ["folded", "FOLDED", "source_rows"])
def test_a_source_table_named_like_the_folds_own_queries(
    db_url: str, emulator: Emulator, table: str
) -> None:
    with table_connector(
        db_url,
        emulator,
        table,
        {"city": "mx_City"},
        f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY, city TEXT, lead TEXT)',
        f"INSERT INTO \"{table}\" VALUES (1, 'Pune', 'L1')",
    ) as sync:
        sync.backfill()
        stored_as_python_folds(sync, ["1"])


def test_a_sqlite_without_materialized_ctes_still_folds(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AS MATERIALIZED` came with SQLite 3.35: older libraries fold without it."""
    monkeypatch.setattr(sqlite3.dbapi2, "sqlite_version_info", (3, 34, 1))  # SQLAlchemy's
    with table_connector(
        f"sqlite:///{tmp_path / 'app.db'}",
        emulator,
        "named",
        {"city": "mx_City"},
        "CREATE TABLE named (id INTEGER PRIMARY KEY, city TEXT, lead TEXT)",
        "INSERT INTO named VALUES (1, 'Pune', 'L1')",
    ) as sync:
        query = sync.source.desired_query(["1"])
        assert query is not None
        assert "MATERIALIZED" not in str(query.compile(sync.engine))
        sync.backfill()
        stored_as_python_folds(sync, ["1"])


def test_a_column_type_python_must_normalise_keeps_the_python_fold(
    db_url: str, emulator: Emulator
) -> None:
    with table_connector(
        db_url,
        emulator,
        "priced",
        {"price": "mx_Price"},
        "CREATE TABLE priced (id INTEGER PRIMARY KEY, price NUMERIC, lead TEXT)",
        "INSERT INTO priced VALUES (1, 2.50, 'L1')",
    ) as sync:
        assert sync.source.desired_query(["1"]) is None
        sync.backfill()
        assert run_ingest(sync).changes_ingested == 1
        assert leads_by_id(sync.engine, sync.config.name) == {"L1": ("1", '{"mx_Price":"2.5"}')}


def _text() -> st.SearchStrategy[str | None]:
    awkward = st.sampled_from(["", " ", "\x7f", "é", '"\\/\n\t\x01\x1f', "😀", "\u2028", "a b"])
    anything = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
    return st.none() | awkward | anything


def _lead_text() -> st.SearchStrategy[str | None]:
    # Mostly whitespace, so blank and almost-blank lead ids both come up.
    near_blank = st.text(st.sampled_from([*PYTHON_WHITESPACE, "x", "\u200b", "\ufeff", "\x00"]))
    return st.none() | near_blank.map(lambda s: s.replace("\x00", "")) | _text()


_ROW = st.tuples(
    _text(),
    _text().map(lambda s: None if s is None else s[:40]),
    st.none() | st.integers(-(2**31), 2**31 - 1),
    st.none() | st.integers(-(2**63), 2**63 - 1),
    st.none() | st.integers(-(2**15), 2**15 - 1),
    st.none() | st.booleans(),
    _lead_text(),
)


# Each example starts from empty tables, so sharing the fixture's schema is safe.
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=1, max_size=12))
@example(
    rows=[
        ("", "\x7f", 0, -(2**63), None, True, "L"),
        ("é", '"\\/\n\t\x01\x1f', -1, None, 2**15 - 1, False, " L "),
        ("😀", "\u2028", None, 2**63 - 1, -(2**15), None, "\x85\u3000 "),
        (None, "a b", 2**31 - 1, 0, 0, None, "\u200b"),
        (" ", None, None, None, None, None, ""),
    ]
)
def test_postgresql_folds_desired_values_exactly_as_python_does(
    typed: Connector, rows: list[tuple[Any, ...]]
) -> None:
    name = typed.config.name
    unique_rows = []
    for number, row in enumerate(rows, start=1):
        lead_text = row[-1]
        # One row per lead: which of several rows of one lead wins is arbitrary.
        if lead_text is not None and lead_text.strip():
            lead_text = f"{lead_text}#{number}"
        unique_rows.append(
            {"id": number, **dict(zip("tvibsf", row[:-1], strict=True)), "lead": lead_text}
        )
    with typed.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM typed"))
        connection.execute(sa.delete(lead).where(lead.c.connector == name))
        connection.execute(
            sa.text("INSERT INTO typed VALUES (:id, :t, :v, :i, :b, :s, :f, :lead)"), unique_rows
        )
    with typed.engine.connect() as connection:
        expected = fold_rows(typed.source.read(connection, [str(r["id"]) for r in unique_rows]))

    result = run_ingest(typed)

    assert result == expected_result(len(unique_rows), expected)
    assert leads_by_id(typed.engine, name) == {
        c.lead_id: (c.source_key, dumps(c.desired)) for c in expected.changes
    }


# SQLite types each value, not each column: any column may hold any of these.
_SQLITE_VALUE = (
    _text()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=4)
    | st.sampled_from(["12", "-0", "1.5", " 7", "0x1A", "1e3"])  # INTEGER columns convert some
)


def _sqlite_lead(number: int) -> st.SearchStrategy[Any]:
    """A lead id of every storage type; one lead per row, as which row wins is arbitrary."""
    return st.one_of(
        st.none(),
        st.text(st.sampled_from([*PYTHON_WHITESPACE, "\u200b"])),
        _text().map(lambda s: f"{s}#{number}"),
        st.just(number),
        st.just(number + 0.5),
        st.just(f"{number}".encode()),
        st.just(b" "),
    )


@pytest.fixture
def sqlite_typed(tmp_path: Path, emulator: Emulator) -> Iterator[Connector]:
    url = f"sqlite:///{tmp_path / 'typed.db'}"
    # The lead column declared INTEGER, so it keeps integers, reals and blobs as given; under
    # RTRIM, '  ' equals ''.
    ddl = TYPED_DDL.replace("f BOOLEAN,", "").replace("lead TEXT", "lead INTEGER")
    ddl = ddl.replace("v VARCHAR(40)", "v VARCHAR(40) COLLATE RTRIM")
    mapping = {c: a for c, a in TYPED_MAPPING.items() if c != "f"}
    with table_connector(url, emulator, "typed", mapping, ddl) as sync:
        yield sync


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), count=st.integers(1, 12))
def test_sqlite_folds_desired_values_exactly_as_python_does(
    sqlite_typed: Connector, data: st.DataObject, count: int
) -> None:
    sync = sqlite_typed
    rows = [
        {
            "id": number,
            **{column: data.draw(_SQLITE_VALUE) for column in "tvibs"},
            "lead": data.draw(_sqlite_lead(number)),
        }
        for number in range(1, count + 1)
    ]
    with sync.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM typed"))
        connection.execute(sa.delete(lead).where(lead.c.connector == sync.config.name))
        connection.execute(
            sa.text("INSERT INTO typed VALUES (:id, :t, :v, :i, :b, :s, :lead)"), rows
        )
    keys = [str(row["id"]) for row in rows]
    with sync.engine.connect() as connection:
        expected = fold_rows(sync.source.read(connection, keys))

    result = run_ingest(sync)

    assert result == expected_result(count, expected)
    assert lead_rows(sync) == {
        c.lead_id: (c.source_key, dumps(c.desired), c.hold) for c in expected.changes
    }


def test_rows_of_one_lead_in_one_batch_leave_one_of_their_values_and_the_others_key(
    sync: Connector, app: sa.Engine
) -> None:
    execute(
        app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        "(1, 'Pune', 'L1'), (2, 'Goa', 'L1'), (3, 'Agra', '  '), (4, 'Delhi', NULL)",
    )
    assert run_ingest(sync) == ingested(4, 2)
    source_key, desired = leads_by_id(app, sync.config.name)["L1"]
    city = {"1": "Pune", "2": "Goa"}[source_key]
    assert desired == dumps({"Phone": None, "mx_City": city, "mx_Plan": None, "mx_Score": None})
    with app.connect() as connection:
        [state] = sync.tables.leads.all_leads(connection)
    assert state.other_key == {"1": "2", "2": "1"}[source_key]


# -- one transaction per batch; deleting consumed rows later ---------------------------------


def test_a_batch_that_fails_writes_nothing_and_moves_no_cursor(
    sync: Connector, app: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    execute(
        app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')",
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'Goa', 'L2')",
    )
    pending = change_positions(app)

    def fail(*_args: object) -> None:
        raise RuntimeError("killed between the write and the cursor advance")

    with monkeypatch.context() as patched:
        patched.setattr(ChangeLog, "consume", fail)
        with pytest.raises(RuntimeError):
            run_ingest(sync, batch_size=1)

    assert leads_by_id(app, sync.config.name) == {}
    assert cursor_position(app, sync.config.name) == START
    assert change_positions(app) == pending
    assert run_ingest(sync, batch_size=1).changes_ingested == 2
    assert set(leads_by_id(app, sync.config.name)) == {"L1", "L2"}


def test_consumed_change_rows_are_deleted_in_groups_and_at_the_end(
    sync: Connector, app: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connector.ingest, "DISCARD_AFTER_CHANGES", 3)
    execute(
        app,
        *(
            f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES ({i}, 'c', 'L{i}')"
            for i in range(1, 8)
        ),
    )
    discards: list[tuple[ChangeCursor, ChangeCursor]] = []
    discard = ChangeLog.discard_consumed

    def spy(
        log: ChangeLog, connection: sa.Connection, after: ChangeCursor, through: ChangeCursor
    ) -> None:
        discards.append((after, through))
        discard(log, connection, after, through)

    monkeypatch.setattr(ChangeLog, "discard_consumed", spy)
    assert run_ingest(sync, batch_size=2).changes_ingested == 7

    # Batches of 2: a DELETE after 4 and after 8 changes would do; 3 is reached after 4.
    assert len(discards) == 2
    assert discards[0][0] == START
    assert discards[1][0] == discards[0][1]
    assert discards[1][1] == cursor_position(app, sync.config.name)
    assert change_positions(app) == []


def test_rows_a_crash_left_behind_the_cursor_are_deleted_by_the_next_ingest(
    sync: Connector, app: sa.Engine
) -> None:
    execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    assert run_ingest(sync).changes_ingested == 1
    at = cursor_position(app, sync.config.name)
    assert at != START
    # As if an ingest had committed its batch and died before deleting the batch's rows.
    with app.begin() as connection:
        connection.execute(
            change.insert(),
            [
                {
                    "connector": sync.config.name,
                    "row_key": "1",
                    "tx_id": at.tx_id,
                    "change_id": at.change_id - 1,
                },
            ],
        )
    before = leads_by_id(app, sync.config.name)
    with app.connect() as connection:
        assert sync.tables.changes.pending_changes(connection) == 0  # passed, so not waiting

    assert run_ingest(sync).changes_ingested == 0

    assert change_positions(app) == []
    assert leads_by_id(app, sync.config.name) == before


def test_a_stopped_ingest_still_deletes_what_it_consumed(sync: Connector, app: sa.Engine) -> None:
    execute(
        app,
        *(
            f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES ({i}, 'c', 'L{i}')"
            for i in range(1, 5)
        ),
    )

    tables = ConnectorTables(sync.engine, sync.config.name)
    consume = tables.changes.consume

    def consume_then_stop(*args: Any, **kwargs: Any) -> None:
        consume(*args, **kwargs)
        stop.set()

    tables.changes.consume = consume_then_stop  # type: ignore[method-assign]
    stop = threading.Event()
    tally = Tally()
    ingest(
        sync.engine,
        tables=tables,
        source=SourceTable(sync.engine, sync.config),
        clock=SystemClock(),
        batch_size=3,
        stop=stop,
        events=tally,
    )

    assert tally.counts().changes_ingested == 3
    with app.connect() as connection:
        left = connection.execute(sa.select(change.c.row_key).order_by(change.c.change_id))
        assert len(list(left)) == 1
    assert cursor_position(app, sync.config.name) != START
    with app.connect() as connection:
        cursor_rows = connection.execute(sa.select(sa.func.count()).select_from(cursor)).scalar()
    assert cursor_rows == 1


def stored_as_python_folds(sync: Connector, keys: list[str]) -> None:
    """Ingest, then check the stored leads against what the Python fold makes of the rows."""
    with sync.engine.connect() as connection:
        expected = fold_rows(sync.source.read(connection, keys))
    assert sync.source.desired_query(keys) is not None  # the database folds these itself
    result = run_ingest(sync)
    assert result == expected_result(len(keys), expected)
    assert leads_by_id(sync.engine, sync.config.name) == {
        c.lead_id: (c.source_key, dumps(c.desired)) for c in expected.changes
    }


def test_a_case_insensitive_collation_neither_empties_values_nor_merges_leads(
    pg_url: str, emulator: Emulator
) -> None:
    with table_connector(
        pg_url,
        emulator,
        "loose_rows",
        {"t": "mx_T"},
        # Under it a control character equals '', and 'ABC' equals 'abc'.
        "CREATE COLLATION loose (provider = icu, locale = 'und-u-ks-level2', "
        "deterministic = false)",
        "CREATE TABLE loose_rows (id INTEGER PRIMARY KEY, t TEXT COLLATE loose, "
        "lead TEXT COLLATE loose)",
    ) as sync:
        execute(
            sync.engine,
            "INSERT INTO loose_rows VALUES (1, chr(1), 'ABC'), (2, 'x', 'abc'), "
            "(3, chr(31), chr(1)), (4, 'y', chr(160))",
        )
        stored_as_python_folds(sync, ["1", "2", "3", "4"])
        assert {"ABC", "abc", "\x01"} <= set(leads_by_id(sync.engine, sync.config.name))


def test_the_database_folds_under_a_client_encoding_without_unicode_whitespace(
    pg_url: str, emulator: Emulator
) -> None:
    create_customers(pg_url)
    config = config_dict(f"{pg_url}&client_encoding=latin1", emulator)
    with Connector(load(config)) as sync:
        sync.init()
        execute(
            sync.engine,
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
            "(1, 'Pune', 'L1'), (2, 'Goa', ' '), (3, 'Agra', NULL)",
        )
        stored_as_python_folds(sync, ["1", "2", "3"])


def test_a_column_whose_type_changed_between_runs_is_normalised_by_its_new_type(
    pg_url: str, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    ddl = "CREATE TABLE priced (id INTEGER PRIMARY KEY, price INTEGER, lead TEXT)"
    # One Connector for both runs, as a daemon keeps it.
    with table_connector(pg_url, emulator, "priced", {"price": "mx_Price"}, ddl) as sync:
        engine = sync.engine
        execute(engine, "INSERT INTO priced VALUES (1, 2, 'L1')")
        sync.run_once()
        assert emulator.lead("L1") == {"mx_Price": "2"}

        execute(
            engine,
            "ALTER TABLE priced ALTER COLUMN price TYPE NUMERIC(10, 2)",
            "UPDATE priced SET price = 2.5",
        )
        sync.run_once()

        # NUMERIC 2.50 is normalised as 2.5; computed as text by the server it is "2.50".
        assert emulator.lead("L1") == {"mx_Price": "2.5"}
        assert leads_by_id(engine, sync.config.name) == {"L1": ("1", '{"mx_Price":"2.5"}')}


def test_a_value_that_cannot_be_sent_holds_back_only_its_own_lead(
    db_url: str, emulator: Emulator
) -> None:
    binary = "BYTEA" if db_url.startswith("postgresql") else "BLOB"
    ddl = f"CREATE TABLE files (id INTEGER PRIMARY KEY, doc {binary}, city TEXT, lead TEXT)"
    mapping = {"doc": "mx_Doc", "city": "mx_City"}
    with table_connector(db_url, emulator, "files", mapping, ddl) as sync:
        engine = sync.engine
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO files VALUES (:id, :doc, :city, :lead)"),
                [
                    {"id": 1, "doc": b"%PDF", "city": "Pune", "lead": "L1"},
                    {"id": 2, "doc": None, "city": "Goa", "lead": "L2"},
                ],
            )
        assert run_ingest(sync) == ingested(2, 0, held_back=1)
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(lead.c.lead_id, lead.c.desired, lead.c.hold)
                .where(lead.c.connector == sync.config.name)
                .order_by(lead.c.lead_id)
            ).all()

    assert [tuple(row) for row in rows] == [
        (
            "L1",
            '{"mx_City":"Pune"}',
            "row 1, column 'doc': binary values cannot be sent to LeadSquared",
        ),
        ("L2", '{"mx_City":"Goa","mx_Doc":null}', None),
    ]


def test_a_text_key_is_matched_and_stored_as_text(db_url: str, emulator: Emulator) -> None:
    ddl = "CREATE TABLE coded (code VARCHAR(20) PRIMARY KEY, city TEXT, lead TEXT)"
    with table_connector(db_url, emulator, "coded", {"city": "mx_City"}, ddl, key="code") as sync:
        engine = sync.engine
        execute(
            engine,
            "INSERT INTO coded VALUES ('k-1', 'Pune', 'L1'), ('007', 'Goa', 'L2'), "
            "('K-1', 'Agra', 'L3')",
        )
        stored_as_python_folds(sync, ["k-1", "007", "K-1"])
        assert leads_by_id(engine, sync.config.name)["L2"] == ("007", '{"mx_City":"Goa"}')


def test_sqlite_folds_text_bytewise_whatever_the_column_collation(
    tmp_path: Path, emulator: Emulator
) -> None:
    # Under RTRIM, '  ' equals ''; under NOCASE, 'ABC' equals 'abc'.
    ddl = (
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, t TEXT COLLATE RTRIM, lead TEXT COLLATE NOCASE)"
    )
    with sqlite_connector(tmp_path, emulator, ddl, {"t": "mx_T"}) as sync:
        execute(
            sync.engine, "INSERT INTO rows VALUES (1, '  ', 'ABC'), (2, '', 'abc'), (3, 'x ', ' ')"
        )
        stored_as_python_folds(sync, ["1", "2", "3"])
        assert set(leads_by_id(sync.engine, sync.config.name)) == {"ABC", "abc"}


def sqlite_connector(
    tmp_path: Path, emulator: Emulator, ddl: str, mapping: dict[str, str], key: str = "id"
) -> Connector:
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    return table_connector(url, emulator, "rows", mapping, ddl, key=key)


@pytest.mark.parametrize("count", [90, 150])
def test_sqlite_folds_a_mapping_of_many_columns(
    tmp_path: Path, emulator: Emulator, count: int
) -> None:
    """Past 63 columns json_object would refuse its arguments; past 100 Python folds."""
    columns = [f"c{n}" for n in range(count)]
    declared = ", ".join(f"{c} TEXT" for c in columns)
    ddl = f"CREATE TABLE rows (id INTEGER PRIMARY KEY, lead TEXT, {declared})"
    with sqlite_connector(tmp_path, emulator, ddl, {c: f"mx_{c}" for c in columns}) as sync:
        values = ", ".join(f"'{c}'" for c in columns)
        execute(sync.engine, f"INSERT INTO rows VALUES (1, 'L1', {values})")
        assert (sync.source.desired_query(["1"]) is not None) == (count <= 100)
        assert run_ingest(sync).changes_ingested == 1
        assert leads_by_id(sync.engine, sync.config.name) == {
            "L1": ("1", dumps({f"mx_{c}": c for c in columns}))
        }


def test_sqlite_text_that_is_not_utf8_is_never_stored(tmp_path: Path, emulator: Emulator) -> None:
    ddl = "CREATE TABLE rows (id INTEGER PRIMARY KEY, t TEXT, lead TEXT)"
    with sqlite_connector(tmp_path, emulator, ddl, {"t": "mx_T"}) as sync:
        # 'José' in Latin-1, and lead ids likewise, one behind a NUL: none can be read as text.
        execute(
            sync.engine,
            "INSERT INTO rows VALUES (1, CAST(x'4a6f73e9' AS TEXT), 'L1'), "
            "(2, 'x', CAST(x'4ce9' AS TEXT)), (3, 'y', CAST(x'4c00e9' AS TEXT))",
        )
        query = sync.source.desired_query(["1", "2", "3"])
        assert query is not None
        rows = query.subquery()
        with sync.engine.connect() as connection:
            folded = connection.execute(sa.select(rows.c.source_key, rows.c.desired)).all()
        assert sorted(tuple(row) for row in folded) == [("1", None), ("2", None), ("3", None)]
        # Python cannot read them either: each row is held back alone, storing no lead.
        assert run_ingest(sync) == ingested(3, 0, held_back=3)
        assert leads_by_id(sync.engine, sync.config.name) == {}


def test_sqlite_keys_and_lead_ids_holding_nul_are_kept_whole(
    tmp_path: Path, emulator: Emulator
) -> None:
    ddl = "CREATE TABLE rows (code TEXT PRIMARY KEY, t TEXT, lead TEXT)"
    with sqlite_connector(tmp_path, emulator, ddl, {"t": "mx_T"}, key="code") as sync:
        with sync.engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO rows VALUES (:code, :t, :lead)"),
                [
                    {"code": "k\x001", "t": "a", "lead": "L1"},
                    {"code": "k2", "t": "é", "lead": "L\x00x"},  # past ASCII: Python folds it
                ],
            )
        assert run_ingest(sync).changes_ingested == 2
        assert leads_by_id(sync.engine, sync.config.name) == {
            "L1": ("k\x001", '{"mx_T":"a"}'),
            "L\x00x": ("k2", '{"mx_T":"\\u00e9"}'),
        }
        # The same lead once the value is plain ASCII (a NUL still needs Python, on SQLite).
        execute(sync.engine, "UPDATE rows SET t = 'b' WHERE code = 'k2'")
        assert run_ingest(sync).changes_ingested == 1
        assert leads_by_id(sync.engine, sync.config.name)["L\x00x"] == ("k2", '{"mx_T":"b"}')


@pytest.mark.parametrize("kept", ["old", "olé"], ids=["folded-in-sql", "folded-in-python"])
def test_two_rows_of_one_lead_in_a_batch_write_the_lead_once(
    db_url: str, emulator: Emulator, kept: str
) -> None:
    """Each row upserted in turn would lose the other row: the lead must end as one of its
    rows alone would leave it, holding the other's key, so that nothing is sent to it."""
    ddl = "CREATE TABLE pair (id INTEGER PRIMARY KEY, t TEXT, lead TEXT)"
    with table_connector(db_url, emulator, "pair", {"t": "mx_T"}, ddl) as sync:
        engine = sync.engine
        execute(engine, f"INSERT INTO pair VALUES (2, '{kept}', 'X')")
        run_ingest(sync)
        with engine.begin() as connection:
            connection.execute(sa.update(lead).values(rejected=True, attempts=3))
        execute(
            engine,
            "UPDATE pair SET t = 'tmp' WHERE id = 2",
            f"UPDATE pair SET t = '{kept}' WHERE id = 2",  # back to what is stored
            "INSERT INTO pair VALUES (1, 'new', 'X')",
        )

        run_ingest(sync)

        with engine.connect() as connection:
            columns = (lead.c.source_key, lead.c.desired, lead.c.other_key)
            state = tuple(connection.execute(sa.select(*columns)).one())
    as_row_1 = ("1", '{"mx_T":"new"}', "2")
    as_row_2 = ("2", dumps({"mx_T": kept}), "1")
    assert state in {as_row_1, as_row_2}


def test_sqlite_holds_back_a_row_with_a_blob_lead_id_instead_of_spelling_it(
    tmp_path: Path, emulator: Emulator
) -> None:
    """Python would spell the blob lead id b'L1' as "b'L1'", which a text lead id may equal:
    such a row is held back, and the text lead id is a lead of its own. Likewise a real
    (declared INTEGER, the column keeps it as one)."""
    ddl = "CREATE TABLE rows (id INTEGER PRIMARY KEY, t TEXT, lead INTEGER)"
    with sqlite_connector(tmp_path, emulator, ddl, {"t": "mx_T"}) as sync:
        execute(
            sync.engine,
            "INSERT INTO rows VALUES (1, 'a', x'4c31'), (2, 'b', 'b''L1'''), (3, 'c', 2.5)",
        )

        assert run_ingest(sync) == ingested(3, 0, held_back=2)

        assert lead_rows(sync) == {"b'L1'": ("2", '{"mx_T":"b"}', None)}
        with sync.engine.connect() as connection:
            problems = sync.tables.problems.row_problems(connection)
    assert [(p.key, p.column, p.reason) for p in problems] == [
        ("1", "lead", "a lead id of type 'bytes' cannot be a ProspectId"),
        ("3", "lead", "a lead id of type 'float' cannot be a ProspectId"),
    ]
