"""Engines for the connector's database, and translation of driver errors at this boundary."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
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


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose SQLite transactions take the write lock up front, and whose PostgreSQL
    connections survive being closed while idle in the pool.

    SQLite transactions that read and then write can fail with "database is locked" when
    another writer got in between; taking the lock at BEGIN makes them wait their turn instead.
    It also means a change row's AUTOINCREMENT id orders it by commit, which ingest relies on.

    On PostgreSQL a DBA's `idle_session_timeout`, a proxy or a failover may close a pooled
    connection while it sits idle; the pre-ping at checkout replaces it instead of failing
    the run on its next query.
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
    return engine


def lock_session_engine(engine: Engine) -> Engine:
    """An engine for the run lock's own PostgreSQL session, on `engine`'s database.

    Not pooled: the session ends when the lock is released, and its settings (idle timeouts
    switched off) never reach another use.
    """
    options = _unless_in_url(LOCK_SESSION_OPTIONS, engine.url)
    return sa.create_engine(engine.url, poolclass=NullPool, connect_args=options)


def _unless_in_url(options: dict[str, Any], url: URL) -> dict[str, Any]:
    return {name: value for name, value in options.items() if name not in url.query}


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
