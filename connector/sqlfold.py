"""Desired values computed by the database itself, for the column types where that is exact.

Row for row, a fold gives what `SourceTable.read`, `fold_rows` and `values.dumps` make of a
source row: (source_key, lead_id, desired), with `desired` spelled exactly as `dumps` spells
it, or NULL where that needs Python; such rows go through `SourceTable.read`. Computing the
values where they are saves reading every row into Python, normalising it there and sending
it back as the lead table's input, which is most of an ingest's time.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from connector.schema import MAX_LEAD_ID_LENGTH, PREFIX

# Declared types whose values the database can normalise exactly. Exact classes on purpose:
# CHAR pads, NUMERIC and the rest are spelled differently, and a subclass may convert.
TEXT_TYPES = (sa.TEXT, sa.VARCHAR)
INTEGER_TYPES = (sa.SMALLINT, sa.INTEGER, sa.BIGINT)
# What str.strip() removes (every character for which str.isspace() is true): a lead id of
# only these is no lead id. Spelled out, since computing it costs a scan of all of Unicode.
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A row's desired value saying that the whole batch must be folded in Python. Never JSON.
BATCH_FOR_PYTHON = "!"
# For aggregate FILTER clauses, which DesiredValues.write_desired_from uses.
_SQLITE_FILTER = (3, 30, 0)
# For `AS MATERIALIZED`; before it, the fold is slower, not different.
_SQLITE_MATERIALIZED = (3, 35, 0)
# The desired JSON is one chain of || (two links per column) inside a chain of AND (one per
# column); SQLite refuses expressions deeper than 1000 by default, and a build may set less.
_SQLITE_MAX_COLUMNS = 100

Column = sa.Column[Any]
Rows = sa.Select[str, str | None, str | None]


def fold_for(
    engine: Engine, key: Column, lead: Column, mapped: Mapping[str, Column]
) -> SqlFold | None:
    """The fold for these columns (`mapped`: attribute -> column), or None when one of them
    needs Python's normalise(), or the database cannot fold exactly."""
    fold: SqlFold
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            encoding = connection.exec_driver_sql("SHOW server_encoding").scalar_one()
        # chr() must make the characters PYTHON_WHITESPACE names, and `plain` counts them.
        if encoding != "UTF8":
            return None
        fold = PostgresFold()
    elif engine.dialect.name == "sqlite":
        driver = engine.dialect.dbapi
        if driver is None or driver.sqlite_version_info < _SQLITE_FILTER:
            return None
        if len(mapped) > _SQLITE_MAX_COLUMNS:
            return None
        fold = SqliteFold(materialize=driver.sqlite_version_info >= _SQLITE_MATERIALIZED)
    else:
        return None
    identities = (key, lead)
    if not all(type(c.type) in (*TEXT_TYPES, *INTEGER_TYPES) for c in identities) or not all(
        fold.folds(column) for column in mapped.values()
    ):
        return None
    fold.build(key, lead, mapped)
    return fold


class SqlFold:
    """One database's fold of a source table's rows."""

    _rows: Rows
    _key: Column

    def __init__(self, *, materialize: bool = True) -> None:
        self.materialize = materialize

    def build(self, key: Column, lead: Column, mapped: Mapping[str, Column]) -> None:
        self._key = key
        self._rows = sa.select(
            sa.cast(key, sa.Text).label("source_key"),
            self.lead_id(lead).label("lead_id"),
            self.desired(key, lead, dict(sorted(mapped.items()))).label("desired"),
        )

    def rows_with_keys(self, keys: Sequence[Any]) -> Rows | None:
        """(source_key, lead_id, desired) of the rows with these keys, typed as the column;
        None when the keys themselves need Python. `desired` is NULL for a row Python must
        fold, and BATCH_FOR_PYTHON where Python must fold the whole batch."""
        # Materialized: inlined, the check below would compute each row's desired JSON
        # once per mention, four times in all. Named as no source table may be: inside its
        # own body SQLite would take a table of the CTE's name for the CTE.
        rows = self._rows.where(self.key_among(self._key, keys)).cte(f"{PREFIX}folded_rows")
        if self.materialize:
            rows = rows.prefix_with("MATERIALIZED")
        return sa.select(
            rows.c.source_key,
            rows.c.lead_id,
            # The batch's verdict stands whatever else the row holds.
            sa.case(
                (rows.c.desired == BATCH_FOR_PYTHON, rows.c.desired),
                (self.exact(rows), rows.c.desired),
            ).label("desired"),
        )

    def folds(self, column: Column) -> bool:
        """Whether this mapped column's values can be normalised here."""
        return type(column.type) in (*TEXT_TYPES, *INTEGER_TYPES)

    def lead_id(self, column: Column) -> sa.ColumnElement[str | None]:
        """SourceRow's lead id: the text, unless it is missing or blank."""
        raise NotImplementedError

    def desired(
        self, key: Column, lead: Column, mapped: Mapping[str, Column]
    ) -> sa.ColumnElement[Any]:
        """dumps() of the normalised values, attributes in order; NULL to leave it to Python."""
        return self.spelled(mapped)

    def spelled(self, mapped: Mapping[str, Column]) -> sa.ColumnElement[str]:
        """The values as dumps lays them out: no spaces, attributes in the order given
        (sorted), whose names are plain ASCII (config)."""
        desired: sa.ColumnElement[str] = sa.literal("{")
        for number, (attribute, column) in enumerate(mapped.items()):
            separator = "," if number else ""
            desired = desired + f"{separator}{json.dumps(attribute)}:" + self.value_json(column)
        return desired + "}"

    def value_json(self, column: Column) -> sa.ColumnElement[str]:
        """dumps() of normalise() of the column's value."""
        raise NotImplementedError

    def exact(self, rows: sa.CTE) -> sa.ColumnElement[bool]:
        """Whether the row came out as Python makes it: the JSON holds only characters the
        database escapes as dumps does, and so on."""
        raise NotImplementedError

    def key_among(self, key: Column, keys: Sequence[Any]) -> sa.ColumnElement[bool]:
        raise NotImplementedError


class PostgresFold(SqlFold):
    def folds(self, column: Column) -> bool:
        return super().folds(column) or type(column.type) is sa.BOOLEAN

    def lead_id(self, column: Column) -> sa.ColumnElement[str | None]:
        if type(column.type) in INTEGER_TYPES:
            return sa.cast(column, sa.Text)
        lead = _bytewise(column)
        blank = sa.func.btrim(lead, _whitespace()) == ""
        return sa.case((blank, sa.null()), else_=lead)

    def value_json(self, column: Column) -> sa.ColumnElement[str]:
        value = sa.cast(sa.func.to_json(self._normalised(column)), sa.Text)
        return sa.func.coalesce(value, "null")

    def _normalised(self, column: Column) -> sa.ColumnElement[str]:
        kind = type(column.type)
        if kind in TEXT_TYPES:
            return sa.func.nullif(_bytewise(column), "")
        if kind in INTEGER_TYPES:
            return sa.cast(column, sa.Text)
        return sa.case((column, "true"), (sa.not_(column), "false"))

    def exact(self, rows: sa.CTE) -> sa.ColumnElement[bool]:
        # Every character PostgreSQL's JSON leaves unescaped and dumps does not: past
        # ASCII, and DEL. A lead id too long to be one is Python's to refuse, row by row.
        desired = rows.c.desired
        return sa.and_(
            sa.func.octet_length(desired) == sa.func.char_length(desired),
            sa.func.strpos(desired, "\x7f") == 0,
            sa.or_(
                rows.c.lead_id.is_(None),
                sa.func.char_length(rows.c.lead_id) <= MAX_LEAD_ID_LENGTH,
            ),
        )

    def key_among(self, key: Column, keys: Sequence[Any]) -> sa.ColumnElement[bool]:
        # One JSON parameter, cast to the key's type by the server: the driver would format
        # an array parameter element by element, in Python.
        wanted = sa.select(
            sa.cast(
                sa.func.json_array_elements_text(
                    sa.cast(sa.bindparam(None, json.dumps(list(keys)), sa.Text), postgresql.JSON)
                ),
                key.type,
            )
        ).scalar_subquery()
        return key == sa.any_(sa.func.array(wanted))


class SqliteFold(SqlFold):
    """SQLite types each value, not each column: a column declared INTEGER may hold text, a
    real or a blob. Text and integers are spelled as Python spells them; a row holding a
    real or a blob is left to Python."""

    def lead_id(self, column: Column) -> sa.ColumnElement[str | None]:
        # Python strips only text; an integer, real or blob is never blank there.
        blank = sa.and_(
            sa.func.typeof(column) == "text", sa.func.trim(column, PYTHON_WHITESPACE) == ""
        )
        return sa.case((blank, sa.null()), else_=sa.cast(column, sa.Text))

    def desired(
        self, key: Column, lead: Column, mapped: Mapping[str, Column]
    ) -> sa.ColumnElement[Any]:
        spelled_as_python = sa.and_(
            *(sa.func.typeof(column).not_in(["real", "blob"]) for column in (key, *mapped.values()))
        )
        # Python spells such a lead id its own way (str(b'L1') is "b'L1'"), so SQL cannot
        # tell which other rows of the batch belong to the same lead.
        odd_lead = sa.func.typeof(lead).in_(["real", "blob"])
        return sa.case((odd_lead, BATCH_FOR_PYTHON), (spelled_as_python, self.spelled(mapped)))

    def value_json(self, column: Column) -> sa.ColumnElement[str]:
        # json_quote escapes as dumps does, up to what `exact` sends to Python, and spells
        # NULL null.
        text = sa.collate(sa.cast(column, sa.Text), "BINARY")  # as Python compares ''
        return sa.func.json_quote(sa.func.nullif(text, ""), type_=sa.Text)

    def exact(self, rows: sa.CTE) -> sa.ColumnElement[bool]:
        # Printable ASCII only: json_quote leaves DEL and everything past ASCII as it is, and
        # SQLite text need not even be valid UTF-8, which Python refuses to read.
        def printable(text: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
            outside: sa.ColumnElement[bool] = text.op("GLOB", return_type=sa.Boolean)("*[^ -~]*")
            # GLOB stops reading at a NUL, which could hide what follows it.
            return sa.and_(sa.not_(outside), sa.func.instr(text, "\x00") == 0)

        return sa.and_(
            printable(rows.c.desired),
            printable(rows.c.source_key),
            sa.or_(
                rows.c.lead_id.is_(None),
                sa.and_(
                    printable(rows.c.lead_id),
                    sa.func.length(rows.c.lead_id) <= MAX_LEAD_ID_LENGTH,
                ),
            ),
        )

    def rows_with_keys(self, keys: Sequence[Any]) -> Rows | None:
        # SQLite's JSON functions end a string at its first NUL: such a key would match
        # nothing, so the whole batch goes to Python.
        if any(isinstance(key, str) and "\x00" in key for key in keys):
            return None
        return super().rows_with_keys(keys)

    def key_among(self, key: Column, keys: Sequence[Any]) -> sa.ColumnElement[bool]:
        wanted = sa.func.json_each(sa.bindparam(None, json.dumps(list(keys)), sa.Text))
        return key.in_(sa.select(wanted.table_valued("value").c.value))


def _bytewise(column: Column) -> sa.ColumnElement[str]:
    """The column compared as Python compares strings (PostgreSQL).

    A column may carry a nondeterministic collation (ICU, case- or accent-insensitive), under
    which a control character equals '' and 'ABC' equals 'abc': nullif would empty such a
    value, and DISTINCT ON would keep one of two leads.
    """
    return sa.collate(column, "C")


def _whitespace() -> sa.ColumnElement[str]:
    """PYTHON_WHITESPACE, built by the server: as a parameter it would have to pass through
    the client encoding, which need not hold these characters."""
    codes = [sa.func.chr(sa.literal_column(str(ord(c))), type_=sa.Text) for c in PYTHON_WHITESPACE]
    return functools.reduce(operator.add, codes)
