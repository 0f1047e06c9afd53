"""Change capture: triggers on the source table that record which rows changed.

A change row holds only the row's key (and, on PostgreSQL, its transaction id): ingest reads
the row's current values itself. Keeping the trigger this small is what keeps the
application's writes cheap. Every name from the config goes into the DDL as a quoted
identifier.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.config import Config
from connector.schema import change as change_table
from connector.source import SourceTable

# Bump when the trigger design changes, so that `init` must run again after an upgrade.
CAPTURE_VERSION = 1


def signature(config: Config) -> str:
    """Identifies the triggers a config needs; stored by `init`, checked by every run."""
    needs = {
        "version": CAPTURE_VERSION,
        "schema": config.source.schema_,
        "table": config.source.table,
        "key": config.source.key,
        "columns": sorted([*config.mapping, config.lead_id.column]),
    }
    return hashlib.sha256(json.dumps(needs, sort_keys=True).encode()).hexdigest()


def install(connection: Connection, connector_name: str, source: SourceTable) -> None:
    """Create or replace the capture triggers; safe to run again, e.g. after a mapping change."""
    if connection.dialect.name == "postgresql":
        statements = _postgresql(connection, connector_name, source)
    else:
        statements = _sqlite(connection, connector_name, source)
    for statement in statements:
        connection.exec_driver_sql(statement)


def remove(connection: Connection, connector_name: str, source: SourceTable) -> None:
    quote = connection.dialect.identifier_preparer.quote_identifier
    table = _qualified(connection, source)
    names = _Names(connector_name)
    if connection.dialect.name == "postgresql":
        schema = _schema_prefix(connection, source)
        for trigger in (names.insert_trigger, names.update_trigger):
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(trigger)} ON {table}")
        for function in (names.insert_function, names.update_function):
            connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {schema}{quote(function)}()")
    else:
        for trigger in (names.insert_trigger, names.update_trigger):
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(trigger)}")


class _Names:
    def __init__(self, connector_name: str) -> None:
        base = f"lsq_sync_{connector_name}"
        self.insert_trigger = f"{base}_ins"
        self.update_trigger = f"{base}_upd"
        self.insert_function = f"{base}_capture_ins"
        self.update_function = f"{base}_capture_upd"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _qualified(connection: Connection, source: SourceTable) -> str:
    quote = connection.dialect.identifier_preparer.quote_identifier
    return _schema_prefix(connection, source) + quote(source.table.name)


def _schema_prefix(connection: Connection, source: SourceTable) -> str:
    quote = connection.dialect.identifier_preparer.quote_identifier
    return f"{quote(source.table.schema)}." if source.table.schema else ""


def _postgresql(connection: Connection, connector_name: str, source: SourceTable) -> list[str]:
    """Statement-level triggers over transition tables.

    One trigger call per statement instead of per row, and the change rows come from a
    single INSERT ... SELECT, which is what makes a 200k-row UPDATE affordable.
    """
    quote = connection.dialect.identifier_preparer.quote_identifier
    names = _Names(connector_name)
    table = _qualified(connection, source)
    schema = _schema_prefix(connection, source)
    # Qualified, because the application's sessions may run with another search_path.
    own_schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
    changes = f"{quote(own_schema)}.{quote(change_table.name)}"
    key = quote(source.key_column.name)
    name = _literal(connector_name)
    changed = " OR ".join(
        f"o.{quote(c)} IS DISTINCT FROM n.{quote(c)}" for c in source.capture_columns
    )
    # A row whose key changed has no old row to compare with: always record it.
    insert_body = (
        f"INSERT INTO {changes} (connector, row_key, tx_id) "
        f"SELECT {name}, n.{key}::text, pg_current_xact_id()::text::bigint FROM new_rows n"
    )
    update_body = (
        f"INSERT INTO {changes} (connector, row_key, tx_id) "
        f"SELECT {name}, n.{key}::text, pg_current_xact_id()::text::bigint "
        f"FROM new_rows n LEFT JOIN old_rows o ON o.{key} = n.{key} "
        f"WHERE o.{key} IS NULL OR {changed}"
    )
    statements: list[str] = []
    for function, body in (
        (names.insert_function, insert_body),
        (names.update_function, update_body),
    ):
        # SECURITY DEFINER: the application's role may write the source table without any
        # right on the connector's tables; a pinned search_path makes that safe.
        statements.append(
            f"CREATE OR REPLACE FUNCTION {schema}{quote(function)}() RETURNS trigger "
            f"LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
            # Transition tables have no statistics: the planner would JIT-compile the join
            # for every large statement, which costs more than the join itself.
            f"SET jit = off "
            f"AS $lsq$ BEGIN {body}; RETURN NULL; END $lsq$"
        )
    statements += [
        f"DROP TRIGGER IF EXISTS {quote(names.insert_trigger)} ON {table}",
        f"DROP TRIGGER IF EXISTS {quote(names.update_trigger)} ON {table}",
        f"CREATE TRIGGER {quote(names.insert_trigger)} AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {schema}{quote(names.insert_function)}()",
        f"CREATE TRIGGER {quote(names.update_trigger)} AFTER UPDATE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {schema}{quote(names.update_function)}()",
    ]
    return statements


def _sqlite(connection: Connection, connector_name: str, source: SourceTable) -> list[str]:
    """Row triggers that fire only when a captured column really changed (`IS NOT`)."""
    quote = connection.dialect.identifier_preparer.quote_identifier
    names = _Names(connector_name)
    table = _qualified(connection, source)
    changes = quote(change_table.name)
    key = quote(source.key_column.name)
    columns: Sequence[str] = source.capture_columns
    watched = ", ".join(quote(c) for c in [*columns, source.key_column.name])
    changed = " OR ".join(
        f"OLD.{quote(c)} IS NOT NEW.{quote(c)}" for c in [*columns, source.key_column.name]
    )
    record = (
        f"INSERT INTO {changes} (connector, row_key, tx_id) "
        f"VALUES ({_literal(connector_name)}, CAST(NEW.{key} AS TEXT), 0)"
    )
    return [
        f"DROP TRIGGER IF EXISTS {quote(names.insert_trigger)}",
        f"DROP TRIGGER IF EXISTS {quote(names.update_trigger)}",
        f"CREATE TRIGGER {quote(names.insert_trigger)} AFTER INSERT ON {table} "
        f"FOR EACH ROW BEGIN {record}; END",
        f"CREATE TRIGGER {quote(names.update_trigger)} AFTER UPDATE OF {watched} ON {table} "
        f"FOR EACH ROW WHEN {changed} BEGIN {record}; END",
    ]


def record_all_rows(connection: Connection, connector_name: str, source: SourceTable) -> int:
    """Record every existing row as changed, so rows written before capture get synced too.

    Rows already pushed with the same values cost no call: the diff finds nothing to send.
    """
    tx_id = (
        sa.literal_column("pg_current_xact_id()::text::bigint")
        if connection.dialect.name == "postgresql"
        else sa.literal(0)
    )
    rows = sa.select(sa.literal(connector_name), sa.cast(source.key_column, sa.Text), tx_id)
    connection.execute(change_table.insert().from_select(["connector", "row_key", "tx_id"], rows))
    # rowcount of INSERT ... SELECT is not reported by every driver.
    count: int = connection.execute(
        sa.select(sa.func.count()).select_from(source.table)
    ).scalar_one()
    return count
