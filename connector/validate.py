"""`lsq-sync validate`: every check a first run depends on, made at once, each problem named by
its config key.

The checks, in order: the database is reachable; the source table, its key and columns
exist, and the key is unique; change capture is installed and matches the config; the keys
work (UserByAccessKey.Get) and `leadsquared.host` is the account's own API host; each mapped
attribute exists in the account, and its type fits its column; and, on a sample of source
rows, the values pre-flight would hold back, counted per rule.

An error means a run cannot do its job; a warning means it can, but not everything will be
sent (values held back, say). Nothing here writes to the source table or calls Lead.Update;
the account's field list is kept, as `init` keeps it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connector import catalogue, installation, migrate
from connector.client import LeadSquaredClient
from connector.clock import SystemClock
from connector.config import Config
from connector.database import translate_errors
from connector.errors import (
    ConfigError,
    FatalRunError,
    LeadSquaredError,
    LsqSyncError,
    UnreadableRowsError,
)
from connector.fieldlist import FieldList
from connector.fields import DataType, LeadFields, MetadataError, parse_metadata
from connector.leads import RowProblem, SourceRow
from connector.preflight import shape_in_zones
from connector.ratelimit import AccountLimiter
from connector.source import SourceTable

Level = Literal["ok", "warning", "error"]

# Rows read for the sample of values pre-flight would hold back.
SAMPLE_ROWS = 1000
# Examples kept per attribute and rule.
_EXAMPLES = 3

# SQL types a field's values are always right for; any other column is checked value by value.
_FITS: dict[DataType, tuple[type[Any], ...]] = {
    DataType.NUMBER: (sa.Integer, sa.Numeric),
    DataType.DATE: (sa.Date, sa.DateTime),
    DataType.TIME: (sa.Time,),
    DataType.BOOLEAN: (sa.Boolean,),
}
# Columns whose values can never be right for such a field.
_MISFITS: dict[DataType, tuple[type[Any], ...]] = {
    DataType.NUMBER: (sa.Date, sa.DateTime, sa.Time, sa.Boolean),
    DataType.DATE: (sa.Numeric, sa.Integer, sa.Boolean, sa.Time),
    DataType.TIME: (sa.Numeric, sa.Integer, sa.Boolean, sa.Date),
    DataType.BOOLEAN: (sa.Date, sa.DateTime, sa.Time, sa.Numeric),
}


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, at which config key, and what came of it."""

    check: str
    key: str
    level: Level
    message: str
    examples: tuple[str, ...] = ()


@dataclass
class Validation:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the connector can run: no check ended in an error."""
        return all(check.level != "error" for check in self.checks)

    def add(
        self, check: str, key: str, level: Level, message: str, examples: Sequence[str] = ()
    ) -> None:
        self.checks.append(Check(check, key, level, message, tuple(examples)))

    def as_json(self) -> str:
        return json.dumps(
            {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}, indent=2
        )

    def as_text(self) -> str:
        lines = []
        for check in self.checks:
            lines.append(f"{check.level:<8} {check.key:<28} {check.message}")
            lines.extend(f"{'':<38}e.g. {example}" for example in check.examples)
        verdict = "the connector can run" if self.ok else "the connector cannot run"
        errors = sum(check.level == "error" for check in self.checks)
        warnings = sum(check.level == "warning" for check in self.checks)
        lines.append(f"{verdict}: {errors} errors, {warnings} warnings")
        return "\n".join(lines)


def config_problems(error: ConfigError) -> Validation:
    """A config that did not parse: each of its problems, and nothing else to check."""
    found = Validation()
    for problem in error.problems:
        key = problem.location.key
        where = ".".join(key) if key else f"line {problem.location.line or '?'}"
        found.add("config", where or "(top level)", "error", problem.message)
    return found


def validate(
    config: Config,
    engine: Engine,
    client_for: Any,
    *,
    config_source: str = "config",
    sample_rows: int = SAMPLE_ROWS,
) -> Validation:
    """Every check, all made whatever the others found. `client_for(limiter)` makes the
    LeadSquared client, paced by `limiter` when the connector's tables exist."""
    found = Validation()
    clock = SystemClock(threading.Event())
    found.add("config", config_source, "ok", "the config is valid")
    source = _source(config, engine, config_source, found)
    tables_ready = _capture(config, engine, found)
    limiter = None
    if tables_ready:
        limiter = AccountLimiter(engine, config.leadsquared, clock, threading.Event())
    client: LeadSquaredClient = client_for(limiter)
    if not _keys(config, client, found):
        return found
    store = FieldList(engine, limiter.account) if limiter is not None else None
    fields = _fields(config, client, store, clock, found)
    if fields is not None and source is not None:
        _types(config, source, fields, found)
        _sample(config, source, fields, engine, found, sample_rows=sample_rows)
    return found


def _source(
    config: Config, engine: Engine, config_source: str, found: Validation
) -> SourceTable | None:
    try:
        with translate_errors("connecting to the database"), engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        found.add("database", "database.url", "ok", f"reachable ({engine.dialect.name})")
    except LsqSyncError as exc:
        found.add("database", "database.url", "error", str(exc))
        return None
    try:
        with translate_errors("reading the source table's columns"):
            source = SourceTable(engine, config, config_source)
    except ConfigError as exc:
        for problem in exc.problems:
            key = ".".join(problem.location.key or ()) or "source"
            found.add("source table", key, "error", problem.message)
        return None
    except LsqSyncError as exc:
        found.add("source table", "source.table", "error", str(exc))
        return None
    columns = len(config.mapping) + 1
    found.add(
        "source table",
        "source.table",
        "ok",
        f"{source.table.name!r} has the key, the lead_id column and the {columns - 1} mapped "
        "columns",
    )
    _unique_key(config, engine, found)
    return source


def _unique_key(config: Config, engine: Engine, found: Validation) -> None:
    with translate_errors("checking the source table's key"), engine.connect() as connection:
        table = catalogue.resolve(connection, config.source.schema_, config.source.table)
        unique = table is not None and catalogue.key_is_unique(connection, table, config.source.key)
    if unique:
        found.add("source key", "source.key", "ok", f"{config.source.key!r} is unique")
    else:
        found.add(
            "source key",
            "source.key",
            "error",
            f"{config.source.key!r} is neither the primary key nor the only column of a "
            "unique constraint or index: rows sharing a key would overwrite each other",
        )


def _capture(config: Config, engine: Engine, found: Validation) -> bool:
    """Whether the connector's tables are there (and capture was checked)."""
    try:
        installation.check_ready(engine, config)
    except LsqSyncError as exc:
        found.add("capture", "mapping", "error", str(exc))
    else:
        found.add("capture", "mapping", "ok", "change capture is installed and matches the config")
    try:
        with translate_errors("checking the connector's tables"):
            return migrate.current_revision(engine) == migrate.head_revision()
    except LsqSyncError:
        return False


def _keys(config: Config, client: LeadSquaredClient, found: Validation) -> bool:
    """Whether the keys work; also checks the host is the account's own."""
    try:
        host = client.account_host()
    except FatalRunError as exc:
        found.add("keys", "leadsquared.access_key", "error", str(exc))
        return False
    except LeadSquaredError as exc:
        found.add("keys", "leadsquared.host", "error", str(exc))
        return False
    found.add("keys", "leadsquared.access_key", "ok", "LeadSquared accepts the keys")
    configured = _host_name(config.leadsquared.host)
    if host is None:
        found.add(
            "host", "leadsquared.host", "warning", "LeadSquared did not name the account's host"
        )
    elif _host_name(host) != configured:
        found.add(
            "host",
            "leadsquared.host",
            "error",
            f"the account's API host is {host!r}, not {configured!r}: set leadsquared.host to "
            "it (calls to another region's host fail or reach no account)",
        )
    else:
        found.add("host", "leadsquared.host", "ok", f"{configured!r} is the account's API host")
    return True


def _host_name(host: str) -> str:
    """The host (and port) of a URL or a bare host name, lower case."""
    text = host.strip()
    parsed = urlsplit(text if "://" in text else f"//{text}")
    return (parsed.netloc or text).lower().rstrip("/")


def _fields(
    config: Config,
    client: LeadSquaredClient,
    store: FieldList | None,
    clock: SystemClock,
    found: Validation,
) -> LeadFields | None:
    try:
        fields = parse_metadata(client.lead_fields())
    except (LeadSquaredError, MetadataError) as exc:
        found.add(
            "fields",
            "mapping",
            "warning",
            f"the account's lead fields could not be read ({exc}): values will be sent as "
            "the source spells them, unchecked",
        )
        return None
    if store is not None:  # kept as `init` keeps it, when the connector's tables exist
        store.save(fields, clock.now())
    for column, attribute in config.attributes.items():
        if attribute in fields:
            continue
        alike = fields.ignoring_case(attribute)
        hint = f"; did you mean {' or '.join(map(repr, alike))}?" if alike else ""
        found.add(
            "fields",
            f"mapping.{column}",
            "error",
            f"the account has no lead field {attribute!r}{hint}",
        )
    return fields


def _types(config: Config, source: SourceTable, fields: LeadFields, found: Validation) -> None:
    for column, attribute in config.attributes.items():
        lead_field = fields.get(attribute)
        if lead_field is None:
            continue
        kind = source.table.c[column].type
        sql = type(kind).__name__
        data_type = lead_field.kind
        if isinstance(kind, _MISFITS.get(data_type, ())):
            found.add(
                "types",
                f"mapping.{column}",
                "error",
                f"column {column!r} ({sql}) cannot hold a {data_type.value} value for {attribute}",
            )
        elif isinstance(kind, _FITS.get(data_type, ())) or data_type not in _FITS:
            found.add(
                "types", f"mapping.{column}", "ok", f"{sql} fits {attribute} ({data_type.value})"
            )
        else:
            found.add(
                "types",
                f"mapping.{column}",
                "warning",
                f"column {column!r} ({sql}) feeds {attribute}, a {data_type.value} field: "
                "each value is checked before it is sent, and one that does not fit is held "
                "back",
            )


def _sample(
    config: Config,
    source: SourceTable,
    fields: LeadFields,
    engine: Engine,
    found: Validation,
    *,
    sample_rows: int,
) -> None:
    columns = {attribute: column for column, attribute in config.attributes.items()}
    with translate_errors("reading a sample of the source table"), engine.connect() as connection:
        keys = [
            str(key)
            for key in connection.execute(
                sa.select(source.key_column).order_by(source.key_column).limit(sample_rows)
            ).scalars()
        ]
        rows = _readable(source, connection, keys)
    held: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = {}
    unreadable = 0
    for row in rows:
        if not isinstance(row, SourceRow):
            unreadable += 1
            continue
        _wire, refused = shape_in_zones(
            row.values,
            fields,
            truncate=config.truncated,
            zone=config.source.zone,
            in_utc=source.spelled_in_utc,
        )
        for attribute, refusal in refused.items():
            if refusal.rule.name == "UNKNOWN_ATTRIBUTE":
                continue  # reported once, as a mapping error
            where = (attribute, refusal.rule.name.lower())
            held[where] += 1
            if len(examples.setdefault(where, [])) < _EXAMPLES:
                examples[where].append(f"row {row.key}: {refusal.message}")
    for (attribute, rule), count in sorted(held.items()):
        found.add(
            "values",
            f"mapping.{columns[attribute]}",
            "warning",
            f"{count} of {len(rows)} sampled rows hold a value of {attribute} that pre-flight "
            f"would hold back ({rule})",
            examples[(attribute, rule)],
        )
    if unreadable:
        found.add(
            "values",
            "source.table",
            "warning",
            f"{unreadable} of {len(rows)} sampled rows cannot be read or sent as they are "
            "(a run holds them back; `lsq-sync status` names them)",
        )
    if not held and not unreadable:
        found.add(
            "values", "mapping", "ok", f"pre-flight would send every value of {len(rows)} rows"
        )


def _readable(source: SourceTable, connection: Any, keys: list[str]) -> list[Any]:
    """The sampled rows as a run reads them; a row that cannot be read at all (a stored
    value the driver refuses) counts as unreadable instead of ending the check."""
    try:
        return source.read(connection, keys) if keys else []
    except UnreadableRowsError:
        rows: list[Any] = []
        for key in keys:
            try:
                rows.extend(source.read(connection, [key]))
            except UnreadableRowsError as exc:
                rows.append(RowProblem(key, str(exc)))
        return rows
