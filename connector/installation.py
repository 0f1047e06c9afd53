"""What `init` installed, and what has become of it since.

- The install record (`lsq_sync_capture`): which table a connector's triggers sit on, so that
  a second config with the same name is refused, and `uninstall` finds the triggers without
  trusting the config.
- The errors the PostgreSQL triggers noted instead of failing the application's statement
  (`lsq_sync_capture_error`), which `init` clears.
- The checks a run makes before it trusts capture: the configured columns still exist, the
  triggers are still there and enabled, and no statement went uncompared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from connector import capture, catalogue, migrate
from connector.capture import Names
from connector.catalogue import TableRef
from connector.config import Config
from connector.database import translate_errors, upsert
from connector.errors import CaptureError, ConfigError, LsqSyncError
from connector.schema import capture_error, capture_state

# The signature of an install that `uninstall` removed: a run refuses it like any other
# mismatch, and `init` may install the name on another table.
UNINSTALLED = "uninstalled"

_QUOTED_PAIR = re.compile(r'^"((?:[^"]|"")*)"\."((?:[^"]|"")*)"$')


@dataclass(frozen=True)
class Install:
    """One connector's row of `lsq_sync_capture`."""

    stored_table: str  # as stored: quoted "schema"."table", or a bare name from before
    table: TableRef | None  # None when a bare name from before no longer resolves
    signature: str

    @property
    def removed(self) -> bool:
        return self.signature == UNINSTALLED

    def describe(self) -> str:
        return str(self.table) if self.table else self.stored_table


def stored_name(connection: Connection, table: TableRef) -> str:
    """How `init` records the table: both parts quoted, so the record parses back exactly."""
    return table.regclass


def save(
    connection: Connection, connector_name: str, table: TableRef, signature: str, now: datetime
) -> None:
    """Record what `init` installed: on which table, and the signature of the config."""
    upsert(
        connection,
        capture_state,
        {
            "connector": connector_name,
            "source_table": stored_name(connection, table),
            "signature": signature,
            "installed_at": now,
        },
        ["connector"],
    )


def signature(connection: Connection, connector_name: str) -> str | None:
    """The signature `init` recorded (UNINSTALLED after `uninstall`); None before any init."""
    return connection.execute(
        sa.select(capture_state.c.signature).where(capture_state.c.connector == connector_name)
    ).scalar_one_or_none()


def load(connection: Connection, connector_name: str) -> Install | None:
    row = connection.execute(
        sa.select(capture_state.c.source_table, capture_state.c.signature).where(
            capture_state.c.connector == connector_name
        )
    ).first()
    if row is None:
        return None
    return Install(row.source_table, _parse(connection, row.source_table), row.signature)


def _parse(connection: Connection, stored: str) -> TableRef | None:
    quoted = _QUOTED_PAIR.match(stored)
    if quoted:
        schema, name = (part.replace('""', '"') for part in quoted.groups())
        return TableRef(schema, name)
    # Versions before 2 stored the name as the config gave it, schema-qualified only when the
    # config named a schema: resolve it as that config's run did.
    found = catalogue.resolve(connection, None, stored)
    if found is None and "." in stored:
        schema, name = stored.split(".", 1)
        found = catalogue.resolve(connection, schema, name)
    return found


def fit_for_capture(connection: Connection, config: Config, config_source: str) -> TableRef:
    """The configured source table, as the catalogue names it, once `init` may install on it:
    its key is unique, and no other table holds this connector's name."""
    source = config.source
    table = catalogue.resolve(connection, source.schema_, source.table)
    if table is None:  # reflected a moment ago: dropped since
        raise ConfigError.at(config_source, ("source", "table"), f"table {source.table!r} is gone")
    refuse_another_table(connection, config, table, config_source)
    if not catalogue.key_is_unique(connection, table, source.key):
        raise ConfigError.at(
            config_source,
            ("source", "key"),
            f"column {source.key!r} of table {str(table)!r} is neither its "
            "primary key nor the only column of a unique constraint or unique index (not "
            "partial): rows sharing a key would overwrite each other. Add one, or set "
            "`source.key` to a column that has one",
        )
    return table


def refuse_another_table(
    connection: Connection, config: Config, table: TableRef, config_source: str
) -> None:
    """`init` must not install a connector name that is already installed on another table:
    both would consume one change table, and look each other's keys up in the wrong table."""
    install = load(connection, config.name)
    if install is None or install.removed or install.table == table:
        return
    names = Names(config.name)
    if set(names.triggers) <= catalogue.triggers(connection, table).keys():
        return  # this connector's own triggers, on its table renamed since
    raise ConfigError.at(
        config_source,
        ("name",),
        f"connector {config.name!r} is already installed on table "
        f"{install.describe()!r}, not {str(table)!r}; two connectors with one name would "
        "consume each other's changes. Give this config a `name` of its own, or, if the "
        f"install on {install.describe()!r} is no longer wanted, remove it first with "
        "`lsq-sync uninstall` (with `--drop-state` to also delete its sync state)",
    )


def capture_lapsed(connection: Connection, connector_name: str, table: TableRef) -> bool:
    """Whether the capture an earlier `init` installed has stopped since: removed by
    `uninstall`, or a trigger gone (with its table, perhaps) or disabled. Whatever was written
    meanwhile was not captured, so `init` queues every row again.

    A trigger merely re-enabled without ALWAYS (which a run refuses) is not counted: it is
    also how an install by lsq-sync before version 2 looks, and a full queue on every upgrade
    is the price that would buy."""
    install = load(connection, connector_name)
    if install is None:
        return False
    if install.removed:
        return True
    present = catalogue.triggers(connection, table)
    return any(
        name not in present or present[name].enabled == "D"
        for name in Names(connector_name).triggers
    )


# -- errors the triggers noted --------------------------------------------------------------


@dataclass(frozen=True)
class NotedErrors:
    statements: int
    keys_lost: bool  # some statement's keys could not be read: every row must be queued
    first_at: datetime
    last_message: str


def last_error_id(connection: Connection, connector_name: str) -> int:
    """The newest error the triggers noted for this connector so far; 0 when none."""
    newest: int | None = connection.execute(
        sa.select(sa.func.max(capture_error.c.error_id)).where(
            capture_error.c.connector == connector_name
        )
    ).scalar_one()
    return newest or 0


def noted_errors(
    connection: Connection, connector_name: str, through: int | None = None
) -> NotedErrors | None:
    """A summary of the errors noted for this connector (those up to id `through`, if given)."""
    mine = _errors_of(connector_name, through)
    summary = connection.execute(
        sa.select(
            sa.func.count(),
            sa.func.max(sa.case((capture_error.c.keys_lost, 1), else_=0)),
            sa.func.min(capture_error.c.noted_at),
        ).where(mine)
    ).one()
    count, keys_lost, first_at = summary
    if not count:
        return None
    last = connection.execute(
        sa.select(capture_error.c.message)
        .where(mine)
        .order_by(capture_error.c.error_id.desc())
        .limit(1)
    ).scalar_one()
    return NotedErrors(count, bool(keys_lost), first_at, last)


def clear_errors(connection: Connection, connector_name: str, through: int) -> NotedErrors | None:
    """Delete the connector's noted errors up to id `through`; returns what they were."""
    noted = noted_errors(connection, connector_name, through)
    if noted is not None:
        connection.execute(sa.delete(capture_error).where(_errors_of(connector_name, through)))
    return noted


def _errors_of(connector_name: str, through: int | None) -> sa.ColumnElement[bool]:
    mine = capture_error.c.connector == connector_name
    return mine if through is None else sa.and_(mine, capture_error.c.error_id <= through)


# -- the checks before a run ------------------------------------------------------------------

_NOT_CAPTURED = (
    "run `lsq-sync init`, then `lsq-sync backfill`: changes made meanwhile were not captured"
)


def problems(connection: Connection, config: Config) -> list[str]:
    """Everything that makes capture untrustworthy now, one sentence each; empty when none."""
    source = config.source
    table = catalogue.resolve(connection, source.schema_, source.table)
    if table is None:
        where = f"{source.schema_}.{source.table}" if source.schema_ else source.table
        return [
            f"table `{where}` no longer exists: if it was renamed, update `source.table` and "
            "run `lsq-sync init`"
        ]
    present = set(catalogue.columns(connection, table))
    found = [
        f"{role} `{column}` no longer exists in table `{table}`: {remedy} and run `lsq-sync init`"
        for role, column, remedy in _configured_columns(config)
        if column not in present
    ]
    found += _trigger_problems(connection, config.name, table)
    if not found:
        noted = noted_errors(connection, config.name)
        if noted is not None:
            found.append(_describe_errors(noted, table))
    return found


def _configured_columns(config: Config) -> list[tuple[str, str, str]]:
    return [
        ("key column", config.source.key, "update `source.key`"),
        ("lead id column", config.lead_id.column, "update `lead_id.column`"),
        *(("mapped column", column, "update the mapping") for column in config.mapping),
    ]


def _trigger_problems(connection: Connection, connector_name: str, table: TableRef) -> list[str]:
    names = Names(connector_name)
    present = catalogue.triggers(connection, table)
    found: list[str] = []
    expected = zip(names.triggers, names.functions, strict=True)
    for trigger_name, function_name in expected:
        trigger = present.get(trigger_name)
        if trigger is None:
            found.append(
                f"change capture on table `{table}` has vanished (trigger `{trigger_name}` is "
                f"missing: the table was recreated or the trigger dropped): {_NOT_CAPTURED}"
            )
        elif trigger.function not in (None, f"{table.schema}.{function_name}"):
            found.append(
                f"trigger `{trigger_name}` on table `{table}` calls `{trigger.function}`, not "
                f"the connector's `{function_name}`: {_NOT_CAPTURED}"
            )
        elif trigger.enabled == "D":
            found.append(
                f"trigger `{trigger_name}` on table `{table}` is disabled: {_NOT_CAPTURED}"
            )
        elif trigger.enabled != "A":
            # init enables them ALWAYS; "O" is what ENABLE TRIGGER after a DISABLE leaves.
            found.append(
                f"trigger `{trigger_name}` on table `{table}` was disabled or altered since "
                f"`lsq-sync init` (it no longer fires for every write): {_NOT_CAPTURED}"
            )
    return found


def _describe_errors(noted: NotedErrors, table: TableRef) -> str:
    queued = (
        "`init` then queues every row, since some keys could not be read"
        if noted.keys_lost
        else "the rows those statements wrote are kept and pushed after `init`"
    )
    return (
        f"change capture on table `{table}` could not compare the rows of {noted.statements} "
        f"statement(s) since {noted.first_at:%Y-%m-%d %H:%M:%S} UTC: {noted.last_message}. "
        f"Fix the table or the config and run `lsq-sync init`; {queued}"
    )


def check_ready(engine: Engine, config: Config) -> None:
    """Refuse a run on missing or old tables, or on capture that no longer matches `config`."""
    check_tables(engine)
    check_capture(engine, config)


def check_tables(engine: Engine) -> None:
    """Refuse a run on missing or old tables."""
    with translate_errors("checking the connector's tables"):
        current = migrate.current_revision(engine)
    if current != migrate.head_revision():
        raise LsqSyncError(
            "the connector's tables are missing or out of date: run `lsq-sync init` first"
        )


def check_capture(engine: Engine, config: Config) -> None:
    """Refuse a run on capture that is missing or no longer matches `config`."""
    with translate_errors("checking change capture"), engine.connect() as connection:
        installed = signature(connection, config.name)
    if installed is None:
        raise LsqSyncError("change capture is not installed: run `lsq-sync init` first")
    if installed == UNINSTALLED:
        raise LsqSyncError(
            "change capture was removed by `lsq-sync uninstall`: run `lsq-sync init` to "
            "install it again, then `lsq-sync backfill`"
        )
    if installed != capture.signature(config):
        raise LsqSyncError(
            "the source table, key, lead_id column or mapping changed since `lsq-sync init` "
            "installed change capture, or lsq-sync was upgraded: run `lsq-sync init` again "
            "(then `lsq-sync backfill` if you mapped new columns)"
        )
    with translate_errors("checking change capture"), engine.connect() as connection:
        found = problems(connection, config)
    if found:
        raise CaptureError("\n".join(found))
