"""The Alembic migrations: upgrade from empty, downgrade, and agreement with connector.schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector import migrate
from connector.schema import PREFIX, VERSION_TABLE, metadata

OWN_TABLES = {table.name for table in metadata.sorted_tables}


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def create_application_table(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE app_orders (id INTEGER PRIMARY KEY, total TEXT)")
        connection.exec_driver_sql("INSERT INTO app_orders (id, total) VALUES (1, '9.99')")


def application_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.exec_driver_sql("SELECT * FROM app_orders")]


def schema_differences(engine: sa.Engine) -> list[Any]:
    def own(name: str | None, type_: str, parent: Any) -> bool:
        return type_ != "table" or (name or "").startswith(PREFIX)

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                # SQLite reflects no identities and renders false as 0: only noise there.
                "compare_server_default": engine.dialect.name == "postgresql",
                "include_name": own,
            },
        )
        differences: list[Any] = compare_metadata(context, metadata)
    return differences


def test_own_tables_all_carry_the_prefix() -> None:
    assert {
        f"{PREFIX}{name}"
        for name in (
            "account",
            "call",
            "capture",
            "capture_error",
            "change",
            "cursor",
            "lead",
            "lease",
            "row_problem",
            "run",
            "match",
            "field_list",
        )
    } == OWN_TABLES


def test_upgrade_from_empty_creates_the_tables(engine: sa.Engine) -> None:
    assert migrate.current_revision(engine) is None
    assert migrate.head_revision() is not None
    migrate.upgrade(engine)
    assert OWN_TABLES | {VERSION_TABLE} <= table_names(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_upgrade_twice_is_a_no_op(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_downgrade_removes_only_the_connector_tables(engine: sa.Engine) -> None:
    create_application_table(engine)
    migrate.upgrade(engine)
    migrate.downgrade(engine)
    remaining = table_names(engine)
    assert not OWN_TABLES & remaining
    assert "app_orders" in remaining
    assert application_rows(engine) == [(1, "9.99")]
    assert migrate.current_revision(engine) is None


def test_upgrade_after_downgrade_works(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    migrate.downgrade(engine)
    migrate.upgrade(engine)
    assert table_names(engine) >= OWN_TABLES
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert schema_differences(engine) == []


def test_upgrade_leaves_the_application_table_alone(engine: sa.Engine) -> None:
    create_application_table(engine)
    migrate.upgrade(engine)
    assert application_rows(engine) == [(1, "9.99")]
    # The application table is not the connector's business: no difference is reported for it.
    assert schema_differences(engine) == []


def test_upgrade_from_0001_keeps_lead_state_and_adds_set_aside(engine: sa.Engine) -> None:
    migrate.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"INSERT INTO {PREFIX}lead (connector, lead_id, source_key, desired, pushed, pending, "
            "updated_at) VALUES ('c', 'L1', '1', '{\"Phone\":\"1\"}', '{}', true, "
            "'2026-11-29 00:00:00')"
        )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        row = connection.exec_driver_sql(
            f"SELECT lead_id, desired, set_aside FROM {PREFIX}lead"
        ).one()
    assert tuple(row) == ("L1", '{"Phone":"1"}', "{}")
    migrate.downgrade(engine, "0001")
    assert "set_aside" not in {c["name"] for c in sa.inspect(engine).get_columns(f"{PREFIX}lead")}
    assert {f"{PREFIX}account", f"{PREFIX}call"}.isdisjoint(table_names(engine))


def test_models_match_the_migrations(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    assert schema_differences(engine) == []


def test_comparison_sees_a_drifted_model(engine: sa.Engine) -> None:
    """The check above can fail: a model the migrations do not create is reported."""
    migrate.upgrade(engine)
    drifted = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    sa.Table(f"{PREFIX}extra", drifted, sa.Column("id", sa.Integer, primary_key=True))
    drifted.tables[f"{PREFIX}run"].append_column(sa.Column("new_column", sa.Text()))
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": lambda name, type_, parent: (
                    type_ != "table" or (name or "").startswith(PREFIX)
                ),
                "version_table": VERSION_TABLE,
            },
        )
        differences = compare_metadata(context, drifted)
    kinds = {(diff[0], getattr(diff[-1], "name", None)) for diff in differences}
    assert ("add_table", f"{PREFIX}extra") in kinds
    assert ("add_column", "new_column") in kinds


def test_change_ids_are_never_reused_on_sqlite(tmp_path: Path) -> None:
    """AUTOINCREMENT (not rowid reuse) is what the SQLite cursor relies on."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ids.db'}")
    migrate.upgrade(engine)
    table = metadata.tables[f"{PREFIX}change"]
    with engine.begin() as connection:
        first = connection.execute(
            table.insert().values(connector="c", row_key="1").returning(table.c.change_id)
        ).scalar_one()
        connection.execute(table.delete())
        second = connection.execute(
            table.insert().values(connector="c", row_key="2").returning(table.c.change_id)
        ).scalar_one()
    engine.dispose()
    assert second > first


def change_table_keys(engine: sa.Engine) -> tuple[list[str], list[list[str | None]]]:
    inspector = sa.inspect(engine)
    primary = inspector.get_pk_constraint(f"{PREFIX}change")["constrained_columns"]
    return primary, [index["column_names"] for index in inspector.get_indexes(f"{PREFIX}change")]


def lead_options(engine: sa.Engine) -> list[str] | None:
    with engine.connect() as connection:
        options: list[str] | None = connection.execute(
            sa.text("SELECT reloptions FROM pg_class WHERE oid = CAST(:table AS regclass)"),
            {"table": f"{PREFIX}lead"},
        ).scalar_one()
    return options


def test_0003_indexes_changes_once_in_read_order_and_keeps_them(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    migrate.upgrade(engine, "0002")
    assert change_table_keys(engine) == (["change_id"], [["connector", "tx_id", "change_id"]])
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"INSERT INTO {PREFIX}change (connector, row_key, tx_id) VALUES ('c', '1', 7)"
        )

    migrate.upgrade(engine)
    assert change_table_keys(engine) == (["connector", "tx_id", "change_id"], [])
    assert lead_options(engine) == ["fillfactor=70"]
    with engine.connect() as connection:
        kept = connection.exec_driver_sql(f"SELECT connector, row_key, tx_id FROM {PREFIX}change")
        assert [tuple(row) for row in kept] == [("c", "1", 7)]

    migrate.downgrade(engine, "0002")
    assert change_table_keys(engine) == (["change_id"], [["connector", "tx_id", "change_id"]])
    assert lead_options(engine) is None
    engine.dispose()


def test_the_learned_pacing_columns_come_and_go_with_0006(engine: sa.Engine) -> None:
    """0006 adds what pacing learns to each account's row, and takes it away again, keeping
    the rows and what they held before."""
    migrate.upgrade(engine, "0005")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"INSERT INTO {PREFIX}account (account, budget_day, budget_used) "
            "VALUES ('a1', '2026-12-01', 7)"
        )

    def columns() -> set[str]:
        return {column["name"] for column in sa.inspect(engine).get_columns(f"{PREFIX}account")}

    def rows() -> list[tuple[Any, ...]]:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.exec_driver_sql(
                    f"SELECT account, budget_day, budget_used FROM {PREFIX}account"
                )
            ]

    learned = {"slow_calls", "slow_since", "margin_seconds"}
    assert not learned & columns()
    migrate.upgrade(engine, "0006")
    assert learned <= columns()
    assert rows() == [("a1", "2026-12-01", 7)]
    with engine.connect() as connection:
        kept = connection.exec_driver_sql(
            f"SELECT slow_calls, slow_since, margin_seconds FROM {PREFIX}account"
        ).one()
    assert tuple(kept) == (None, None, None)
    migrate.downgrade(engine, "0005")
    assert not learned & columns()
    assert rows() == [("a1", "2026-12-01", 7)]
    assert migrate.current_revision(engine) == "0005"


def test_0007_gives_every_older_lead_its_place_in_the_queue(engine: sa.Engine) -> None:
    """A lead waiting before 0007 waits since it was last written: with none, it would lose its
    place the next time it changed, and the queue's index could not order it."""
    migrate.upgrade(engine, "0006")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"INSERT INTO {PREFIX}lead (connector, lead_id, source_key, desired, pushed, pending, "
            "updated_at) VALUES ('c', 'L1', '1', '{\"Phone\":\"1\"}', '{}', true, "
            "'2026-11-29 00:00:00')"
        )
    migrate.upgrade(engine, "0007")
    with engine.connect() as connection:
        since = connection.exec_driver_sql(f"SELECT pending_since FROM {PREFIX}lead").scalar_one()
    assert str(since).startswith("2026-11-29 00:00:00")
    assert schema_differences(engine) == []
    migrate.downgrade(engine, "0006")
    assert "pending_since" not in {
        c["name"] for c in sa.inspect(engine).get_columns(f"{PREFIX}lead")
    }
