"""Change capture: triggers on the source table that record which rows changed.

A change row holds only the row's key (and, on PostgreSQL, its transaction id): ingest reads
the row's current values itself. Keeping the trigger this small is what keeps the
application's writes cheap. Every name from the config goes into the DDL as a quoted
identifier.

The triggers must never fail the application's statement: rows with a NULL key are skipped
(they cannot be read back by key), columns whose equality is not in pg_catalog are compared
by their text, and on PostgreSQL a statement the trigger cannot compare (a captured column
dropped or renamed under it) has every key it wrote recorded and the reason noted in
`lsq_sync_capture_error`, for the next run to report.

On PostgreSQL a statement that recorded a change also sends a NOTIFY on the connector's own
channel (`wake_channel`), which wakes a listening daemon (see connector.wakeup): only a hint,
skipped whenever sending it could fail the application's transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector import catalogue, database
from connector.catalogue import TableRef
from connector.config import Config
from connector.errors import SourceDatabaseError
from connector.schema import capture_error
from connector.schema import change as change_table
from connector.source import SourceTable

# Bump when the trigger design changes, so that `init` must run again after an upgrade.
# 2: NULL keys skipped, text comparison for types without a pg_catalog equality, drift noted
# instead of raised, ENABLE ALWAYS, EXECUTE revoked from PUBLIC.
# 3: no nested loop over the transition tables, keys spelled the same in every session
# (PostgreSQL).
# Not bumped for the wake-up NOTIFY (PostgreSQL): triggers without it capture exactly the
# same rows, and only their daemon's wake-ups are missing (it runs on its interval until
# `init` installs them again). Bumping would stop every upgraded daemon until `init`.
CAPTURE_VERSION = 3


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


def wake_channel(own_schema: str, connector_name: str) -> str:
    """The NOTIFY channel of a connector whose tables are in `own_schema` (unquoted).

    Derived, not spelled out: a channel is at most 63 bytes, and LISTEN takes an identifier,
    while schema names may be long and hold any character. Both halves go in, so connectors
    of one name in two schemas of a database do not wake each other.
    """
    digest = hashlib.sha256(f"{own_schema}\0{connector_name}".encode()).hexdigest()
    return f"lsq_sync_wake_{digest[:32]}"


class Names:
    """The triggers and functions of one connector, derived from its name alone, so they can
    be found and removed when the config no longer matches the table."""

    def __init__(self, connector_name: str) -> None:
        base = f"lsq_sync_{connector_name}"
        self.insert_trigger = f"{base}_ins"
        self.update_trigger = f"{base}_upd"
        self.insert_function = f"{base}_capture_ins"
        self.update_function = f"{base}_capture_upd"

    @property
    def triggers(self) -> tuple[str, str]:
        return self.insert_trigger, self.update_trigger

    @property
    def functions(self) -> tuple[str, str]:
        return self.insert_function, self.update_function


def install(
    connection: Connection, connector_name: str, source: SourceTable, table: TableRef
) -> None:
    """Create or replace the capture triggers; safe to run again, e.g. after a mapping change."""
    if connection.dialect.name == "postgresql":
        statements = _postgresql(connection, connector_name, source, table)
    else:
        statements = _sqlite(connection, connector_name, source, table)
    with _giving_way(connection, table, "init"):
        for statement in statements:
            connection.exec_driver_sql(statement)


# How long `init` and `uninstall` wait for the source table's lock (PostgreSQL). Every
# statement of the application, reads included, queues behind DDL waiting for its lock: a
# report running for an hour would stop the application for an hour.
LOCK_WAIT = "2s"
_LOCK_NOT_AVAILABLE = "55P03"


@contextmanager
def _giving_way(connection: Connection, table: TableRef, command: str) -> Iterator[None]:
    """Run DDL on `table` that gives up, rather than wait long for its lock."""
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise SourceDatabaseError(
            f"table `{table}` is in use by another transaction: `lsq-sync {command}` waited "
            f"{LOCK_WAIT} for its lock, then gave up rather than hold up the application's "
            f"statements queued behind it. Run `lsq-sync {command}` again when that "
            "transaction ends"
        ) from exc
    connection.exec_driver_sql("SET LOCAL lock_timeout TO DEFAULT")


def remove(connection: Connection, connector_name: str, table: TableRef) -> list[str]:
    """Drop this connector's triggers and, on PostgreSQL, its functions from the schema of
    `table` (where `init` created them); works whether the table still exists, or was renamed
    or moved to another schema since. Returns what it dropped."""
    names = Names(connector_name)
    if connection.dialect.name != "postgresql":
        return _remove_sqlite(connection, names, table)
    quote = connection.dialect.identifier_preparer.quote_identifier
    present = catalogue.triggers(connection, table)
    placed = {(name, table) for name in names.triggers if name in present}
    # A trigger goes with its table when the table is renamed or moved, while its function
    # stays in the schema `init` created it in: found by the function it calls.
    placed |= set(catalogue.triggers_calling(connection, table.schema, names.functions))
    for trigger, on_table in sorted(placed, key=str):
        with _giving_way(connection, on_table, "uninstall"):
            connection.exec_driver_sql(
                f"DROP TRIGGER {quote(trigger)} ON {on_table.quoted(connection)}"
            )
    functions = catalogue.existing_functions(connection, table.schema, names.functions)
    for function in functions:
        connection.exec_driver_sql(f"DROP FUNCTION {quote(table.schema)}.{quote(function)}()")
    return [f"trigger {name}" for name, _ in sorted(placed, key=str)] + [
        f"function {function}" for function in functions
    ]


def _remove_sqlite(connection: Connection, names: Names, table: TableRef) -> list[str]:
    quote = connection.dialect.identifier_preparer.quote_identifier
    # Trigger names are unique in a SQLite database, and follow a renamed table.
    present = catalogue.triggers_named(connection, table.schema, names.triggers)
    for trigger in present:
        connection.exec_driver_sql(f"DROP TRIGGER {quote(table.schema)}.{quote(trigger)}")
    return [f"trigger {name}" for name in present]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _postgresql(
    connection: Connection, connector_name: str, source: SourceTable, table: TableRef
) -> list[str]:
    """Statement-level triggers over transition tables.

    One trigger call per statement instead of per row, and the change rows come from a
    single INSERT ... SELECT, which is what makes a 200k-row UPDATE affordable.
    """
    quote = connection.dialect.identifier_preparer.quote_identifier
    names = Names(connector_name)
    key_name = source.key_column.name
    # Qualified, because the application's sessions may run with another search_path.
    own_schema_name: str = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
    own_schema = quote(own_schema_name)
    kinds = catalogue.column_kinds(connection, table, [key_name, *source.capture_columns])
    compare = _Comparison(connection, kinds)
    wake = _wake(wake_channel(own_schema_name, connector_name))
    functions = {
        names.insert_function: _insert_body(own_schema, connector_name, compare, key_name, wake),
        names.update_function: _update_body(
            own_schema, connector_name, compare, key_name, source.capture_columns, wake=wake
        ),
    }
    schema = quote(table.schema)
    on_table = table.quoted(connection)
    key_spelling = " ".join(
        f"SET {name} = {_literal(value)}" for name, value in database.KEY_SPELLING.items()
    )
    statements: list[str] = []
    for function, body in functions.items():
        # SECURITY DEFINER: the application's role may write the source table without any
        # right on the connector's tables; a pinned search_path makes that safe.
        statements += [
            f"CREATE OR REPLACE FUNCTION {schema}.{quote(function)}() RETURNS trigger "
            f"LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
            # Transition tables have no statistics: the planner would JIT-compile the join
            # for every large statement, which costs more than the join itself.
            f"SET jit = off "
            # PL/pgSQL plans the join once per session, sized for the transition tables of
            # that first statement: after a one-row UPDATE, a nested loop, which makes a
            # later 200k-row UPDATE in the same session take minutes instead of a second.
            # A hash or merge join costs next to nothing more for one row.
            f"SET enable_nestloop = off "
            # Keys are recorded as text and read back by the connector's own session: one
            # spelling, whatever the application's session prints dates, zones or floats in.
            f"{key_spelling} "
            f"AS {_dollar_quoted(body)}",
            # Functions are executable by PUBLIC by default: any role able to create a table
            # could attach this one and write, as its owner, into the change table.
            f"REVOKE ALL ON FUNCTION {schema}.{quote(function)}() FROM PUBLIC",
        ]
    triggers = (
        (names.insert_trigger, "INSERT", "NEW TABLE AS new_rows", names.insert_function),
        (
            names.update_trigger,
            "UPDATE",
            "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            names.update_function,
        ),
    )
    for trigger, event, transitions, function in triggers:
        statements += [
            f"DROP TRIGGER IF EXISTS {quote(trigger)} ON {on_table}",
            f"CREATE TRIGGER {quote(trigger)} AFTER {event} ON {on_table} "
            f"REFERENCING {transitions} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {schema}.{quote(function)}()",
            # Rows loaded with session_replication_role = replica are changes too: a row
            # captured once too often costs no call (the diff finds nothing to send), a row
            # never captured is never synced. (A logical replication apply worker fires no
            # statement-level trigger, ALWAYS or not: see the README.)
            f"ALTER TABLE {on_table} ENABLE ALWAYS TRIGGER {quote(trigger)}",
        ]
    return statements


def _dollar_quoted(body: str) -> str:
    """The body as a dollar-quoted string whose tag no quoted column name can contain."""
    tag, number = "$lsq$", 0
    while tag in body:
        number += 1
        tag = f"$lsq{number}$"
    return f"{tag} {body} {tag}"


class _Comparison:
    """`o.c IS DISTINCT FROM n.c` for a column, natively or by text (see catalogue).

    Under a nondeterministic collation 'pune' equals 'Pune', so text is compared bytewise
    (`COLLATE "C"`), or a change of case would go uncaptured; every text, since a migration
    may give a column such a collation after `init`. Under any other collation bytewise is
    what equality means anyway. (A column retyped to, say, integer makes COLLATE fail to parse,
    as the probe's pin does.)
    """

    def __init__(self, connection: Connection, kinds: dict[str, catalogue.ColumnKind]) -> None:
        self.quote = connection.dialect.identifier_preparer.quote_identifier
        # psycopg reads a % in SQL text as a placeholder: quote() doubles it in names, and
        # literal() must in strings.
        self._percent = "%%" if connection.dialect.paramstyle in ("format", "pyformat") else "%"
        self.kinds = kinds

    def literal(self, text: str) -> str:
        return _literal(text).replace("%", self._percent)

    def _side(self, alias: str, column: str) -> str:
        kind = self.kinds[column]
        reference = f"{alias}.{self.quote(column)}"
        if not kind.native:
            reference += "::text"
        elif not kind.collatable:
            return reference
        return f'{reference} COLLATE pg_catalog."C"'

    def differs(self, column: str) -> str:
        return f"{self._side('o', column)} IS DISTINCT FROM {self._side('n', column)}"

    def same(self, column: str) -> str:
        return f"{self._side('o', column)} = {self._side('n', column)}"

    def pinned(self, column: str) -> str | None:
        """For the probe: parses only while a natively compared column still compares with
        the type `init` found. Retyped to an array or a composite, its `=` would look up its
        elements' equality at run time, out of the probe's reach (json, xml and point have
        none); retyped to, say, circle, its `=` would compare areas, not values."""
        native_type = self.kinds[column].native_type
        if native_type is None:
            return None
        return f'n.{self.quote(column)} = NULL::pg_catalog."{native_type}"'


_TX_ID = "pg_current_xact_id()::text::bigint"


def _note_error_and_record_every_key(own_schema: str, connector_name: str, key: str) -> str:
    """The handler's writes, after the probe failed: note why, and record every key the
    statement wrote through `to_jsonb(n.*)`, which parses whatever became of the columns.
    `key` is the key column's name as a literal."""
    name = _literal(connector_name)
    errors = f"{own_schema}.{capture_error.name}"
    changes = f"{own_schema}.{change_table.name}"
    return (
        f"INSERT INTO {errors} (connector, noted_at, message, keys_lost) "
        f"VALUES ({name}, now() AT TIME ZONE 'UTC', capture_problem, NOT EXISTS ("
        f"SELECT FROM pg_attribute WHERE attrelid = TG_RELID AND attname = {key} "
        f"AND attnum > 0 AND NOT attisdropped)); "
        f"INSERT INTO {changes} (connector, row_key, tx_id) "
        # `n.*`, not `n`: a column named n would stand for the row.
        f"SELECT {name}, to_jsonb(n.*) ->> {key}, {_TX_ID} FROM new_rows n "
        f"WHERE to_jsonb(n.*) ->> {key} IS NOT NULL;"
    )


def _wake(channel: str) -> str:
    """Tell the listening daemon, once the statement recorded some change, that there is work.

    Skipped rather than risk the application's transaction: NOTIFY fails the commit when the
    server's notification queue is full (a listener stuck for a long time holds it), and a
    transaction that sent one cannot be prepared for two-phase commit, so none is sent on a
    server that allows prepared transactions. The daemon then wakes on its interval. A
    transaction's identical notifications are sent once, at its commit.
    """
    return (
        "IF recorded > 0 AND pg_catalog.pg_notification_queue_usage() < 0.5 "
        "AND pg_catalog.current_setting('max_prepared_transactions') = '0' THEN "
        f"PERFORM pg_catalog.pg_notify({_literal(channel)}, ''); END IF;"
    )


def _guarded(own_schema: str, probe: str, record: str, fallback: str, wake: str) -> str:
    """A function body that runs `record` when `probe` parses, and `fallback` when not.

    The probe references every column and operator `record` uses but reads no row. The
    application's statement holds its lock on the table until it commits, so no column can
    change between the probe and `record`. Only the probe is inside the exception block: a
    block that writes takes a subtransaction id, and more than 64 of those in one application
    transaction overflow the subtransaction cache, which slows every snapshot on the server.

    The probe opens the change table too. With the connector's tables gone (their schema
    dropped, or left out of a restore of the application's) there is nowhere to record or
    note anything: the statement goes on uncaptured rather than fail, and runs ask for `init`.
    """
    changes = f"{own_schema}.{change_table.name}"
    errors = f"{own_schema}.{capture_error.name}"
    # Plain literals: own_schema is quoted for SQL text already.
    can_note = " AND ".join(
        f"pg_catalog.to_regclass({_literal(table)}) IS NOT NULL" for table in (changes, errors)
    )
    return (
        "DECLARE capture_problem text; recorded bigint := 0; BEGIN "
        f"BEGIN PERFORM FROM {changes} LIMIT 0; {probe} LIMIT 0; "
        "EXCEPTION WHEN OTHERS THEN capture_problem := SQLERRM; END; "
        f"IF capture_problem IS NULL THEN {record}; GET DIAGNOSTICS recorded = ROW_COUNT; "
        f"ELSIF {can_note} THEN {fallback} GET DIAGNOSTICS recorded = ROW_COUNT; END IF; "
        f"{wake} RETURN NULL; END"
    )


def _insert_body(
    own_schema: str, connector_name: str, compare: _Comparison, key_name: str, wake: str
) -> str:
    key = compare.quote(key_name)
    rows = f"FROM new_rows n WHERE n.{key} IS NOT NULL"
    record = (
        f"INSERT INTO {own_schema}.{change_table.name} (connector, row_key, tx_id) "
        f"SELECT {_literal(connector_name)}, n.{key}::text, {_TX_ID} {rows}"
    )
    return _guarded(
        own_schema,
        f"PERFORM {rows}",
        record,
        _note_error_and_record_every_key(own_schema, connector_name, compare.literal(key_name)),
        wake,
    )


def _update_body(
    own_schema: str,
    connector_name: str,
    compare: _Comparison,
    key_name: str,
    columns: Sequence[str],
    *,
    wake: str,
) -> str:
    key = compare.quote(key_name)
    changed = " OR ".join(compare.differs(column) for column in columns)
    # A row whose key changed has no old row to compare with: always record it.
    rows = (
        f"FROM new_rows n LEFT JOIN old_rows o ON {compare.same(key_name)} "
        f"WHERE n.{key} IS NOT NULL AND (o.{key} IS NULL OR {changed})"
    )
    record = (
        f"INSERT INTO {own_schema}.{change_table.name} (connector, row_key, tx_id) "
        f"SELECT {_literal(connector_name)}, n.{key}::text, {_TX_ID} {rows}"
    )
    pins = [pin for column in [key_name, *columns] if (pin := compare.pinned(column))]
    return _guarded(
        own_schema,
        " AND ".join([f"PERFORM {rows}", *pins]),
        record,
        _note_error_and_record_every_key(own_schema, connector_name, compare.literal(key_name)),
        wake,
    )


def _sqlite(
    connection: Connection, connector_name: str, source: SourceTable, table: TableRef
) -> list[str]:
    """Row triggers that fire only when a captured column really changed (`IS NOT`)."""
    quote = connection.dialect.identifier_preparer.quote_identifier
    names = Names(connector_name)
    schema = quote(table.schema)
    changes = quote(change_table.name)
    key = quote(source.key_column.name)
    columns: Sequence[str] = source.capture_columns
    watched = f"OF {', '.join(quote(c) for c in [*columns, source.key_column.name])} "
    # A generated column changes when a column it is made of is set, while `UPDATE OF` fires
    # only for the columns a statement sets: with one of those captured, watch every UPDATE.
    if catalogue.generated_columns(connection, table) & {*columns, source.key_column.name}:
        watched = ""
    # BINARY: under a column's NOCASE or RTRIM collation, 'pune' IS NOT 'Pune' is false.
    changed = " OR ".join(
        f"OLD.{quote(c)} IS NOT NEW.{quote(c)} COLLATE BINARY"
        for c in [*columns, source.key_column.name]
    )
    record = (
        f"INSERT INTO {changes} (connector, row_key, tx_id) "
        f"VALUES ({_literal(connector_name)}, CAST(NEW.{key} AS TEXT), 0)"
    )
    # A NULL key (a nullable TEXT PRIMARY KEY allows it) cannot be read back by key, and
    # recording it would fail the application's statement on the NOT NULL row_key.
    return [
        f"DROP TRIGGER IF EXISTS {schema}.{quote(names.insert_trigger)}",
        f"DROP TRIGGER IF EXISTS {schema}.{quote(names.update_trigger)}",
        f"CREATE TRIGGER {schema}.{quote(names.insert_trigger)} AFTER INSERT ON "
        f"{quote(table.name)} FOR EACH ROW WHEN NEW.{key} IS NOT NULL BEGIN {record}; END",
        f"CREATE TRIGGER {schema}.{quote(names.update_trigger)} AFTER UPDATE {watched}ON "
        f"{quote(table.name)} FOR EACH ROW WHEN NEW.{key} IS NOT NULL AND ({changed}) "
        f"BEGIN {record}; END",
    ]


def record_all_rows(connection: Connection, connector_name: str, source: SourceTable) -> int:
    """Record every existing row as changed, so rows written before capture get synced too.

    Rows already pushed with the same values cost no call: the diff finds nothing to send.
    Rows with a NULL key are left out, as the triggers leave them out.
    """
    database.spell_keys_as_capture_does(connection)
    tx_id = (
        sa.literal_column("pg_current_xact_id()::text::bigint")
        if connection.dialect.name == "postgresql"
        else sa.literal(0)
    )
    rows = sa.select(sa.literal(connector_name), sa.cast(source.key_column, sa.Text), tx_id).where(
        source.key_column.is_not(None)
    )
    connection.execute(change_table.insert().from_select(["connector", "row_key", "tx_id"], rows))
    # rowcount of INSERT ... SELECT is not reported by every driver.
    count: int = connection.execute(
        sa.select(sa.func.count()).select_from(source.table).where(source.key_column.is_not(None))
    ).scalar_one()
    return count
