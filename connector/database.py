"""Engines for the connector's database, and translation of driver errors at this boundary."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from connector.errors import SourceDatabaseError

# libpq options for every PostgreSQL connection (a URL's own settings win). Keepalives and
# tcp_user_timeout (milliseconds of unacknowledged data) make a dead network or a vanished
# server an error within a minute, instead of a query that waits forever.
POOLED_CONNECTION_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
# The run lock's session: it is the lock, so its loss must be noticed within seconds.
LOCK_SESSION_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "application_name": "lsq-sync run lock",
}
# The server's side of the same, set in each session: left to the kernel's defaults, the
# server notices a client whose host died (power, network) only after two hours, and until
# then keeps its session, with the run lock or the row locks of a transaction left open.
POOLED_SERVER_KEEPALIVES: dict[str, int] = {
    "tcp_keepalives_idle": 30,
    "tcp_keepalives_interval": 10,
    "tcp_keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
LOCK_SESSION_SERVER_KEEPALIVES: dict[str, int] = {
    "tcp_keepalives_idle": 5,
    "tcp_keepalives_interval": 2,
    "tcp_keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


# How PostgreSQL spells a key as text, whatever a session's own settings: the triggers record
# keys in it (their functions SET these) and the connector reads them back in it.
KEY_SPELLING: dict[str, str] = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


def spell_keys_as_capture_does(connection: sa.Connection) -> None:
    """For the rest of this transaction (PostgreSQL), spell keys as the triggers do."""
    if connection.dialect.name != "postgresql":
        return
    calls = ", ".join(["set_config(%s, %s, true)"] * len(KEY_SPELLING))
    parameters = [item for pair in KEY_SPELLING.items() for item in pair]
    connection.exec_driver_sql(f"SELECT {calls}", tuple(parameters))


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose SQLite transactions take the write lock up front, and whose PostgreSQL
    connections survive being closed while idle in the pool.

    SQLite transactions that read and then write can fail with "database is locked" when
    another writer got in between; taking the lock at BEGIN makes them wait their turn instead.
    It also means a change row's AUTOINCREMENT id orders it by commit, which ingest relies on.

    On PostgreSQL a DBA's `idle_session_timeout`, a proxy or a failover may close a pooled
    connection while it sits idle; the pre-ping at checkout replaces it instead of failing
    the run on its next query. The server keeps its side of each session alive too: a client
    whose host died releases its locks within about a minute, not the kernel's two hours.
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        kwargs["connect_args"] = {
            **_unless_in_url(POOLED_CONNECTION_OPTIONS, parsed),
            **kwargs.get("connect_args", {}),
        }
    engine = sa.create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        _serialise_sqlite_writers(engine)
    else:
        _keep_alive_on_the_server(engine, POOLED_SERVER_KEEPALIVES)
    return engine


def lock_session_engine(engine: Engine) -> Engine:
    """An engine for the run lock's own PostgreSQL session, on `engine`'s database.

    Not pooled: the session ends when the lock is released, and its settings (idle timeouts
    switched off) never reach another use.
    """
    options = _unless_in_url(LOCK_SESSION_OPTIONS, engine.url)
    lock_engine = sa.create_engine(engine.url, poolclass=NullPool, connect_args=options)
    _keep_alive_on_the_server(lock_engine, LOCK_SESSION_SERVER_KEEPALIVES)
    return lock_engine


def wake_session_engine(engine: Engine) -> Engine:
    """An engine for the daemon's LISTEN session (PostgreSQL), on `engine`'s database.

    Not pooled: the session lives as long as the daemon listens, and its loss (a server
    restart, a terminated backend) is noticed by the listener itself, which opens another.
    """
    options = _unless_in_url(
        {**POOLED_CONNECTION_OPTIONS, "application_name": "lsq-sync wake-up"}, engine.url
    )
    wake_engine = sa.create_engine(engine.url, poolclass=NullPool, connect_args=options)
    _keep_alive_on_the_server(wake_engine, POOLED_SERVER_KEEPALIVES)
    return wake_engine


def _unless_in_url(options: dict[str, Any], url: URL) -> dict[str, Any]:
    return {name: value for name, value in options.items() if name not in url.query}


def _keep_alive_on_the_server(engine: Engine, keepalives: dict[str, int]) -> None:
    """Set the server's keepalives in each new session, unless the URL's `options` sets them.

    Set once connected rather than as startup options, which some poolers (PgBouncer) refuse.
    A session over a Unix socket accepts them and ignores them.
    """
    options = str(engine.url.query.get("options", ""))
    settings = {name: value for name, value in keepalives.items() if name not in options}

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        wanted = dict(settings)
        if dbapi_connection.info.server_version < 120000:
            wanted.pop("tcp_user_timeout", None)  # PostgreSQL 12 added it
        if not wanted:
            return
        parameters: list[str] = []
        for name, value in wanted.items():
            parameters += [name, str(value)]
        calls = ", ".join(["set_config(%s, %s, false)"] * len(wanted))
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SELECT {calls}", parameters)
        dbapi_connection.commit()  # a rollback would undo them


def _serialise_sqlite_writers(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # In WAL mode NORMAL skips the fsync per commit and still survives any process crash;
        # an OS crash may undo the last commits, and everything the connector writes is redone
        # from the change rows or re-sent (Lead.Update sets absolute values). A commit that
        # waits on the disk would also delay the call whose rate-limit slot it records.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(engine_or_connection: Engine | sa.Connection) -> bool:
    return engine_or_connection.dialect.name == "postgresql"


def insert(connection: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that can take ON CONFLICT, in the connection's dialect."""
    return (postgresql.insert if is_postgres(connection) else sqlite.insert)(table)


def upsert(
    connection: sa.Connection, table: sa.Table, values: dict[str, Any], keys: list[str]
) -> None:
    """Insert the row, or update its other columns where its `keys` are taken."""
    statement = insert(connection, table).values(values)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=keys,
            set_={k: statement.excluded[k] for k in values if k not in keys},
        )
    )


def among(
    column: sa.ColumnElement[Any], values: Sequence[Any], connection: sa.Connection
) -> sa.ColumnElement[bool]:
    """`column IN values`; on PostgreSQL one array parameter, parsed once, not thousands."""
    if connection.dialect.name == "postgresql":
        return column == sa.any_(
            sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        )
    return column.in_(values)


@contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Turn driver errors into SourceDatabaseError, keeping the driver's own first line."""
    try:
        yield
    except SQLAlchemyError as exc:
        original = getattr(exc, "orig", None) or exc
        first_line = str(original).strip().splitlines()[0] if str(original).strip() else ""
        raise SourceDatabaseError(
            f"database error while {doing}: {type(original).__name__}: {first_line}"
        ) from exc
