"""What the database's own catalogue says about the source table.

Its real schema-qualified name, its columns, how each column can be compared inside a trigger,
whether the key is unique, and which triggers sit on it. Read-only, cheap, and usable when the
config no longer matches the table (which is when it matters most).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Types whose equality lives in pg_catalog and means "same value": the capture triggers, which
# run with search_path = pg_catalog, compare these natively. Every other type (json, xml,
# point, extension types such as hstore and citext, enums, arrays, composites) is compared
# by its text, which parses for any type and never calls a run-time equality lookup.
_NATIVE_EQUALITY = frozenset(
    {
        "bool",
        "int2",
        "int4",
        "int8",
        "numeric",
        "float4",
        "float8",
        "money",
        "oid",
        "text",
        "varchar",
        "bpchar",
        "name",
        "char",
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
        "bytea",
        "jsonb",
        "inet",
        "cidr",
        "macaddr",
        "macaddr8",
        "bit",
        "varbit",
    }
)
# Deep enough for any domain over a domain that a schema would hold.
_MAX_DOMAIN_DEPTH = 32


@dataclass(frozen=True)
class TableRef:
    """A table by its schema and name, as the catalogue spells them (not as a config did).

    `schema` is the schema the table really lives in on PostgreSQL, and the attached database
    name (`main` unless configured) on SQLite.
    """

    schema: str
    name: str

    def quoted(self, connection: Connection) -> str:
        """For SQL text (the dialect doubles a % there, for the driver)."""
        quote = connection.dialect.identifier_preparer.quote_identifier
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def regclass(self) -> str:
        """For a bound value, as PostgreSQL's to_regclass() reads it."""
        return f"{_quoted_value(self.schema)}.{_quoted_value(self.name)}"

    def __str__(self) -> str:
        return self.name if self.schema == "main" else f"{self.schema}.{self.name}"


def _quoted_value(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def resolve(connection: Connection, schema: str | None, table: str) -> TableRef | None:
    """The table a config's `source.schema` and `source.table` name, or None if there is none.

    On PostgreSQL a table named without a schema is found through the search_path, and the
    schema it is found in is returned.
    """
    quote = connection.dialect.identifier_preparer.quote_identifier
    if connection.dialect.name == "postgresql":
        reference = _quoted_value(table)
        if schema:
            reference = f"{_quoted_value(schema)}.{reference}"
        found = connection.execute(
            sa.text(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = pg_catalog.to_regclass(:reference)"
            ),
            {"reference": reference},
        ).first()
        return None if found is None else TableRef(found[0], found[1])
    database = schema or "main"
    found = connection.exec_driver_sql(
        f"SELECT name FROM {quote(database)}.sqlite_master "
        "WHERE type = 'table' AND name = ? COLLATE NOCASE",
        (table,),
    ).first()
    return None if found is None else TableRef(database, found[0])


def columns(connection: Connection, table: TableRef) -> list[str]:
    """The table's column names, in order; empty if the table does not exist."""
    if connection.dialect.name == "postgresql":
        return list(
            connection.execute(
                sa.text(
                    "SELECT attname FROM pg_catalog.pg_attribute "
                    "WHERE attrelid = pg_catalog.to_regclass(:table) "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                ),
                {"table": table.regclass},
            ).scalars()
        )
    # table_xinfo, not table_info, which leaves generated columns out.
    rows = connection.exec_driver_sql(f"PRAGMA {_sqlite_table(connection, table, 'table_xinfo')}")
    return [row[1] for row in rows]


def column_types(connection: Connection, table: TableRef) -> tuple[tuple[str, ...], ...]:
    """Each column's name, type and collation as the catalogue spells them, in order: cheap
    to read every cycle, and different whenever a new reflection of the table would read its
    values differently. Empty if the table does not exist."""
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            sa.text(
                "SELECT attname, pg_catalog.format_type(atttypid, atttypmod), "
                "CAST(attcollation AS text) FROM pg_catalog.pg_attribute "
                "WHERE attrelid = pg_catalog.to_regclass(:table) "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            ),
            {"table": table.regclass},
        )
        return tuple(tuple(row) for row in rows)
    # table_xinfo: (cid, name, declared type, notnull, default, pk, hidden).
    rows = connection.exec_driver_sql(f"PRAGMA {_sqlite_table(connection, table, 'table_xinfo')}")
    return tuple((row[1], row[2], str(row[6])) for row in rows)


def generated_columns(connection: Connection, table: TableRef) -> set[str]:
    """The table's generated columns (SQLite)."""
    # table_xinfo: (cid, name, type, notnull, default, pk, hidden); hidden is 2 for a virtual
    # generated column, 3 for a stored one.
    rows = connection.exec_driver_sql(f"PRAGMA {_sqlite_table(connection, table, 'table_xinfo')}")
    return {row[1] for row in rows if row[6] in (2, 3)}


def _sqlite_table(connection: Connection, table: TableRef, pragma: str = "table_info") -> str:
    quote = connection.dialect.identifier_preparer.quote_identifier
    return f"{quote(table.schema)}.{pragma}({quote(table.name)})"


@dataclass(frozen=True)
class ColumnKind:
    """How a trigger must compare a column (PostgreSQL)."""

    # Its type, domains resolved, when that is a pg_catalog type with a real equality (one of
    # _NATIVE_EQUALITY); None for every other type, which is compared by its text.
    native_type: str | None
    # Its type takes a collation (text, varchar, ...), which a migration may change.
    collatable: bool

    @property
    def native(self) -> bool:
        return self.native_type is not None


def column_kinds(
    connection: Connection, table: TableRef, names: Iterable[str]
) -> dict[str, ColumnKind]:
    rows = connection.execute(
        sa.text(
            "SELECT a.attname, a.atttypid, a.attcollation <> 0 "
            "FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = pg_catalog.to_regclass(:table) AND a.attnum > 0 "
            "AND NOT a.attisdropped"
        ),
        {"table": table.regclass},
    ).all()
    wanted = set(names)
    return {
        name: ColumnKind(_native_type(connection, type_id), collatable)
        for name, type_id, collatable in rows
        if name in wanted
    }


def _native_type(connection: Connection, type_id: int) -> str | None:
    for _ in range(_MAX_DOMAIN_DEPTH):
        row = connection.execute(
            sa.text(
                "SELECT t.typname, n.nspname, t.typtype, t.typbasetype "
                "FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n "
                "ON n.oid = t.typnamespace WHERE t.oid = :type_id"
            ),
            {"type_id": type_id},
        ).one()
        name, schema, kind, base = row
        if kind != "d":
            return name if schema == "pg_catalog" and name in _NATIVE_EQUALITY else None
        type_id = base
    return None


def key_is_unique(connection: Connection, table: TableRef, column: str) -> bool:
    """True when a primary key, unique constraint or unique index (valid, not partial, not
    on an expression) covers exactly `column`, so no two rows can share a key value."""
    if connection.dialect.name == "postgresql":
        return bool(
            connection.execute(
                sa.text(
                    "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i "
                    "JOIN pg_catalog.pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                    "WHERE i.indrelid = pg_catalog.to_regclass(:table) AND i.indisunique "
                    "AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL "
                    "AND i.indexprs IS NULL AND a.attname = :column)"
                ),
                {"table": table.regclass, "column": column},
            ).scalar_one()
        )
    return _sqlite_key_is_unique(connection, table, column)


def _sqlite_key_is_unique(connection: Connection, table: TableRef, column: str) -> bool:
    # table_info: (cid, name, type, notnull, default, pk); pk is the column's place in the key.
    info = connection.exec_driver_sql(f"PRAGMA {_sqlite_table(connection, table)}").all()
    primary_key = [row[1] for row in info if row[5]]
    if primary_key == [column]:
        return True
    # index_list: (seq, name, unique, origin, partial)
    indexes = connection.exec_driver_sql(
        f"PRAGMA {_sqlite_table(connection, table, 'index_list')}"
    ).all()
    quote = connection.dialect.identifier_preparer.quote_identifier
    for _seq, index, unique, _origin, partial in indexes:
        if not unique or partial:
            continue
        # index_info: (seqno, cid, name); name is NULL for an expression.
        indexed = connection.exec_driver_sql(
            f"PRAGMA {quote(table.schema)}.index_info({quote(index)})"
        ).all()
        if [row[2] for row in indexed] == [column]:
            return True
    return False


@dataclass(frozen=True)
class Trigger:
    """A trigger on the source table, and on PostgreSQL the function it calls."""

    name: str
    # pg_trigger.tgenabled: O fires in origin mode, A always, R only for replicas, D never.
    # Always "A" on SQLite, whose triggers cannot be disabled.
    enabled: str
    function: str | None = None


def triggers(connection: Connection, table: TableRef) -> dict[str, Trigger]:
    """The user-level triggers on the table, by name."""
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            sa.text(
                "SELECT t.tgname, t.tgenabled, n.nspname, p.proname "
                "FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
                "WHERE t.tgrelid = pg_catalog.to_regclass(:table) AND NOT t.tgisinternal"
            ),
            {"table": table.regclass},
        ).all()
        return {
            name: Trigger(name, str(enabled), f"{schema}.{function}")
            for name, enabled, schema, function in rows
        }
    quote = connection.dialect.identifier_preparer.quote_identifier
    rows = connection.exec_driver_sql(
        f"SELECT name FROM {quote(table.schema)}.sqlite_master "
        "WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE",
        (table.name,),
    ).all()
    return {row[0]: Trigger(row[0], "A") for row in rows}


def triggers_calling(
    connection: Connection, schema: str, functions: Iterable[str]
) -> list[tuple[str, TableRef]]:
    """(trigger, its table) of every trigger that calls one of these argument-less functions
    of `schema`, wherever its table is now (PostgreSQL)."""
    rows = connection.execute(
        sa.text(
            "SELECT t.tgname, tn.nspname, c.relname FROM pg_catalog.pg_trigger t "
            "JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_catalog.pg_namespace tn ON tn.oid = c.relnamespace "
            "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
            "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace "
            "WHERE pn.nspname = :schema AND p.proname = ANY(:names) AND p.pronargs = 0"
        ),
        {"schema": schema, "names": list(functions)},
    ).all()
    return [(trigger, TableRef(table_schema, table)) for trigger, table_schema, table in rows]


def triggers_named(connection: Connection, schema: str, names: Iterable[str]) -> list[str]:
    """Which of these triggers exist in the attached database `schema`, on any table (SQLite)."""
    quote = connection.dialect.identifier_preparer.quote_identifier
    present = connection.exec_driver_sql(
        f"SELECT name FROM {quote(schema)}.sqlite_master WHERE type = 'trigger'"
    ).scalars()
    return sorted(set(present).intersection(names))


def existing_functions(connection: Connection, schema: str, names: Iterable[str]) -> list[str]:
    """Which of these argument-less functions exist in `schema` (PostgreSQL)."""
    return list(
        connection.execute(
            sa.text(
                "SELECT p.proname FROM pg_catalog.pg_proc p "
                "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = :schema AND p.proname = ANY(:names) AND p.pronargs = 0 "
                "ORDER BY p.proname"
            ),
            {"schema": schema, "names": list(names)},
        ).scalars()
    )
