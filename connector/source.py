"""The application's table: checked against the config, and read by key."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError

from connector.config import Config, Match
from connector.database import among, spell_keys_as_capture_does
from connector.errors import ConfigError, ConfigLocation, ConfigProblem, UnreadableRowsError
from connector.leads import RowProblem, SourceRow
from connector.quarantine import data_errors, isolate, reason_of
from connector.schema import MAX_LEAD_ID_LENGTH, MAX_LEAD_KEY_LENGTH
from connector.sqlfold import Rows, fold_for
from connector.values import (
    UnsendableValueError,
    Values,
    in_zone,
    normalise,
    normalise_json,
    normalise_json_array,
    normalise_sqlite_boolean,
)

# Keeps IN lists well under every database's bound-parameter limit.
_KEYS_PER_QUERY = 2000


class SourceTable:
    """The configured source table, reflected once so values come back in Python types."""

    def __init__(self, engine: Engine, config: Config, config_source: str = "config") -> None:
        self.config = config
        self.mapping = config.attributes
        self._match = config.lead_id.match
        source = config.source
        try:
            with warnings.catch_warnings():
                # Types SQLAlchemy does not know (xml, point, extension types) come back as
                # NullType, which this module reads as text: nothing to warn the user about.
                warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
                self.table = sa.Table(
                    source.table, sa.MetaData(), schema=source.schema_, autoload_with=engine
                )
        except NoSuchTableError:
            where = f"{source.schema_}.{source.table}" if source.schema_ else source.table
            raise ConfigError.at(
                config_source,
                ("source", "table"),
                f"table {where!r} does not exist in the database",
            ) from None
        problems = [
            ConfigProblem(
                ConfigLocation(config_source, key),
                f"table {source.table!r} has no column {column!r}",
            )
            for key, column in self._configured_columns()
            if column not in self.table.c
        ]
        if problems:
            raise ConfigError(problems)
        self.key_column = self.table.c[source.key]
        self.lead_column = self.table.c[config.lead_id.column]
        self._key_type = _python_type(self.key_column)
        self._lead_type = _python_type(self.lead_column, also=(UUID,))
        sqlite = self._sqlite = engine.dialect.name == "sqlite"
        mapped = self._mapped = [self.table.c[c] for c in self.mapping]
        zone = config.source.zone
        readings = [_reading(column, sqlite=sqlite, zone=zone) for column in mapped]
        self._reads = [read for read, _ in readings]
        self._normalisers = [normaliser for _, normaliser in readings]
        # A key as the triggers record it: on PostgreSQL its text, spelled as capture spells
        # it (each read pins the spelling first), so that every key the connector keeps or
        # compares has one spelling: '... 04:41:12+00', not Python's '+00:00'; 'ab', not a
        # char(8)'s 'ab      '. A key the driver could not load (a date of 'infinity') reads.
        self._key_read: sa.ColumnElement[Any] = (
            self.key_column if sqlite else sa.cast(self.key_column, sa.Text)
        )
        self._select = sa.select(self._key_read, self.lead_column, *self._reads)
        self._fold = fold_for(
            engine,
            self.key_column,
            self.lead_column,
            {attribute: self.table.c[column] for column, attribute in self.mapping.items()},
        )

    @property
    def spelled_in_utc(self) -> frozenset[str]:
        """Attributes read from date, time and date-time columns: ingest spells them in UTC
        (a naive one read in source.timezone), so text shaping must not convert them again."""
        return frozenset(
            attribute
            for column, attribute in self.mapping.items()
            if isinstance(_underlying(self.table.c[column].type), sa.Date | sa.DateTime | sa.Time)
        )

    def _configured_columns(self) -> Iterator[tuple[tuple[str, ...], str]]:
        yield ("source", "key"), self.config.source.key
        yield ("lead_id", "column"), self.config.lead_id.column
        for column in self.mapping:
            yield ("mapping", column), column

    @property
    def capture_columns(self) -> list[str]:
        """Columns whose change must be captured: the mapped ones and the lead id."""
        return [*self.mapping, self.config.lead_id.column]

    def read(self, connection: Connection, keys: Iterable[str]) -> list[SourceRow | RowProblem]:
        """The current values of the rows with these keys; deleted rows are absent.

        A row whose lead id cannot be a ProspectId comes back as a RowProblem; a value the
        driver cannot read raises UnreadableRowsError (see connector.quarantine).
        """
        rows: list[SourceRow | RowProblem] = []
        spell_keys_as_capture_does(connection)
        for chunk in _chunks(list(keys), _KEYS_PER_QUERY):
            typed = [self._typed_key(k) for k in chunk]
            query = self._select.where(among(self.key_column, typed, connection))
            rows.extend(self._source_row(row) for row in _fetch(connection, query))
        return rows

    def desired_query(self, keys: Sequence[str]) -> Rows | None:
        """The rows with these keys as (source_key, lead_id, desired), folded by the
        database (see connector.sqlfold); None when these columns need Python."""
        if self._fold is None:
            return None
        return self._fold.rows_with_keys([self._typed_key(k) for k in keys])

    def lead_ids_now(self, connection: Connection, keys: Collection[str]) -> dict[str, str | None]:
        """The lead id each of these rows has now: one lookup by key. None for a row that is
        gone, has no lead id, or one that cannot be read or be a ProspectId."""

        def attempt(part: Sequence[str]) -> dict[str, str | None]:
            typed = [self._typed_key(k) for k in part]
            query = sa.select(self._key_read, self.lead_column).where(
                among(self.key_column, typed, connection)
            )
            return {
                str(key): _usable_lead_id(lead, self._match)
                for key, lead in _fetch(connection, query)
            }

        spell_keys_as_capture_does(connection)
        found: dict[str, str | None] = {}
        for part in isolate(connection, list(keys), attempt).results:
            found.update(part)
        return {key: found.get(key) for key in keys}

    def rows_without_lead_id(self, connection: Connection) -> int:
        """Rows of the table whose lead id is NULL or blank, counted by the database: no
        lead is pushed for them. (A lead id that cannot be one is a row held back instead.)"""
        column = self.lead_column
        empty: sa.ColumnElement[bool] = column.is_(None)
        if isinstance(_underlying(column.type), sa.String):
            empty = sa.or_(empty, sa.func.trim(column) == "")
        query = sa.select(sa.func.count()).select_from(self.table).where(empty)
        return int(connection.execute(query).scalar_one())

    def keys_present(self, connection: Connection, keys: Collection[str]) -> set[str]:
        """Which of these keys a row of the table has now (a lookup by key); a key that
        cannot be looked up counts as present."""

        def attempt(part: Sequence[str]) -> set[str]:
            typed = [self._typed_key(k) for k in part]
            query = sa.select(self._key_read).where(among(self.key_column, typed, connection))
            return {str(key) for (key,) in _fetch(connection, query)}

        spell_keys_as_capture_does(connection)
        present: set[str] = set()
        for chunk in _chunks(list(keys), _KEYS_PER_QUERY):
            isolated = isolate(connection, chunk, attempt)
            present.update(*isolated.results, isolated.failed)
        return present

    def keys_pointing_to(
        self, connection: Connection, lead_ids: Collection[str]
    ) -> dict[str, list[str] | None]:
        """The keys of the rows that have each of these lead ids now, in order; None for a
        lead id whose rows cannot all be read. A lookup by lead id: the column may have no
        index, so it is kept for leads whose rows need counting."""

        def attempt(part: Sequence[str]) -> dict[str, list[str]]:
            query = sa.select(self._key_read, self.lead_column).where(
                among(self.lead_column, self._as_lead_column(part), connection)
            )
            pointing: dict[str, list[str]] = {lead_id: [] for lead_id in part}
            for key, lead in _fetch(connection, query):
                lead_id = _usable_lead_id(lead, self._match)
                if lead_id in pointing:  # a case-insensitive collation matches more
                    pointing[lead_id].append(str(key))
            return pointing

        spell_keys_as_capture_does(connection)
        isolated = isolate(connection, list(lead_ids), attempt)
        found: dict[str, list[str] | None] = dict.fromkeys(isolated.failed)
        for part in isolated.results:
            found.update({lead_id: sorted(keys) for lead_id, keys in part.items()})
        return found

    def _as_lead_column(self, lead_ids: Sequence[str]) -> list[Any]:
        """Lead ids as values of the lead column, for its index. On SQLite, whose columns
        hold any type, as text and, where the text is an integer's, as that integer too: a
        column without a type affinity keeps 5 and '5' apart, and both are lead id 5."""
        if self._sqlite:
            integers = [_sqlite_integer(lead_id) for lead_id in lead_ids]
            return [*lead_ids, *(number for number in integers if number is not None)]
        converted = []
        for lead_id in lead_ids:
            try:
                converted.append(self._lead_type(lead_id))
            except ValueError:
                continue  # no row of this column can hold it
        return converted

    def diagnose(self, connection: Connection, key: str, error: str) -> RowProblem:
        """Why the row with this key cannot be ingested: the first of its columns that cannot
        be read alone, or `error` (what failed the row as a whole) when each one can."""
        lead_id: str | None = None
        try:
            typed = self._typed_key(key)
        except UnreadableRowsError as exc:
            return RowProblem(key, str(exc), column=self.key_column.name)
        # The key first: the database may refuse the recorded text as a value of its type.
        # As text, so that a key the driver cannot load (a date of 'infinity') is not
        # taken for one the database refuses.
        as_text = sa.cast(self.key_column, sa.Text)
        for column, read in [(self.key_column, as_text), *self._columns_as_read()]:
            query = sa.select(read).where(among(self.key_column, [typed], connection))
            try:
                with connection.begin_nested():
                    value = _fetch(connection, query)
            except UnreadableRowsError as exc:
                return RowProblem(key, str(exc), lead_id, column.name)
            if column is self.lead_column and value:
                lead_id = _shortened(_readable_lead_id(value[0][0]), self._match)
        return RowProblem(key, error, lead_id)

    def _columns_as_read(self) -> Iterator[tuple[sa.Column[Any], sa.ColumnElement[Any]]]:
        yield self.lead_column, self.lead_column
        yield from zip(self._mapped, self._reads, strict=True)

    def _typed_key(self, key: str) -> Any:
        try:
            return self._key_type(key)
        except ValueError:
            raise UnreadableRowsError(
                f"the key {key!r} is not a value of the key column's type"
            ) from None

    def _source_row(self, row: tuple[Any, ...]) -> SourceRow | RowProblem:
        # Positions follow self._select: key, lead id, then the mapped columns in order.
        key = str(row[0])
        try:
            lead_id = lead_id_of(row[1], self._match)
        except UnsendableValueError as exc:
            lead = _shortened(_readable_lead_id(row[1]), self._match)
            return RowProblem(key, str(exc), lead, self.lead_column.name)
        try:
            # Run once per changed row in a large ingest: the plain case in one expression.
            normalised = map(operator.call, self._normalisers, row[2:])
            values = dict(zip(self.mapping.values(), normalised, strict=True))
        except UnsendableValueError:
            return self._row_with_problems(key, lead_id, row[2:])
        return SourceRow(key, lead_id, values)

    def _row_with_problems(
        self, key: str, lead_id: str | None, mapped: tuple[Any, ...]
    ) -> SourceRow:
        values: Values = {}
        problems = []
        columns = zip(self.mapping.items(), self._normalisers, mapped, strict=True)
        for (column, attribute), normaliser, value in columns:
            try:
                values[attribute] = normaliser(value)
            except UnsendableValueError as exc:
                problems.append(f"row {key}, column {column!r}: {exc}")
        return SourceRow(key, lead_id, values, hold="; ".join(problems))


def lead_id_of(value: Any, match: Match = "ProspectId") -> str | None:
    """A row's lead id (its ProspectId, or the value `match` finds the lead by) as the text
    sent to LeadSquared; None when the row has none (NULL or blank). Raises
    UnsendableValueError for a value that cannot be one."""
    if value is None:
        return None
    if type(value) is str:
        if not value.strip():
            return None
        limit = _limit(match)
        if len(value) > limit:
            raise UnsendableValueError(
                f"a lead id longer than {limit} characters cannot be {_WHAT_IS_MATCHED[match]}"
            )
        return value
    if isinstance(value, int | UUID) and not isinstance(value, bool):
        return str(value)
    raise UnsendableValueError(
        f"a lead id of type {type(value).__name__!r} cannot be {_WHAT_IS_MATCHED[match]}"
    )


_WHAT_IS_MATCHED: dict[Match, str] = {
    "ProspectId": "a ProspectId",
    "EmailAddress": "an email address",
    "Phone": "a phone number",
}


def _sqlite_integer(text: str) -> int | None:
    """The SQLite integer that lead_id_of spells as this text, if there is one."""
    try:
        number = int(text)
    except ValueError:
        return None
    in_range = -(2**63) <= number < 2**63
    return number if in_range and str(number) == text else None


def _readable_lead_id(value: Any) -> str | None:
    """A lead id to show beside its row's problem, when it is text or a number at all."""
    if value is None or isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | UUID) else None


def _shortened(text: str | None, match: Match) -> str | None:
    limit = _limit(match)
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _limit(match: Match) -> int:
    return MAX_LEAD_ID_LENGTH if match == "ProspectId" else MAX_LEAD_KEY_LENGTH


def _fetch(connection: Connection, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
    """Every row of the query; a value that cannot be read raises UnreadableRowsError."""
    with data_errors():
        try:
            return [tuple(row) for row in connection.execute(query)]
        # SQLAlchemy converting a stored value: a SQLite date of year 10000, an enum label
        # added since the table was reflected.
        except (ValueError, TypeError, ArithmeticError, LookupError) as exc:
            raise UnreadableRowsError(reason_of(exc)) from exc


Normaliser = Callable[[Any], str | None]


def _reading(
    column: sa.Column[Any], *, sqlite: bool, zone: ZoneInfo
) -> tuple[sa.ColumnElement[Any], Normaliser]:
    """How a mapped column is read, and how its values are then spelled: by its declared
    type, domains resolved, so that every value of a JSON column is sent as JSON, a JSON
    string included.

    On SQLite a NUMERIC holds an integer, a double or text, which SQLAlchemy would turn into
    a Decimal through a float rounded to ten places; a JSON column holds text that need not
    be JSON, which SQLAlchemy would parse; and a BOOLEAN holds anything, which SQLAlchemy
    would test for truth. All are read as SQLite holds them. On PostgreSQL json and jsonb
    are read as their text, whose numbers keep every digit (the driver would parse them
    into floats); a timestamptz in UTC, as it is sent, since in the session's time zone
    9999-12-31 or 0001-01-01 UTC may fall outside the calendar the driver can load; and
    arrays as `_array_reading` says; hstore as its text. A date-time without a time zone
    (timestamp, SQLite's DATETIME) is read in `zone`, source.timezone.
    """
    kind = _underlying(column.type)
    if isinstance(kind, sa.DateTime) and not kind.timezone and zone.key != "UTC":
        return column, in_zone(zone)
    if sqlite:
        as_stored = sa.type_coerce(column, sa.types.NullType())
        if isinstance(kind, sa.JSON):
            return as_stored, normalise_json
        if isinstance(kind, sa.Boolean):
            return as_stored, normalise_sqlite_boolean
        if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
            return as_stored, normalise
        return column, normalise
    if isinstance(kind, sa.JSON):
        return sa.cast(column, sa.Text), normalise_json
    if isinstance(kind, postgresql.HSTORE):
        # As PostgreSQL spells it, whether or not SQLAlchemy recognises the type (it does
        # only when hstore's schema is on the search_path, and would then parse it).
        return sa.cast(column, sa.Text), normalise
    if isinstance(kind, sa.DateTime) and kind.timezone:
        return sa.func.timezone("UTC", column, type_=sa.DateTime()), normalise
    if isinstance(kind, sa.ARRAY):
        return _array_reading(column, kind)
    return column, normalise


def _array_reading(
    column: sa.Column[Any], kind: sa.ARRAY[Any]
) -> tuple[sa.ColumnElement[Any], Normaliser]:
    """A PostgreSQL array: of json as text[], each element parsed as a json column is; of
    citext as text[]; of a domain as its base type's array.

    The driver has no loader for the array type of a domain or of an extension's type: it
    hands such an array over as one string, which SQLAlchemy would split into characters.
    """
    element = _underlying(kind.item_type)
    if isinstance(element, sa.JSON):
        return sa.cast(column, postgresql.ARRAY(sa.Text)), normalise_json_array
    if isinstance(element, postgresql.CITEXT):
        return sa.cast(column, postgresql.ARRAY(sa.Text)), normalise
    if element is not kind.item_type:
        return sa.cast(column, postgresql.ARRAY(element)), normalise
    return column, normalise


def _underlying(kind: Any) -> Any:
    """A type with its domains resolved (PostgreSQL): what its values are."""
    while isinstance(kind, postgresql.DOMAIN):
        kind = kind.data_type
    return kind


def _python_type(column: sa.Column[Any], also: tuple[type, ...] = ()) -> Any:
    """Converts a change row's text key back to the key column's type, so indexes are used."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return str
    return python_type if python_type in (int, str, *also) else str


def _usable_lead_id(value: Any, match: Match) -> str | None:
    try:
        return lead_id_of(value, match)
    except UnsendableValueError:
        return None


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
