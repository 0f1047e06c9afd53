"""One run at a time per connector, across processes: cron, a manual run, a daemon.

The lock dies with its holder (a PostgreSQL session, or an open file on SQLite), so a run
killed with -9 never blocks the next one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def _advisory_key(scope: str, connector: str) -> int:
    digest = hashlib.sha256(f"lsq-sync:{scope}:{connector}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def run_lock(engine: Engine, connector: str) -> Iterator[bool]:
    """Yields True when this process holds the lock, False when another run holds it."""
    if engine.dialect.name == "postgresql":
        with _postgres_lock(engine, connector) as held:
            yield held
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True  # nothing else can see this database
        return
    with _file_lock(f"{database}.lsq-sync-{connector}.lock") as held:
        yield held


@contextmanager
def _postgres_lock(engine: Engine, connector: str) -> Iterator[bool]:
    with engine.connect() as connection:
        # Advisory locks span the database; the connector's tables live in one schema of it.
        scope = connection.execute(
            sa.select(sa.func.current_database() + "." + sa.func.current_schema())
        ).scalar_one()
        key = _advisory_key(scope, connector)
        held = bool(connection.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one())
        connection.commit()
        try:
            yield held
        finally:
            if held:
                connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                connection.commit()


@contextmanager
def _file_lock(path: str) -> Iterator[bool]:
    handle: IO[bytes] = open(path, "ab")  # noqa: SIM115 (held open for the lock's life)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        yield True
    finally:
        handle.close()
