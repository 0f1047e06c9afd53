"""Removing a connector: its triggers and functions, and on request its sync state.

Works from the connector's name and its install record alone, so it still works when the
config's columns, or the whole source table, no longer exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector import capture, catalogue, installation
from connector.catalogue import TableRef
from connector.config import Config
from connector.schema import PREFIX, VERSION_TABLE, capture_state, metadata


@dataclass(frozen=True)
class Uninstalled:
    table: str  # the table capture was removed from
    removed: list[str]  # "trigger x", "function y": what was there and is gone
    rows_deleted: int = 0  # with drop_state: this connector's rows, every table
    tables_dropped: bool = False
    other_connectors: tuple[str, ...] = ()  # with drop_state: why the tables were kept


def uninstall(connection: Connection, config: Config, *, drop_state: bool) -> Uninstalled:
    """Remove this connector's capture; with `drop_state`, also delete its rows from every
    `lsq_sync_*` table, and drop those tables when no other connector has rows in them."""
    own_tables = _own_tables(connection)
    install = (
        installation.load(connection, config.name) if capture_state.name in own_tables else None
    )
    table = _installed_table(connection, config, install)
    removed = capture.remove(connection, config.name, table)
    if not drop_state:
        if install is not None:
            connection.execute(
                sa.update(capture_state)
                .where(capture_state.c.connector == config.name)
                .values(signature=installation.UNINSTALLED)
            )
        return Uninstalled(str(table), removed)
    _hold_off_installs(connection, own_tables)
    deleted = _delete_rows(connection, config.name, own_tables)
    others = _other_connectors(connection, config.name, own_tables)
    if not others:
        metadata.drop_all(connection, checkfirst=True)
        connection.exec_driver_sql(
            f"DROP TABLE IF EXISTS {connection.dialect.identifier_preparer.quote(VERSION_TABLE)}"
        )
    return Uninstalled(str(table), removed, deleted, not others, others)


def _installed_table(
    connection: Connection, config: Config, install: installation.Install | None
) -> TableRef:
    """Where the triggers are: the recorded table, else the config's, else (the table is gone)
    the schema they were created in, for the functions that outlive it."""
    if install is not None and install.table is not None:
        return install.table
    source = config.source
    found = catalogue.resolve(connection, source.schema_, source.table)
    if found is not None:
        return found
    if source.schema_:
        return TableRef(source.schema_, source.table)
    if connection.dialect.name == "postgresql":
        current = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
        return TableRef(current, source.table)
    return TableRef("main", source.table)


def _hold_off_installs(connection: Connection, own_tables: set[str]) -> None:
    """Make another connector's `init` that is recording its install (PostgreSQL) either
    finish first, so that its rows are seen and the tables kept, or fail once they are gone.
    Unseen, it would commit triggers that write into tables dropped under them."""
    if connection.dialect.name == "postgresql" and capture_state.name in own_tables:
        quote = connection.dialect.identifier_preparer.quote
        connection.exec_driver_sql(
            f"LOCK TABLE {quote(capture_state.name)} IN SHARE ROW EXCLUSIVE MODE"
        )


def _own_tables(connection: Connection) -> set[str]:
    return {name for name in sa.inspect(connection).get_table_names() if name.startswith(PREFIX)}


def _connector_tables(own_tables: set[str]) -> list[sa.Table]:
    """The existing tables holding rows per connector (not the ones shared per account)."""
    return [
        table
        for table in metadata.sorted_tables
        if table.name in own_tables and "connector" in table.c
    ]


def _delete_rows(connection: Connection, connector_name: str, own_tables: set[str]) -> int:
    deleted = 0
    for table in _connector_tables(own_tables):
        result = connection.execute(sa.delete(table).where(table.c.connector == connector_name))
        deleted += result.rowcount
    return deleted


def _other_connectors(
    connection: Connection, connector_name: str, own_tables: set[str]
) -> tuple[str, ...]:
    names: set[str] = set()
    for table in _connector_tables(own_tables):
        names.update(
            connection.execute(
                sa.select(table.c.connector).distinct().where(table.c.connector != connector_name)
            ).scalars()
        )
    return tuple(sorted(names))
