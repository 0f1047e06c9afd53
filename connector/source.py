"""The application's table: checked against the config, and read by key."""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError

from connector.config import Config
from connector.database import among
from connector.errors import ConfigError
from connector.leads import SourceRow
from connector.values import Values, normalise

# Keeps IN lists well under every database's bound-parameter limit.
_KEYS_PER_QUERY = 2000
# Column types whose normalise() result PostgreSQL can compute exactly (see desired_query).
# Exact classes on purpose: CHAR pads, NUMERIC and the rest are spelled differently.
_TEXT_TYPES = (sa.TEXT, sa.VARCHAR)
_INTEGER_TYPES = (sa.SMALLINT, sa.INTEGER, sa.BIGINT)
# What str.strip() removes (every character for which str.isspace() is true): a lead id of
# only these is no lead id. Spelled out, since computing it costs a scan of all of Unicode.
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class SourceTable:
    """The configured source table, reflected once so values come back in Python types."""

    def __init__(self, engine: Engine, config: Config, config_source: str = "config") -> None:
        self.config = config
        self.mapping = config.mapping
        source = config.source
        try:
            self.table = sa.Table(
                source.table, sa.MetaData(), schema=source.schema_, autoload_with=engine
            )
        except NoSuchTableError:
            where = f"{source.schema_}.{source.table}" if source.schema_ else source.table
            raise ConfigError(
                config_source, [f"source.table: table {where!r} does not exist in the database"]
            ) from None
        problems = [
            f"{key}: table {source.table!r} has no column {column!r}"
            for key, column in self._configured_columns()
            if column not in self.table.c
        ]
        if problems:
            raise ConfigError(config_source, problems)
        self.key_column = self.table.c[source.key]
        self.lead_column = self.table.c[config.lead_id.column]
        self._key_type = _python_type(self.key_column)
        self._select = sa.select(
            self.key_column, self.lead_column, *(self.table.c[c] for c in self.mapping)
        )
        self._desired_select = self._desired_in_sql(engine)

    def _configured_columns(self) -> Iterator[tuple[str, str]]:
        yield "source.key", self.config.source.key
        yield "lead_id.column", self.config.lead_id.column
        for column in self.mapping:
            yield f"mapping.{column}", column

    @property
    def capture_columns(self) -> list[str]:
        """Columns whose change must be captured: the mapped ones and the lead id."""
        return [*self.mapping, self.config.lead_id.column]

    def read(self, connection: Connection, keys: Iterable[str]) -> list[SourceRow]:
        """The current values of the rows with these keys; deleted rows are absent."""
        rows: list[SourceRow] = []
        for chunk in _chunks(list(keys), _KEYS_PER_QUERY):
            typed = [self._key_type(k) for k in chunk]
            query = self._select.where(among(self.key_column, typed, connection))
            rows.extend(self._source_row(tuple(row)) for row in connection.execute(query))
        return rows

    def desired_query(self, keys: Sequence[str]) -> sa.Select[str, str | None, str | None] | None:
        """The rows with these keys as (source_key, lead_id, desired), computed by the database.

        Row for row what read() and fold_rows make of them, `desired` spelled exactly as
        values.dumps spells it, or NULL where that needs Python (a value with a non-ASCII
        character, which dumps escapes): read() those rows. None when a column's type needs
        normalise() itself, or not on PostgreSQL. Computing the values where they are saves
        fetching every row and sending it back as the lead table's input, which is most of
        an ingest's time.
        """
        if self._desired_select is None:
            return None
        # One JSON parameter, cast to the key's type by the server: the driver would format
        # an array parameter element by element, in Python.
        wanted = sa.select(
            sa.cast(
                sa.func.json_array_elements_text(
                    sa.cast(sa.bindparam(None, json.dumps(list(keys)), sa.Text), postgresql.JSON)
                ),
                self.key_column.type,
            )
        ).scalar_subquery()
        rows = self._desired_select.where(
            self.key_column == sa.any_(sa.func.array(wanted))
        ).subquery()
        # Every character PostgreSQL's JSON leaves unescaped and dumps does not: past ASCII,
        # and DEL.
        plain = sa.and_(
            sa.func.octet_length(rows.c.desired) == sa.func.char_length(rows.c.desired),
            sa.func.strpos(rows.c.desired, "\x7f") == 0,
        )
        return sa.select(
            rows.c.source_key,
            rows.c.lead_id,
            sa.case((plain, rows.c.desired)).label("desired"),
        )

    def _desired_in_sql(self, engine: Engine) -> sa.Select[str, str | None, str] | None:
        if engine.dialect.name != "postgresql":
            return None
        with engine.connect() as connection:
            encoding = connection.exec_driver_sql("SHOW server_encoding").scalar_one()
        # chr() must make the characters PYTHON_WHITESPACE names, and `plain` counts them.
        if encoding != "UTF8" or type(self.key_column.type) not in (*_TEXT_TYPES, *_INTEGER_TYPES):
            return None
        lead = _lead_id_in_sql(self.lead_column)
        values = {
            attribute: _normalised_in_sql(self.table.c[column])
            for column, attribute in self.mapping.items()
        }
        if lead is None or any(value is None for value in values.values()):
            return None
        # dumps' layout: keys sorted, no spaces; attribute names are plain ASCII (config).
        desired: sa.ColumnElement[str] = sa.literal("{")
        for number, (attribute, value) in enumerate(sorted(values.items())):
            separator = "," if number else ""
            desired = (
                desired
                + f"{separator}{json.dumps(attribute)}:"
                + sa.func.coalesce(sa.cast(sa.func.to_json(value), sa.Text), "null")
            )
        return sa.select(
            sa.cast(self.key_column, sa.Text).label("source_key"),
            lead.label("lead_id"),
            (desired + "}").label("desired"),
        )

    def _source_row(self, row: tuple[Any, ...]) -> SourceRow:
        # Positions follow self._select: key, lead id, then the mapped columns in order.
        key = str(row[0])
        lead = row[1]
        lead_id = None if lead is None or str(lead).strip() == "" else str(lead)
        try:
            # Run once per changed row in a large ingest: the plain case in one expression.
            values = dict(zip(self.mapping.values(), map(normalise, row[2:]), strict=True))
        except TypeError:
            return self._row_with_problems(key, lead_id, row[2:])
        return SourceRow(key, lead_id, values)

    def _row_with_problems(
        self, key: str, lead_id: str | None, mapped: tuple[Any, ...]
    ) -> SourceRow:
        values: Values = {}
        problems = []
        for (column, attribute), value in zip(self.mapping.items(), mapped, strict=True):
            try:
                values[attribute] = normalise(value)
            except TypeError as exc:
                problems.append(f"row {key}, column {column!r}: {exc}")
        return SourceRow(key, lead_id, values, "; ".join(problems))


def _normalised_in_sql(column: sa.Column[Any]) -> sa.ColumnElement[str] | None:
    """normalise() of this column's values, as PostgreSQL text; None if not exactly."""
    kind = type(column.type)
    if kind in _TEXT_TYPES:
        return sa.func.nullif(_bytewise(column), "")
    if kind in _INTEGER_TYPES:
        return sa.cast(column, sa.Text)
    if kind is sa.BOOLEAN:
        return sa.case((column, "true"), (sa.not_(column), "false"))
    return None


def _lead_id_in_sql(column: sa.Column[Any]) -> sa.ColumnElement[str | None] | None:
    """SourceRow's lead id: the text, unless it is missing or blank."""
    kind = type(column.type)
    if kind in _TEXT_TYPES:
        lead = _bytewise(column)
        blank = sa.func.btrim(lead, _python_whitespace_in_sql()) == ""
        return sa.case((blank, sa.null()), else_=lead)
    if kind in _INTEGER_TYPES:
        return sa.cast(column, sa.Text)
    return None


def _bytewise(column: sa.Column[Any]) -> sa.ColumnElement[str]:
    """The column compared as Python compares strings.

    A column may carry a nondeterministic collation (ICU, case- or accent-insensitive), under
    which a control character equals '' and 'ABC' equals 'abc': nullif would empty such a
    value, and DISTINCT ON would keep one of two leads.
    """
    return sa.collate(column, "C")


def _python_whitespace_in_sql() -> sa.ColumnElement[str]:
    """PYTHON_WHITESPACE, built by the server: as a parameter it would have to pass through
    the client encoding, which need not hold these characters."""
    characters = [
        sa.func.chr(sa.literal_column(str(ord(c))), type_=sa.Text) for c in PYTHON_WHITESPACE
    ]
    return functools.reduce(operator.add, characters)


def _python_type(column: sa.Column[Any]) -> Any:
    """Converts a change row's text key back to the key column's type, so indexes are used."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return str
    return python_type if python_type in (int, str) else str


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
