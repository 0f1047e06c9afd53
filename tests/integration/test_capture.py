"""Change capture on real databases: it never fails the application's statement, whatever the
column types, NULL keys, drift of the table under it or replica-mode writes; a run refuses
capture that vanished or broke; `init` refuses keys that are not unique and names already
installed elsewhere; `uninstall` removes it all."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector import Connector, LsqSyncError, RunReport, capture, catalogue, installation
from connector.errors import CaptureError, ConfigError
from connector.schema import PREFIX, capture_error, change, metadata
from connector.testing.emulator import Emulator
from tests.support import PG_URL, config_dict, execute, load, wait_until_readable


def noted_errors(engine: sa.Engine, name: str = "test") -> list[tuple[str, bool]]:
    """(message, keys_lost) of each error the triggers noted for `name`."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(capture_error.c.message, capture_error.c.keys_lost)
            .where(capture_error.c.connector == name)
            .order_by(capture_error.c.error_id)
        )
        return [(message, keys_lost) for message, keys_lost in rows]


def qualified(engine: sa.Engine, table: str) -> str:
    """How messages name a table of the test's database: with its schema on PostgreSQL."""
    if engine.dialect.name == "postgresql":
        return f"{engine.url.query['options'].split('=')[-1]}.{table}"
    return table


def installed_triggers(engine: sa.Engine, table: str = "typed") -> list[str]:
    with engine.connect() as connection:
        found = catalogue.resolve(connection, None, table)
        return [] if found is None else sorted(catalogue.triggers(connection, found))


def captured(engine: sa.Engine, name: str = "test") -> list[str]:
    """The keys of the change rows waiting for `name`, in capture order."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(change.c.row_key)
                .where(change.c.connector == name)
                .order_by(change.c.tx_id, change.c.change_id)
            ).scalars()
        )


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """The application's engine, on SQLite and on PostgreSQL."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlite_url)
    yield engine
    engine.dispose()


def run(sync: Connector) -> RunReport:
    """One run, once it can read every change captured so far."""
    wait_until_readable(sync.engine)
    return sync.run_once()


def table_config(
    url: str,
    emulator: Emulator,
    mapping: dict[str, str],
    *,
    table: str = "typed",
    key: str = "id",
    lead: str = "lead",
    name: str = "test",
) -> dict[str, Any]:
    config = config_dict(
        url, emulator, name=name, source={"table": table, "key": key}, lead_id={"column": lead}
    )
    config["mapping"] = mapping  # replaced, not merged as config_dict merges sections
    return config


def make_connector(
    url: str,
    emulator: Emulator,
    mapping: dict[str, str],
    *statements: str,
    init: bool = True,
    **names: str,
) -> Connector:
    """A connector for a table made by `statements` (`typed`, keyed by `id`, lead id column
    `lead`, unless `names` say otherwise); use it as a context manager."""
    engine = sa.create_engine(url)
    execute(engine, *statements)
    engine.dispose()
    sync = Connector(load(table_config(url, emulator, mapping, **names)))
    if init:
        sync.init()
    return sync


# -- column types without a pg_catalog equality ---------------------------------------------

EXTENSIONS_LOCK = 7_318_240_551  # serialises CREATE EXTENSION among concurrent test sessions


def create_extension(url: str, extension: str) -> None:
    """Extensions are database-wide: created once, in public, and never dropped."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(EXTENSIONS_LOCK)))
            connection.exec_driver_sql(f"CREATE EXTENSION IF NOT EXISTS {extension} SCHEMA public")
    finally:
        engine.dispose()


# (column type, extension it needs, DDL it needs, a value, another value)
TYPES = {
    "json": ("json", None, None, """'{"a": 1}'""", """'{"a": 2}'"""),
    "xml": ("xml", None, None, "'<a>1</a>'", "'<a>2</a>'"),
    "point": ("point", None, None, "'(1,2)'", "'(1,3)'"),
    "hstore": ("public.hstore", "hstore", None, "'a=>1'", "'a=>2'"),
    # A change of case is a change: citext's own `=` would call these equal.
    "citext": ("public.citext", "citext", None, "'Pune'", "'PUNE'"),
    "json[]": ("json[]", None, None, """ARRAY['{"a": 1}'::json]""", """ARRAY['{"a": 2}'::json]"""),
    "enum": ("mood", None, "CREATE TYPE mood AS ENUM ('calm', 'busy')", "'calm'", "'busy'"),
    "domain over json": (
        "settings",
        None,
        "CREATE DOMAIN settings AS json",
        """'{"a": 1}'""",
        """'{"a": 2}'""",
    ),
}


# SQLAlchemy cannot reflect xml, point or extension types; it warns and reads them as text.
@pytest.mark.filterwarnings("ignore:Did not recognize type:sqlalchemy.exc.SAWarning")
@pytest.mark.parametrize("kind", list(TYPES))
def test_columns_without_a_catalogue_equality_are_captured_by_their_text(
    pg_url: str, emulator: Emulator, kind: str, pg_engine: sa.Engine
) -> None:
    column_type, extension, ddl, first, second = TYPES[kind]
    if extension:
        create_extension(pg_url, extension)
    statements = [ddl] if ddl else []
    statements.append(f"CREATE TABLE typed (id INTEGER PRIMARY KEY, v {column_type}, lead TEXT)")
    app = pg_engine
    with make_connector(pg_url, emulator, {"v": "mx_V"}, *statements):
        execute(app, f"INSERT INTO typed (id, v, lead) VALUES (1, {first}, 'L1')")
        execute(app, f"UPDATE typed SET v = {second} WHERE id = 1")
        execute(app, "UPDATE typed SET v = v", "UPDATE typed SET lead = lead")
        execute(app, f"INSERT INTO typed (id, v, lead) VALUES (2, {first}, 'L2')")
        assert captured(app) == ["1", "1", "2"]
        assert noted_errors(app) == []


def test_a_change_of_case_is_captured_whatever_the_collation(
    db_url: str, emulator: Emulator, engine: sa.Engine
) -> None:
    """Under a case-insensitive collation 'pune' equals 'Pune', as key and as value."""
    if engine.dialect.name == "postgresql":
        loose = "loose"
        statements = [
            "CREATE COLLATION loose (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false)"
        ]
    else:
        loose, statements = "NOCASE", []
    statements.append(
        f"CREATE TABLE typed (id TEXT COLLATE {loose} PRIMARY KEY, city TEXT COLLATE {loose}, "
        f"v VARCHAR(20) COLLATE {loose}, lead TEXT)"
    )
    mapping = {"city": "mx_City", "v": "mx_V"}
    with make_connector(db_url, emulator, mapping, *statements):
        execute(engine, "INSERT INTO typed (id, city, v, lead) VALUES ('a', 'pune', 'x', 'L1')")
        execute(engine, "UPDATE typed SET city = 'Pune'")
        execute(engine, "UPDATE typed SET v = 'X'")
        execute(engine, "UPDATE typed SET id = 'A'")
        execute(engine, "UPDATE typed SET city = 'Pune', v = 'X', id = 'A'")  # no change
        assert captured(engine) == ["a", "a", "a", "A"]


def test_postgresql_a_change_of_case_is_captured_after_the_collation_changed(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> None:
    """The application's migration makes a column case-insensitive after `init`: the trigger
    must still see 'pune' become 'Pune'."""
    app = pg_engine
    ddl = "CREATE TABLE typed (id INTEGER PRIMARY KEY, city TEXT, lead TEXT)"
    with make_connector(pg_url, emulator, {"city": "mx_City"}, ddl):
        execute(app, "INSERT INTO typed VALUES (1, 'pune', 'L1')")
        execute(
            app,
            "CREATE COLLATION loose (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false)",
            "ALTER TABLE typed ALTER COLUMN city TYPE text COLLATE loose",
            "UPDATE typed SET city = 'Pune'",
        )
        assert captured(app) == ["1", "1"]
        assert noted_errors(app) == []


# -- NULL keys ---------------------------------------------------------------------------------


def test_rows_with_a_null_key_are_skipped_without_failing_the_application(
    db_url: str, emulator: Emulator, engine: sa.Engine
) -> None:
    ddl = "CREATE TABLE typed (id INTEGER PRIMARY KEY, email TEXT UNIQUE, city TEXT, lead TEXT)"
    app = engine
    with make_connector(db_url, emulator, {"city": "mx_City"}, ddl, key="email") as sync:
        execute(
            app,
            "INSERT INTO typed (id, email, city, lead) VALUES (1, NULL, 'Pune', 'L1'), "
            "(2, 'b@example.com', 'Goa', 'L2')",
        )
        execute(app, "UPDATE typed SET city = 'Delhi'")
        execute(app, "UPDATE typed SET email = NULL WHERE id = 2")
        assert captured(app) == ["b@example.com", "b@example.com"]
        assert sync.backfill() == 0  # no row has a key left


def test_sqlite_nullable_text_primary_key_holding_null_is_skipped(
    sqlite_url: str, emulator: Emulator, sqlite_engine: sa.Engine
) -> None:
    url = sqlite_url
    ddl = "CREATE TABLE typed (id TEXT PRIMARY KEY, city TEXT, lead TEXT)"
    app = sqlite_engine
    with make_connector(url, emulator, {"city": "mx_City"}, ddl) as sync:
        execute(
            app,
            "INSERT INTO typed (id, city, lead) VALUES (NULL, 'Pune', 'L1'), ('k', 'Goa', 'L2')",
        )
        execute(app, "UPDATE typed SET city = 'Delhi'")
        assert captured(app) == ["k", "k"]
        assert sync.backfill() == 1


# -- cost: one session, small statements then a large one --------------------------------------


def test_postgresql_capture_never_plans_a_nested_loop_over_the_transition_tables(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> None:
    """PL/pgSQL keeps the plan of the trigger's join for the session, sized for the
    transition tables of its first statement. After a one-row UPDATE that is a nested loop,
    and a pooled application connection's next 200k-row UPDATE took minutes (seen at 20k
    rows: 54 s against 0.3 s in a fresh session). The plans are read, not timed."""
    app = pg_engine
    with make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS):
        execute(
            app,
            "INSERT INTO typed (id, city, lead) SELECT i, 'Pune', 'L' || i "
            "FROM generate_series(1, 50) AS i",
        )
        plans: list[str] = []
        with app.connect() as connection:
            raw = connection.connection.driver_connection
            raw.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
            for statement in (
                "LOAD 'auto_explain'",
                "SET auto_explain.log_min_duration = 0",
                "SET auto_explain.log_nested_statements = on",
                "SET client_min_messages = log",
                "UPDATE typed SET city = 'Goa' WHERE id = 1",
                "UPDATE typed SET city = 'Agra'",
            ):
                connection.exec_driver_sql(statement)
            connection.commit()
        joins = [plan for plan in plans if "lsq_sync_change" in plan and "Join" in plan]
        assert len(joins) == 2  # the record's INSERT, once per UPDATE
        assert not [plan for plan in joins if "Nested Loop" in plan]
        assert len(captured(app)) == 50 + 1 + 50  # the INSERT, then both UPDATEs


# -- drift: the table changes under the triggers --------------------------------------------

CUSTOMERS = "CREATE TABLE typed (id INTEGER PRIMARY KEY, city TEXT, plan TEXT, lead TEXT)"
CITY_AND_PLAN = {"city": "mx_City", "plan": "mx_Plan"}


@pytest.fixture
def drifting(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> Iterator[tuple[Connector, sa.Engine]]:
    """A connector on `typed` with two rows captured and consumed, and the application."""
    app = pg_engine
    with make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS) as sync:
        emulator.add_lead("L1")
        emulator.add_lead("L2")
        execute(
            app,
            "INSERT INTO typed (id, city, plan, lead) VALUES (1, 'Pune', 'free', 'L1'), "
            "(2, 'Goa', 'free', 'L2')",
        )
        assert run(sync).counts.leads_pushed == 2
        yield sync, app


@pytest.mark.parametrize(
    ("alter", "message", "keys_lost"),
    [
        ("DROP COLUMN plan", "column o.plan does not exist", False),
        ("RENAME COLUMN plan TO tier", "column o.plan does not exist", False),
        # `o.lead` without the column reads as a call of the window function lead().
        ("RENAME COLUMN lead TO prospect", "lead", False),
        ("ALTER COLUMN city TYPE json USING to_json(city)", "not supported by type json", False),
        ("RENAME COLUMN id TO ident", ".id does not exist", True),
    ],
)
def test_postgresql_capture_notes_what_it_cannot_compare_instead_of_failing(
    drifting: tuple[Connector, sa.Engine], alter: str, message: str, keys_lost: bool
) -> None:
    sync, app = drifting
    execute(app, f"ALTER TABLE typed {alter}")
    # The session that captured the rows before the change, then one that never captured.
    execute(app, "UPDATE typed SET city = city")
    fresh = sa.create_engine(app.url, poolclass=sa.pool.NullPool)
    try:
        execute(fresh, "UPDATE typed SET city = city")
        # Names the key whatever it is called now.
        key = """'{"id": 3, "ident": 3}'"""
        execute(fresh, f"INSERT INTO typed SELECT (jsonb_populate_record(NULL::typed, {key})).*")
    finally:
        fresh.dispose()
    noted = noted_errors(app)
    assert len(noted) == (3 if keys_lost else 2)  # the INSERT trigger reads the key alone
    assert all(message in text and lost == keys_lost for text, lost in noted), noted
    expected = [] if keys_lost else ["1", "2", "1", "2", "3"]
    assert captured(app) == expected
    with pytest.raises(CaptureError):
        sync.run_once()
    assert captured(app) == expected  # kept for the run after `init`


def test_postgresql_a_retype_that_still_compares_needs_no_init(
    drifting: tuple[Connector, sa.Engine], emulator: Emulator
) -> None:
    sync, app = drifting
    execute(
        app,
        "ALTER TABLE typed ALTER COLUMN plan TYPE varchar(20)",
        "ALTER TABLE typed ALTER COLUMN city TYPE varchar(40)",
        "ALTER TABLE typed ALTER COLUMN id TYPE bigint",
        "UPDATE typed SET city = 'Delhi' WHERE id = 1",
        "UPDATE typed SET plan = plan",
    )
    assert noted_errors(app) == []
    assert captured(app) == ["1"]
    assert run(sync).counts.leads_pushed == 1
    assert emulator.lead("L1")["mx_City"] == "Delhi"


# (what the column becomes, an UPDATE of row 1 after it)
RETYPES = {
    # Arrays and composites find their elements' equality at run time, when two values have
    # the same shape: the parse-time probe cannot see that json, point or xml has none.
    "json[]": ("json[] USING ARRAY[to_json(city)]", "UPDATE typed SET plan = 'pro' WHERE id = 1"),
    "point[]": ("point[] USING ARRAY[point(1, 2)]", "UPDATE typed SET plan = 'pro' WHERE id = 1"),
    "composite": ("boxed USING ROW(to_json(city))", "UPDATE typed SET plan = 'pro' WHERE id = 1"),
    # Circles of one area are "equal": a circle moved elsewhere would go uncaptured.
    "circle": (
        "circle USING circle(point(0, 0), 1)",
        "UPDATE typed SET city = circle(point(5, 5), 1) WHERE id = 1",
    ),
    "integer": ("integer USING length(city)", "UPDATE typed SET city = 7 WHERE id = 1"),
}


@pytest.mark.parametrize("retype", list(RETYPES))
def test_postgresql_a_column_retyped_to_one_compared_otherwise_is_noted(
    drifting: tuple[Connector, sa.Engine], retype: str
) -> None:
    """A column compared natively at `init` keeps the comparison `init` chose: retyped to
    anything that does not compare with its old type, the statement is noted, never failed."""
    sync, app = drifting
    new_type, update = RETYPES[retype]
    execute(
        app,
        "CREATE TYPE boxed AS (v json)",
        f"ALTER TABLE typed ALTER COLUMN city TYPE {new_type}",
        update,
    )
    assert captured(app) == ["1"]
    ((message, keys_lost),) = noted_errors(app)
    # As PostgreSQL names the type: schema-qualified when outside pg_catalog.
    named = re.escape(new_type.split()[0])
    assert re.fullmatch(rf"collations are not supported by type (\w+\.)?{named}", message)
    assert not keys_lost
    with pytest.raises(CaptureError, match="could not compare the rows of 1 statement"):
        sync.run_once()


def test_postgresql_drift_records_the_keys_of_a_table_with_a_column_named_like_the_alias(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> None:
    """The handler reads keys from the whole row of `new_rows n`: a column named `n` must not
    stand in for it, or every key of the statement would be dropped without a word."""
    app = pg_engine
    ddl = "CREATE TABLE typed (id INTEGER PRIMARY KEY, n INTEGER, city TEXT, plan TEXT, lead TEXT)"
    with make_connector(pg_url, emulator, CITY_AND_PLAN, ddl):
        execute(app, "INSERT INTO typed (id, n, city, lead) VALUES (1, 5, 'Pune', 'L1')")
        execute(app, "ALTER TABLE typed DROP COLUMN plan", "UPDATE typed SET city = 'Goa'")
        assert captured(app) == ["1", "1"]
        assert [lost for _, lost in noted_errors(app)] == [False]


@pytest.mark.parametrize("drift", [None, "ALTER TABLE typed DROP COLUMN plan"])
def test_postgresql_capture_writes_outside_any_subtransaction(
    drifting: tuple[Connector, sa.Engine], drift: str | None
) -> None:
    """The exception block must not write: a subtransaction that writes takes an id, and past
    64 of them in one transaction every snapshot on the server slows down. A row written in a
    subtransaction has that subtransaction's id as its xmin, not the transaction's."""
    _, app = drifting
    if drift:
        execute(app, drift)
    with app.begin() as connection:
        for city in range(3):
            connection.exec_driver_sql(f"UPDATE typed SET city = 'c{city}' WHERE id = 1")
        own_id = connection.exec_driver_sql("SELECT pg_current_xact_id()::text").scalar_one()
    with app.connect() as connection:
        writers = connection.exec_driver_sql(
            "SELECT xmin::text FROM lsq_sync_change UNION SELECT xmin::text "
            "FROM lsq_sync_capture_error"
        ).scalars()
        assert {int(xid) for xid in writers} == {int(own_id) % 2**32}
    assert len(captured(app)) == 3
    assert len(noted_errors(app)) == (3 if drift else 0)


@pytest.mark.parametrize(
    ("alter", "expected"),
    [
        (
            "DROP COLUMN plan",
            "mapped column `plan` no longer exists in table `{schema}.typed`: update the "
            "mapping and run `lsq-sync init`",
        ),
        (
            "RENAME COLUMN lead TO prospect",
            "lead id column `lead` no longer exists in table `{schema}.typed`: update "
            "`lead_id.column` and run `lsq-sync init`",
        ),
        (
            "RENAME COLUMN id TO ident",
            "key column `id` no longer exists in table `{schema}.typed`: update `source.key` "
            "and run `lsq-sync init`",
        ),
    ],
)
def test_a_run_says_which_configured_column_no_longer_exists(
    drifting: tuple[Connector, sa.Engine], alter: str, expected: str
) -> None:
    sync, app = drifting
    execute(app, f"ALTER TABLE typed {alter}", "UPDATE typed SET city = 'Delhi'")
    with pytest.raises(CaptureError) as refused:
        sync.run_once()
    assert str(refused.value) == expected.format(schema=qualified(app, "")[:-1])


def test_a_run_reports_the_trigger_error_when_the_columns_are_all_there(
    drifting: tuple[Connector, sa.Engine], emulator: Emulator
) -> None:
    sync, app = drifting
    execute(
        app,
        "ALTER TABLE typed ALTER COLUMN plan TYPE json USING to_json(plan)",
        "UPDATE typed SET city = 'Delhi' WHERE id = 1",
    )
    with pytest.raises(CaptureError, match="collations are not supported by type json") as refused:
        sync.run_once()
    assert "could not compare the rows of 1 statement(s)" in str(refused.value)
    assert "run `lsq-sync init`" in str(refused.value)
    emulator.clear_requests()
    assert sync.init() == 0  # the keys were recorded: nothing to queue
    assert noted_errors(app) == []
    report = run(sync)
    assert (report.status, report.counts.leads_pushed) == ("ok", 1)
    assert emulator.lead("L1")["mx_City"] == "Delhi"


def test_init_after_keys_were_lost_queues_every_row(
    drifting: tuple[Connector, sa.Engine], emulator: Emulator, pg_url: str
) -> None:
    _, app = drifting
    execute(app, "ALTER TABLE typed RENAME COLUMN id TO ident", "UPDATE typed SET city = 'Agra'")
    fixed = table_config(pg_url, emulator, CITY_AND_PLAN, key="ident")
    with Connector(load(fixed)) as renamed:
        assert renamed.init() == 2
        assert noted_errors(app) == []
        assert run(renamed).counts.leads_pushed == 2
    assert emulator.lead("L1")["mx_City"] == emulator.lead("L2")["mx_City"] == "Agra"


def test_postgresql_init_queues_every_row_without_holding_up_the_application(
    drifting: tuple[Connector, sa.Engine],
    emulator: Emulator,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Queueing every row reads the whole table: under the lock `init` took to replace the
    triggers, the application could neither read nor write it all that while."""
    _, app = drifting
    execute(app, "ALTER TABLE typed RENAME COLUMN id TO ident", "UPDATE typed SET city = 'Agra'")
    held_up: list[str] = []
    record_all_rows = capture.record_all_rows

    def record_while_the_application_writes(connection: sa.Connection, *args: Any) -> int:
        with app.connect() as application:
            application.exec_driver_sql("SET lock_timeout = '1s'")
            try:
                application.exec_driver_sql("UPDATE typed SET plan = 'pro' WHERE ident = 1")
                application.commit()
            except sa.exc.OperationalError as exc:
                held_up.append(str(exc.orig))
        return record_all_rows(connection, *args)

    monkeypatch.setattr(capture, "record_all_rows", record_while_the_application_writes)
    fixed = table_config(pg_url, emulator, CITY_AND_PLAN, key="ident")
    with Connector(load(fixed)) as renamed:
        assert renamed.init() == 2
        assert held_up == []
        assert noted_errors(app) == []
        assert run(renamed).counts.leads_pushed == 2
    assert emulator.lead("L1") == {"mx_City": "Agra", "mx_Plan": "pro"}


def test_sqlite_capture_follows_a_renamed_column_and_a_run_says_it_is_gone(
    sqlite_url: str, emulator: Emulator, sqlite_engine: sa.Engine
) -> None:
    url = sqlite_url
    app = sqlite_engine
    with make_connector(url, emulator, CITY_AND_PLAN, CUSTOMERS) as sync:
        emulator.add_lead("L1")
        execute(app, "INSERT INTO typed (id, city, plan, lead) VALUES (1, 'Pune', 'free', 'L1')")
        sync.run_once()
        execute(
            app, "ALTER TABLE typed RENAME COLUMN plan TO tier", "UPDATE typed SET tier = 'pro'"
        )
        with pytest.raises(CaptureError) as refused:
            sync.run_once()
        assert str(refused.value) == (
            "mapped column `plan` no longer exists in table `typed`: update the mapping and run "
            "`lsq-sync init`"
        )
        assert captured(app) == ["1"]
    fixed = table_config(url, emulator, {"city": "mx_City", "tier": "mx_Plan"})
    with Connector(load(fixed)) as renamed:
        renamed.init()
        assert run(renamed).counts.leads_pushed == 1
    assert emulator.lead("L1")["mx_Plan"] == "pro"


def test_sqlite_refuses_dropping_a_captured_column_until_the_mapping_changes(
    sqlite_url: str, emulator: Emulator, sqlite_engine: sa.Engine
) -> None:
    """What the README says to do: change the mapping and `init` first (or uninstall)."""
    with (
        make_connector(sqlite_url, emulator, CITY_AND_PLAN, CUSTOMERS),
        pytest.raises(sa.exc.OperationalError, match="error in trigger lsq_sync_test_upd"),
    ):
        execute(sqlite_engine, "ALTER TABLE typed DROP COLUMN plan")
    with make_connector(sqlite_url, emulator, {"city": "mx_City"}) as remapped:
        execute(sqlite_engine, "ALTER TABLE typed DROP COLUMN plan")
        assert run(remapped).status == "ok"


def test_a_mapped_generated_column_is_captured_when_what_it_is_made_of_changes(
    db_url: str, emulator: Emulator, engine: sa.Engine
) -> None:
    """SQLite's `UPDATE OF` names the columns a statement sets, and none sets a generated one."""
    stored = "STORED" if engine.dialect.name == "postgresql" else "VIRTUAL"  # PostgreSQL 15
    ddl = (
        "CREATE TABLE typed (id INTEGER PRIMARY KEY, first TEXT, last TEXT, "
        f"full_name TEXT GENERATED ALWAYS AS (first || ' ' || last) {stored}, lead TEXT)"
    )
    with make_connector(db_url, emulator, {"full_name": "mx_Name"}, ddl) as sync:
        execute(engine, "INSERT INTO typed (id, first, last, lead) VALUES (1, 'Asha', 'Rao', 'L1')")
        execute(engine, "UPDATE typed SET first = 'Usha'")
        execute(engine, "UPDATE typed SET last = 'Rao'")  # no change
        assert captured(engine) == ["1", "1"]
        emulator.add_lead("L1")
        assert run(sync).counts.leads_pushed == 1
    assert emulator.lead("L1") == {"mx_Name": "Usha Rao"}


# -- capture that vanished ----------------------------------------------------------------

VANISHED = "run `lsq-sync init`, then `lsq-sync backfill`: changes made meanwhile were not captured"


@pytest.fixture
def customers(
    db_url: str, emulator: Emulator, engine: sa.Engine
) -> Iterator[tuple[Connector, sa.Engine]]:
    app = engine
    with make_connector(db_url, emulator, CITY_AND_PLAN, CUSTOMERS) as sync:
        yield sync, app


def refusal(sync: Connector) -> str:
    with pytest.raises(CaptureError) as refused:
        sync.run_once()
    return str(refused.value)


def test_a_run_refuses_a_table_dropped_and_recreated_without_init(
    customers: tuple[Connector, sa.Engine], emulator: Emulator
) -> None:
    sync, app = customers
    execute(app, "DROP TABLE typed", CUSTOMERS)
    execute(app, "INSERT INTO typed (id, city, lead) VALUES (1, 'Pune', 'L1')")
    message = refusal(sync)
    assert "trigger `lsq_sync_test_ins` is missing" in message
    assert message.endswith(VANISHED)
    sync.init()
    assert sync.backfill() == 1
    emulator.add_lead("L1")
    assert run(sync).counts.leads_pushed == 1


def test_a_run_refuses_a_dropped_trigger(customers: tuple[Connector, sa.Engine]) -> None:
    sync, app = customers
    on_table = " ON typed" if app.dialect.name == "postgresql" else ""
    execute(app, f"DROP TRIGGER lsq_sync_test_upd{on_table}")
    message = refusal(sync)
    assert "trigger `lsq_sync_test_upd` is missing" in message
    assert "lsq_sync_test_ins" not in message
    sync.init()
    assert run(sync).status == "ok"


# How capture stops without `init` knowing; then the row is written again.
LAPSES = {
    "trigger dropped": "DROP TRIGGER lsq_sync_test_upd{on_table}",
    "table recreated": "DROP TABLE typed; " + CUSTOMERS + "; "
    "INSERT INTO typed (id, city, lead) VALUES (1, 'Pune', 'L1')",
    "trigger disabled": "ALTER TABLE typed DISABLE TRIGGER lsq_sync_test_upd",
    "uninstalled": "",
}


@pytest.mark.parametrize(
    ("db_url", "lapse"),
    [  # SQLite triggers cannot be disabled
        (db, lapse)
        for db in ("sqlite", "postgresql")
        for lapse in LAPSES
        if db == "postgresql" or lapse != "trigger disabled"
    ],
    indirect=["db_url"],
)
def test_init_after_capture_lapsed_queues_every_row(
    customers: tuple[Connector, sa.Engine], emulator: Emulator, lapse: str
) -> None:
    """A deploy that runs `init` (which it may, any number of times) before a run has seen the
    gap, or a user who skips the `backfill` a run asked for: the writes made meanwhile must
    still be pushed."""
    sync, app = customers
    postgres = app.dialect.name == "postgresql"
    emulator.add_lead("L1")
    execute(app, "INSERT INTO typed (id, city, lead) VALUES (1, 'Pune', 'L1')")
    assert run(sync).counts.leads_pushed == 1
    if lapse == "uninstalled":
        sync.uninstall()
    else:
        statements = LAPSES[lapse].format(on_table=" ON typed" if postgres else "")
        execute(app, *statements.split("; "))
    execute(app, "UPDATE typed SET city = 'Goa'")
    assert sync.init() == 1
    assert sync.init() == 0  # and only then
    assert run(sync).counts.leads_pushed == 1
    assert emulator.lead("L1")["mx_City"] == "Goa"


def test_a_run_refuses_a_dropped_table(customers: tuple[Connector, sa.Engine]) -> None:
    sync, app = customers
    execute(app, "DROP TABLE typed")
    assert refusal(sync) == (
        "table `typed` no longer exists: if it was renamed, update `source.table` and run "
        "`lsq-sync init`"
    )


@pytest.mark.parametrize(
    ("statements", "says"),
    [
        (["ALTER TABLE typed DISABLE TRIGGER lsq_sync_test_upd"], "is disabled"),
        (["ALTER TABLE typed DISABLE TRIGGER ALL"], "is disabled"),
        (
            ["ALTER TABLE typed DISABLE TRIGGER USER", "ALTER TABLE typed ENABLE TRIGGER USER"],
            "was disabled or altered since `lsq-sync init`",
        ),
        (["ALTER TABLE typed ENABLE REPLICA TRIGGER lsq_sync_test_ins"], "was disabled or altered"),
    ],
)
def test_a_run_refuses_triggers_disabled_or_re_enabled_without_init(
    pg_url: str, emulator: Emulator, statements: list[str], says: str, pg_engine: sa.Engine
) -> None:
    app = pg_engine
    with make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS) as sync:
        execute(app, *statements)
        message = refusal(sync)
        assert says in message
        assert message.endswith(VANISHED)
        sync.init()
        assert run(sync).status == "ok"


@pytest.mark.parametrize("command", ["init", "uninstall"])
def test_postgresql_init_and_uninstall_give_way_to_a_long_transaction(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine, command: str
) -> None:
    """Their DDL waits for every transaction that touched the table, and every statement of
    the application, reads too, queues behind that wait: a report running for an hour would
    stop the application for an hour. They give up after a moment instead."""
    app = pg_engine
    with make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS) as sync:
        outcome: list[BaseException] = []

        def attempt() -> None:
            try:
                sync.init() if command == "init" else sync.uninstall()
            except LsqSyncError as exc:
                outcome.append(exc)

        with app.connect() as report:
            report.exec_driver_sql("SELECT count(*) FROM typed").all()  # its lock lasts
            thread = threading.Thread(target=attempt)
            thread.start()
            thread.join(timeout=60)
            gave_way = not thread.is_alive()
            report.rollback()
        thread.join()
        assert gave_way, f"{command} waited for the application's transaction"
        (error,) = outcome
        assert f"table `{qualified(app, 'typed')}` is in use by another transaction" in str(error)
        assert f"Run `lsq-sync {command}` again" in str(error)
        assert installed_triggers(app) == ["lsq_sync_test_ins", "lsq_sync_test_upd"]
        sync.init()
        assert run(sync).status == "ok"


def test_postgresql_writes_go_on_when_the_connectors_own_tables_are_gone(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> None:
    """The connector's tables in a schema of their own, dropped without `uninstall` (or left
    out of a restore of the application's schema, which brings the triggers along): there is
    nowhere to record anything, and the application's writes must still succeed."""
    app = pg_engine
    schema = qualified(app, "")[:-1]
    own = f"{schema}_lsq"
    execute(app, f'CREATE SCHEMA "{own}"', CUSTOMERS)
    try:
        config = table_config(pg_url.replace(f"%3D{schema}", f"%3D{own}"), emulator, CITY_AND_PLAN)
        config["source"]["schema"] = schema
        with Connector(load(config)) as sync:
            sync.init()
        execute(app, "INSERT INTO typed (id, city, lead) VALUES (1, 'Pune', 'L1')")
        execute(app, f'DROP SCHEMA "{own}" CASCADE')
        execute(app, "UPDATE typed SET city = 'Goa'", "UPDATE typed SET plan = plan")
        execute(app, "INSERT INTO typed (id, city, lead) VALUES (2, 'Goa', 'L2')")
        execute(app, "ALTER TABLE typed DROP COLUMN plan", "UPDATE typed SET city = 'Agra'")
        with (
            Connector(load(config)) as sync,
            pytest.raises(LsqSyncError, match="run `lsq-sync init`"),
        ):
            sync.run_once()
    finally:
        execute(app, f'DROP SCHEMA IF EXISTS "{own}" CASCADE')


# -- writes in replica mode ---------------------------------------------------------------


def test_postgresql_captures_rows_written_in_replica_mode(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> None:
    """As `session_replication_role = replica` loads do (a logical replication apply worker
    also runs so, but fires no statement-level trigger): a change never captured is never
    synced."""
    app = pg_engine
    with make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS):
        insert_and_update_row_1(app, "session_replication_role = replica")
        assert captured(app) == ["1", "1"]


def insert_and_update_row_1(app: sa.Engine, setting: str) -> None:
    """Inserts row 1 into `typed` and updates it, in one transaction under `SET LOCAL setting`."""
    with app.begin() as connection:
        connection.exec_driver_sql(f"SET LOCAL {setting}")
        connection.exec_driver_sql("INSERT INTO typed (id, city, lead) VALUES (1, 'Pune', 'L')")
        connection.exec_driver_sql("UPDATE typed SET city = 'Goa'")


# -- who may use the trigger functions ----------------------------------------------------


@pytest.fixture
def role(pg_url: str) -> Iterator[str]:
    """A role of this test's own: roles are cluster-wide, so a unique name, dropped after."""
    name = f"lsq_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    execute(admin, f'CREATE ROLE "{name}"')
    try:
        yield name
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP OWNED BY "{name}"')
            connection.exec_driver_sql(f'DROP ROLE "{name}"')
        admin.dispose()


@pytest.fixture
def schema_user(pg_url: str, emulator: Emulator, role: str, pg_engine: sa.Engine) -> Iterator[str]:
    """`role`, with usage of the test's schema, where the connector has installed capture on
    `typed`; the connector stays open until the test ends."""
    with make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS):
        execute(pg_engine, f'GRANT USAGE ON SCHEMA "{qualified(pg_engine, "")[:-1]}" TO "{role}"')
        yield role


def test_only_the_connector_can_attach_its_trigger_functions(
    schema_user: str, pg_engine: sa.Engine
) -> None:
    app, role = pg_engine, schema_user
    execute(app, f'GRANT CREATE ON SCHEMA "{qualified(app, "")[:-1]}" TO "{role}"')
    with app.connect() as connection:
        connection.exec_driver_sql(f'SET ROLE "{role}"')
        connection.exec_driver_sql("CREATE TABLE intruder (id INTEGER PRIMARY KEY)")
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied for function"):
            connection.exec_driver_sql(
                "CREATE TRIGGER spy AFTER INSERT ON intruder REFERENCING NEW TABLE AS "
                "new_rows FOR EACH STATEMENT EXECUTE FUNCTION lsq_sync_test_capture_ins()"
            )
        connection.rollback()


def test_a_role_with_rights_on_the_source_table_alone_is_still_captured(
    schema_user: str, pg_engine: sa.Engine
) -> None:
    app, role = pg_engine, schema_user
    execute(app, f'GRANT SELECT, INSERT, UPDATE ON typed TO "{role}"')
    insert_and_update_row_1(app, f'ROLE "{role}"')
    assert captured(app) == ["1", "1"]


# -- keys that are not unique ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE typed (id INTEGER, city TEXT, lead TEXT)",
        "CREATE TABLE typed (id INTEGER, city TEXT, lead TEXT, UNIQUE (id, lead))",
        "CREATE TABLE typed (id INTEGER, city TEXT, lead TEXT); "
        "CREATE UNIQUE INDEX typed_id ON typed (id) WHERE lead IS NOT NULL",
        "CREATE TABLE typed (id INTEGER, city TEXT, lead TEXT); "
        "CREATE INDEX typed_id ON typed (id)",
        "CREATE TABLE typed (n INTEGER PRIMARY KEY, id INTEGER, city TEXT, lead TEXT)",
    ],
    ids=["no index", "unique with another column", "partial", "not unique", "another pk"],
)
def test_init_refuses_a_key_column_that_is_not_unique(
    db_url: str, emulator: Emulator, ddl: str
) -> None:
    statements = ddl.split("; ")
    with make_connector(db_url, emulator, {"city": "mx_City"}, *statements, init=False) as sync:
        with pytest.raises(ConfigError) as refused:
            sync.init()
        assert [str(problem) for problem in refused.value.problems] == [
            f"source.key: column 'id' of table {qualified(sync.engine, 'typed')!r} is neither "
            "its primary key nor the only column of a unique constraint or unique index (not "
            "partial): rows sharing a key would overwrite each other. Add one, or set "
            "`source.key` to a column that has one"
        ]
        assert installed_triggers(sync.engine) == []


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE typed (id INTEGER PRIMARY KEY, city TEXT, lead TEXT)",
        "CREATE TABLE typed (id TEXT PRIMARY KEY, city TEXT, lead TEXT)",
        "CREATE TABLE typed (n INTEGER PRIMARY KEY, id TEXT UNIQUE, city TEXT, lead TEXT)",
        "CREATE TABLE typed (id INTEGER, city TEXT, lead TEXT); "
        "CREATE UNIQUE INDEX typed_id ON typed (id)",
    ],
    ids=["integer pk", "text pk", "unique constraint", "unique index"],
)
def test_init_accepts_a_primary_or_unique_key(db_url: str, emulator: Emulator, ddl: str) -> None:
    with make_connector(db_url, emulator, {"city": "mx_City"}, *ddl.split("; ")) as sync:
        assert run(sync).status == "ok"


# -- one connector name, one table ----------------------------------------------------------

ORDERS = "CREATE TABLE orders (id INTEGER PRIMARY KEY, city TEXT, lead TEXT)"


def test_init_refuses_a_name_installed_on_another_table(
    db_url: str, emulator: Emulator, engine: sa.Engine
) -> None:
    with make_connector(db_url, emulator, {"city": "mx_City"}, CUSTOMERS):
        pass
    with make_connector(
        db_url, emulator, {"city": "mx_City"}, ORDERS, table="orders", init=False
    ) as other:
        with pytest.raises(ConfigError) as refused:
            other.init()
        assert installed_triggers(engine, "orders") == []
    problem = str(refused.value.problems[0])
    assert problem.startswith(
        f"name: connector 'test' is already installed on table {qualified(engine, 'typed')!r}, "
        f"not {qualified(engine, 'orders')!r}"
    )
    assert "Give this config a `name` of its own" in problem
    assert "`lsq-sync uninstall`" in problem
    with make_connector(
        db_url, emulator, {"city": "mx_City"}, table="orders", name="orders"
    ) as own:
        assert installed_triggers(engine, "orders") == [
            "lsq_sync_orders_ins",
            "lsq_sync_orders_upd",
        ]
        assert run(own).status == "ok"


def test_init_again_on_the_same_table_named_another_way_is_not_a_collision(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> None:
    with make_connector(pg_url, emulator, {"city": "mx_City"}, CUSTOMERS):
        pass
    schema = qualified(pg_engine, "")[:-1]
    explicit = table_config(pg_url, emulator, {"city": "mx_City"})
    explicit["source"]["schema"] = schema
    with Connector(load(explicit)) as sync:
        sync.init()
        assert run(sync).status == "ok"


def test_init_follows_its_own_table_renamed(
    db_url: str, emulator: Emulator, engine: sa.Engine
) -> None:
    with make_connector(db_url, emulator, {"city": "mx_City"}, CUSTOMERS):
        pass
    execute(engine, "ALTER TABLE typed RENAME TO clients")
    with make_connector(db_url, emulator, {"city": "mx_City"}, table="clients") as sync:
        assert installed_triggers(engine, "clients") == ["lsq_sync_test_ins", "lsq_sync_test_upd"]
        assert run(sync).status == "ok"


@pytest.mark.parametrize(
    ("installed_on", "refused"), [("typed", False), ("orders", True)], ids=["same", "another"]
)
def test_a_bare_table_name_stored_by_an_older_version_is_resolved(
    db_url: str, emulator: Emulator, engine: sa.Engine, installed_on: str, refused: bool
) -> None:
    execute(engine, ORDERS, CUSTOMERS)
    with make_connector(db_url, emulator, {"city": "mx_City"}, table=installed_on):
        # As versions before 2 stored it: the name as the config gave it.
        execute(engine, f"UPDATE lsq_sync_capture SET source_table = '{installed_on}'")
    with make_connector(db_url, emulator, {"city": "mx_City"}, init=False) as sync:
        if refused:
            with pytest.raises(ConfigError, match="already installed on table"):
                sync.init()
        else:
            sync.init()
            assert run(sync).status == "ok"


def test_a_capture_installed_by_an_older_version_asks_for_init(
    db_url: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture, "CAPTURE_VERSION", 1)
    with make_connector(db_url, emulator, {"city": "mx_City"}, CUSTOMERS) as sync:
        monkeypatch.undo()
        with pytest.raises(LsqSyncError, match="lsq-sync was upgraded: run `lsq-sync init`"):
            sync.run_once()
        sync.init()
        assert run(sync).status == "ok"


# -- uninstall ----------------------------------------------------------------------------------


def own_tables(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        names = sa.inspect(connection).get_table_names()
    return sorted(name for name in names if name.startswith(PREFIX))


def functions(engine: sa.Engine) -> list[str]:
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT proname FROM pg_proc "
                    "WHERE pronamespace = current_schema()::regnamespace "
                    "AND starts_with(proname, 'lsq_sync_') ORDER BY proname"
                )
            ).scalars()
        )


def test_uninstall_removes_capture_and_keeps_state(
    customers: tuple[Connector, sa.Engine],
) -> None:
    sync, app = customers
    execute(app, "INSERT INTO typed (id, city, lead) VALUES (1, 'Pune', 'L1')")
    done = sync.uninstall()
    assert done.table == qualified(app, "typed")
    expected = ["trigger lsq_sync_test_ins", "trigger lsq_sync_test_upd"]
    if app.dialect.name == "postgresql":
        expected += ["function lsq_sync_test_capture_ins", "function lsq_sync_test_capture_upd"]
    assert done.removed == expected
    assert (installed_triggers(app), functions(app)) == ([], [])
    execute(app, "UPDATE typed SET city = 'Goa'", "INSERT INTO typed (id) VALUES (2)")
    assert captured(app) == ["1"]  # kept, for `init` to take up again
    with pytest.raises(LsqSyncError, match="removed by `lsq-sync uninstall`"):
        sync.run_once()
    assert sync.uninstall().removed == []  # twice is harmless
    assert sync.init() == 2  # what was written meanwhile went uncaptured: every row is queued
    assert sorted(captured(app)) == ["1", "1", "2"]
    assert run(sync).counts.changes_ingested == 3


def test_uninstall_drops_the_tables_with_the_last_connector_state(
    customers: tuple[Connector, sa.Engine], db_url: str, emulator: Emulator
) -> None:
    sync, app = customers
    with make_connector(
        db_url, emulator, {"city": "mx_City"}, ORDERS, table="orders", name="orders"
    ) as other:
        execute(app, "INSERT INTO typed (id, city, lead) VALUES (1, 'Pune', 'L1')")
        execute(app, "INSERT INTO orders (id, city, lead) VALUES (1, 'Pune', 'L1')")
        emulator.add_lead("L1")
        run(sync)
        done = sync.uninstall(drop_state=True)
        assert (done.tables_dropped, done.other_connectors) == (False, ("orders",))
        assert done.rows_deleted >= 3  # its install, cursor, lead and run at least
        with app.connect() as connection:
            for table in metadata.sorted_tables:
                if "connector" in table.c:
                    assert (
                        connection.execute(
                            sa.select(sa.func.count()).where(table.c.connector == "test")
                        ).scalar_one()
                        == 0
                    ), table.name
        assert installed_triggers(app, "orders") == ["lsq_sync_orders_ins", "lsq_sync_orders_upd"]
        done = other.uninstall(drop_state=True)
        assert (done.tables_dropped, done.other_connectors) == (True, ())
    assert own_tables(app) == []
    assert (installed_triggers(app), installed_triggers(app, "orders"), functions(app)) == (
        [],
        [],
        [],
    )
    execute(app, "UPDATE typed SET city = 'Goa'", "UPDATE orders SET city = 'Goa'")


def waiting_for_a_lock(engine: sa.Engine, timeout: float = 60) -> None:
    """Return once some session waits for a lock on a table of the test's schema."""
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while not connection.exec_driver_sql(
            "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE NOT l.granted AND c.relnamespace = current_schema()::regnamespace)"
        ).scalar_one():
            connection.rollback()
            assert time.monotonic() < deadline, "nobody waited for a lock"
            time.sleep(0.05)


def test_postgresql_uninstall_keeps_the_tables_of_a_connector_installing_meanwhile(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connector's `init`, not yet committed, is invisible to `uninstall`'s look for
    other connectors: dropping the tables then would leave its triggers writing into tables
    that no longer exist, failing every write of its application."""
    app = pg_engine
    with (
        make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS) as leaving,
        make_connector(
            pg_url, emulator, {"city": "mx_City"}, ORDERS, table="orders", name="orders", init=False
        ) as arriving,
    ):
        about_to_commit, may_commit = threading.Event(), threading.Event()
        last_error_id = installation.last_error_id

        def last_error_id_then_wait(*args: Any) -> int:  # the end of init's install
            newest = last_error_id(*args)
            about_to_commit.set()
            assert may_commit.wait(timeout=60)
            return newest

        monkeypatch.setattr(installation, "last_error_id", last_error_id_then_wait)
        installing = threading.Thread(target=arriving.init)
        installing.start()
        assert about_to_commit.wait(timeout=60)
        done: list[Any] = []
        leaving_thread = threading.Thread(
            target=lambda: done.append(leaving.uninstall(drop_state=True))
        )
        leaving_thread.start()
        waiting_for_a_lock(app)
        may_commit.set()
        installing.join()
        leaving_thread.join()
        assert done[0].other_connectors == ("orders",)
        execute(app, "INSERT INTO orders (id, city, lead) VALUES (1, 'Pune', 'L1')")
        assert captured(app, "orders") == ["1"]


@pytest.mark.parametrize(
    "drift",
    ["DROP TABLE typed", "ALTER TABLE typed RENAME COLUMN city TO town"],
    ids=["table dropped", "column renamed"],
)
def test_uninstall_works_whatever_became_of_the_table(
    customers: tuple[Connector, sa.Engine], drift: str
) -> None:
    sync, app = customers
    execute(app, drift)
    done = sync.uninstall(drop_state=True)
    assert done.tables_dropped
    assert (own_tables(app), functions(app)) == ([], [])
    assert installed_triggers(app) == []


def test_uninstall_finds_the_installed_table_when_the_config_names_another(
    customers: tuple[Connector, sa.Engine], db_url: str, emulator: Emulator
) -> None:
    _, app = customers
    with make_connector(
        db_url, emulator, {"city": "mx_City"}, ORDERS, table="orders", init=False
    ) as other:
        done = other.uninstall()
        assert done.table == qualified(app, "typed")
        assert installed_triggers(app) == []
        other.init()  # the name is free for another table now
        assert installed_triggers(app, "orders") == ["lsq_sync_test_ins", "lsq_sync_test_upd"]


def test_uninstall_finds_its_triggers_on_the_table_renamed_since(
    customers: tuple[Connector, sa.Engine], db_url: str, emulator: Emulator
) -> None:
    """The install record names the table as `init` found it; the triggers went with the
    table. Left behind, they would fail every write once `--drop-state` dropped their table."""
    _, app = customers
    execute(app, "ALTER TABLE typed RENAME TO clients")
    renamed = table_config(db_url, emulator, CITY_AND_PLAN, table="clients")
    with Connector(load(renamed)) as sync:
        done = sync.uninstall(drop_state=True)
    assert done.tables_dropped
    assert (installed_triggers(app, "clients"), functions(app)) == ([], [])
    execute(app, "INSERT INTO clients (id, city, lead) VALUES (1, 'Pune', 'L1')")


def test_postgresql_uninstall_finds_its_triggers_on_the_table_moved_since(
    pg_url: str, emulator: Emulator, pg_engine: sa.Engine
) -> None:
    app = pg_engine
    with make_connector(pg_url, emulator, CITY_AND_PLAN, CUSTOMERS):
        pass
    elsewhere = f"{qualified(app, '')[:-1]}_moved"
    execute(app, f'CREATE SCHEMA "{elsewhere}"', f'ALTER TABLE typed SET SCHEMA "{elsewhere}"')
    try:
        moved = table_config(pg_url, emulator, CITY_AND_PLAN)
        moved["source"]["schema"] = elsewhere
        with Connector(load(moved)) as sync:
            assert sync.uninstall(drop_state=True).tables_dropped
        assert functions(app) == []
        execute(app, f"INSERT INTO \"{elsewhere}\".typed (id, city, lead) VALUES (1, 'Pune', 'L1')")
    finally:
        execute(app, f'DROP SCHEMA "{elsewhere}" CASCADE')


# -- names that could break out of the DDL --------------------------------------------------


def test_hostile_table_and_column_names_stay_names(
    db_url: str, emulator: Emulator, engine: sa.Engine
) -> None:
    # % as well: psycopg reads it as a placeholder in SQL text, never in a bound value.
    table = 'Odd "T".$lsq$ 100%'
    key = 'Key $lsq$ "k" %s'
    quote = engine.dialect.identifier_preparer.quote_identifier
    ddl = (
        f'CREATE TABLE {quote(table)} ({quote(key)} INTEGER PRIMARY KEY, "City\'s" TEXT, lead TEXT)'
    )
    emulator.add_lead("L1")
    with make_connector(db_url, emulator, {"City's": "mx_City"}, ddl, table=table, key=key) as sync:
        execute(engine, f"INSERT INTO {quote(table)} VALUES (1, 'Pune', 'L1')")
        execute(engine, f"UPDATE {quote(table)} SET \"City's\" = 'Goa'")
        assert captured(engine) == ["1", "1"]
        sync.init()  # reads back the table name it stored
        assert run(sync).counts.leads_pushed == 1
        assert installed_triggers(engine, table) == ["lsq_sync_test_ins", "lsq_sync_test_upd"]
        execute(engine, f"ALTER TABLE {quote(table)} RENAME COLUMN lead TO prospect")
        execute(engine, f"UPDATE {quote(table)} SET \"City's\" = 'Agra'")  # drift, on PostgreSQL
        assert captured(engine)[-1] == "1"
        assert sync.uninstall(drop_state=True).tables_dropped
        assert installed_triggers(engine, table) == []
    assert emulator.lead("L1") == {"mx_City": "Goa"}
