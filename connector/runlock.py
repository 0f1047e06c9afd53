"""One run at a time per connector, across processes and hosts; fencing for a run that loses
its lock, so that no update is sent twice because of it.

The protocol, in the order a run meets it:

1. **The lock.** On PostgreSQL, a session advisory lock on a connection of the run's own. That
   session switches its idle timeouts off (a DBA's `idle_session_timeout` would otherwise end
   it between two heartbeats) and uses TCP keepalives and `tcp_user_timeout`, so that a dead
   network ends it too, and is noticed. On SQLite, an exclusive `flock` on a file beside the
   resolved path of the file SQLite opened (a symlink, a relative path or a `file:` URI
   reaches the same lock file), which must still be the file at that path (a lock file
   deleted and made again is a new lock).
   Either lock dies with its holder, so a run killed with -9 never blocks the next one. A run
   that cannot take the lock is skipped.
2. **The lease.** Holding the lock, the run takes the connector's row of `lsq_sync_lease`. A
   fresh heartbeat there means the previous holder may still be alive, finishing the calls it
   had in flight when it lost its lock: the run waits until that holder releases the lease or
   its heartbeat goes stale (`stale_seconds`: it died), and stops waiting when asked to stop.
   Then it bumps the epoch, which is its fencing token from then on.
3. **The watchdog.** Every `heartbeat_seconds` a thread refreshes the heartbeat, through the
   lock's own session on PostgreSQL (so it also proves the lock is still held), after checking
   the lock file on SQLite. When that fails, or the epoch has moved, the lock is lost: no call
   starts any more, the calls in flight finish and are recorded, and the run ends with
   RunLockLostError. While it drains, it keeps the heartbeat fresh through another connection
   (for at most `drain_seconds`), so that the run which took the lock waits for it.
4. **Fencing.** Every write of run state checks, in its own transaction, that the epoch is
   still the run's (`Lease.check`); on PostgreSQL it takes the lease row `FOR KEY SHARE`, which
   a takeover's `FOR UPDATE` waits for, while the heartbeat's plain UPDATE does not. Every call
   checks the same in its rate-limit slot's transaction, after a local check that the lock is
   not known lost and that a heartbeat went through lately (`Lease.call_delay`).
5. **Release.** At the end the run sets the heartbeat to NULL, so the next run goes on at once,
   and ends the lock.

Heartbeats are timed by the database's clock on PostgreSQL (hosts may disagree), by the
injected clock on SQLite.

What this guarantees: a run that loses its lock while it can still reach the database starts
no call once it knows (within about `heartbeat_seconds`), and the run that takes over calls
nothing until the first has drained and recorded its calls. What it cannot: a holder cut off
from the database (or stalled) for longer than `stale_seconds` is taken over; its calls still
in flight then may be sent again by the new holder, at most `max_in_flight` of them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.clock import Clock
from connector.database import lock_session_engine, translate_errors
from connector.errors import LsqSyncError, RunLockLostError
from connector.schema import lease

log = logging.getLogger(__name__)

# A lock file replaced this many times in a row while being locked is being tampered with.
_LOCK_FILE_TRIES = 5


@dataclass(frozen=True)
class LeaseTiming:
    """How often the holder proves it is alive, and when a silent holder counts as gone.

    A holder starts no call when its last heartbeat went through more than half of
    `stale_seconds` ago, so that it has stopped well before anyone may take over.
    """

    heartbeat_seconds: float = 1.0
    stale_seconds: float = 5.0


@dataclass(frozen=True)
class NotHeld:
    """Why this run does not hold the lock."""

    reason: str


class Fence(Protocol):
    """What the connector's tables ask before they write run state."""

    def ensure_held(self) -> None:
        """Raise RunLockLostError when the run knows it lost its lock (no query)."""
        ...

    def check(self, connection: Connection) -> None:
        """Raise RunLockLostError unless the run's epoch is still current, in this
        transaction (which, on PostgreSQL, a takeover then waits for)."""
        ...

    def epoch_column(self) -> sa.ColumnElement[Any]:
        """`check` as a column, to fold into a query the transaction makes anyway; pass
        what it reads to `verify`."""
        ...

    def verify(self, epoch: int | None) -> None:
        """Raise RunLockLostError unless `epoch`, read by `epoch_column`, is the run's."""
        ...


class Unfenced:
    """Outside a run (`init`, `retry`, tests of the tables alone): there is nothing to check."""

    def ensure_held(self) -> None:
        return None

    def check(self, connection: Connection) -> None:
        return None

    def epoch_column(self) -> sa.ColumnElement[Any]:
        return sa.null()

    def verify(self, epoch: int | None) -> None:
        return None


UNFENCED = Unfenced()


class FenceHolder:
    """The fence every table of run state checks, shared by them all: the run's lease while a
    run holds the run lock (`current`), UNFENCED otherwise."""

    def __init__(self) -> None:
        self.current: Fence = UNFENCED

    def ensure_held(self) -> None:
        self.current.ensure_held()

    def check(self, connection: Connection) -> None:
        self.current.check(connection)

    def epoch_column(self) -> sa.ColumnElement[Any]:
        return self.current.epoch_column()

    def verify(self, epoch: int | None) -> None:
        self.current.verify(epoch)


def lock_session_scope(connection: Connection) -> str:
    """Ready a session whose life is an advisory lock; the scope (database and schema) its
    keys are made from."""
    # The session is the lock: a DBA's idle timeouts must not end it between heartbeats.
    connection.exec_driver_sql("SET idle_in_transaction_session_timeout = 0")
    if (connection.dialect.server_version_info or (0,)) >= (14,):
        connection.exec_driver_sql("SET idle_session_timeout = 0")
    # Advisory locks span the database; the connector's tables live in one schema of it.
    scope: str = connection.execute(
        sa.select(sa.func.current_database() + "." + sa.func.current_schema())
    ).scalar_one()
    return scope


def advisory_key(scope: str, connector: str) -> int:
    """The connector's advisory lock key (`pg_locks` shows it split into classid and objid)."""
    digest = hashlib.sha256(f"lsq-sync:{scope}:{connector}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_file_path(database: str, connector: str) -> str:
    """The lock file of a SQLite database, by its resolved path: however the path is written
    (relative, through a symlink), one database has one lock file."""
    return f"{os.path.realpath(database)}.lsq-sync-{connector}.lock"


def _database_file(engine: Engine) -> str:
    """The file SQLite opened as the main database ('' in memory). Asked of SQLite, not read
    from the URL: a `file:` URI, or a `..` after a symlinked directory (which SQLite drops
    with the name before it), would name another file than the one SQLite opens."""
    with translate_errors("taking the run lock"), engine.connect() as connection:
        databases = connection.exec_driver_sql("PRAGMA database_list").all()
    return next(str(file) for _, name, file in databases if name == "main")


class Lease:
    """The lease of the run holding the lock: its epoch, and whether it still holds it.

    Thread-safe: the watchdog updates it while every push worker reads it.
    """

    def __init__(
        self,
        engine: Engine,
        connector: str,
        epoch: int,
        *,
        clock: Clock,
        timing: LeaseTiming,
        confirmed_at: float,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.epoch = epoch
        self._clock = clock
        self._timing = timing
        self._postgres = engine.dialect.name == "postgresql"
        self._confirmed_at = confirmed_at
        self._doubted_at = -math.inf
        self._lost = threading.Event()
        self._cause = ""
        self._lost_at = 0.0
        self._state = threading.Lock()
        # Held by the watchdog while it beats, so that retiring waits for a beat in progress.
        self._beating = threading.Lock()
        self.retired = False

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def lose(self, cause: str) -> None:
        """Mark the lock lost (the first cause is kept); every later call is refused."""
        with self._state:
            if self._lost.is_set():
                return
            self._cause = cause
            self._lost_at = self._clock.monotonic()
            self._lost.set()
        # INFO: the run's own error says it, once the calls in flight are done.
        log.info(
            "lost the run lock; starting no more calls",
            extra={"connector": self.connector, "cause": cause, "epoch": self.epoch},
        )

    def retire(self) -> None:
        """The lease row is about to be deleted on purpose (`uninstall --drop-state`): nothing
        is left to beat or to release. Once this returns, no heartbeat is under way or to come:
        one waiting on the deleted row would deadlock with the table's drop."""
        with self._beating:
            self.retired = True
        self.lose("the connector's state was removed")

    @contextmanager
    def beating(self) -> Iterator[bool]:
        """Held while the watchdog beats; yields False once the lease is retired."""
        with self._beating:
            yield not self.retired

    def lost_for(self) -> float:
        """Seconds since the lock was found lost."""
        return self._clock.monotonic() - self._lost_at

    def doubt(self) -> None:
        """Something suggests the database went away: start no call until a heartbeat
        confirms the lock again."""
        with self._state:
            self._doubted_at = self._clock.monotonic()
            self._confirmed_at = -math.inf

    def confirm(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` (monotonic) went through with the epoch unchanged.

        One sent before the latest doubt proves nothing about what caused it.
        """
        with self._state:
            if sent_at >= self._doubted_at:
                self._confirmed_at = max(self._confirmed_at, sent_at)

    def ensure_held(self) -> None:
        if self._lost.is_set():
            raise RunLockLostError(self.connector, self._cause)

    def check(self, connection: Connection) -> None:
        self.verify(connection.execute(self._epoch_query()).scalar_one_or_none())

    def epoch_column(self) -> sa.ColumnElement[Any]:
        return self._epoch_query().scalar_subquery()

    def verify(self, epoch: int | None) -> None:
        if epoch != self.epoch:
            cause = f"another run took over the connector's lease (epoch {epoch})"
            self.lose(cause)
            raise RunLockLostError(self.connector, cause)

    def _epoch_query(self) -> sa.Select[int]:
        query = sa.select(lease.c.epoch).where(lease.c.connector == self.connector)
        if self._postgres:
            # Unlike FOR SHARE, this lets the holder's own heartbeat (an UPDATE of no key
            # column) through, and still holds back a takeover's FOR UPDATE.
            query = query.with_for_update(read=True, key_share=True)
        return query

    def call_delay(self, connection: Connection) -> float:
        """Seconds a call must wait before it may start (0: now), checked in the call's
        rate-limit slot transaction; raises RunLockLostError when it may never start."""
        self.ensure_held()
        with self._state:
            unconfirmed_for = self._clock.monotonic() - self._confirmed_at
        if unconfirmed_for > self._timing.stale_seconds / 2:
            # In doubt, or the watchdog is slow (a loaded host) or stuck on a dead network:
            # wait for it to confirm the lock, or to find it lost.
            return self._timing.heartbeat_seconds / 10
        self.check(connection)
        return 0.0


class _LockLost(Exception):
    """Raised by a lock session's heartbeat when the lock is gone; carries the cause."""


class _Session(Protocol):
    """A held lock: where the lease is taken, and how a heartbeat proves the lock is held."""

    def transaction(self) -> AbstractContextManager[Connection]: ...

    def beat(self, heartbeat: sa.Update) -> bool:
        """Run the heartbeat; False if it could not run now. Raises _LockLost."""
        ...


class _PostgresSession:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.connection.begin():
            yield self.connection

    def beat(self, heartbeat: sa.Update) -> bool:
        try:
            with self.connection.begin():
                beaten = self.connection.execute(heartbeat).rowcount
        except SQLAlchemyError as exc:
            raise _LockLost(f"its database session ended: {_first_line(exc)}") from exc
        if not beaten:
            raise _LockLost("another run took over the connector's lease")
        return True


class _FileSession:
    def __init__(self, engine: Engine, path: str | None, handle: IO[bytes] | None) -> None:
        self.engine = engine
        self.path = path
        self.handle = handle

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def beat(self, heartbeat: sa.Update) -> bool:
        if (
            self.path is not None
            and self.handle is not None
            and not _is_file_at(self.handle, self.path)
        ):
            raise _LockLost(f"the lock file {self.path} was deleted or replaced")
        try:
            with self.engine.begin() as connection:
                beaten = connection.execute(heartbeat).rowcount
        except SQLAlchemyError as exc:
            # Not the lock itself: a busy database. The beat after this one may go through.
            log.warning("run lock heartbeat failed", extra={"error": _first_line(exc)})
            return False
        if not beaten:
            raise _LockLost("another run took over the connector's lease")
        return True


class RunLock:
    """The run lock and lease of one connector; see the module's docstring."""

    def __init__(
        self,
        engine: Engine,
        connector: str,
        *,
        clock: Clock,
        stop: threading.Event,
        timing: LeaseTiming | None = None,
        drain_seconds: float = 70.0,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.clock = clock
        self.stop = stop
        self.timing = timing or LeaseTiming()
        self.drain_seconds = drain_seconds
        self._postgres = engine.dialect.name == "postgresql"

    @contextmanager
    def hold(self) -> Iterator[Lease | NotHeld]:
        """Yields the Lease once this run holds the lock and the previous holder is done;
        NotHeld when another run holds the lock, or stopping cut the wait short."""
        with self._session() as session:
            if session is None:
                yield NotHeld("another run of this connector is in progress")
                return
            taken = self._take_lease(session)
            if taken is None:
                yield NotHeld("stopped while waiting for the previous run to finish its calls")
                return
            try:
                with self._watchdog(session, taken):
                    yield taken
            finally:
                self._release(taken)

    @contextmanager
    def held_without_lease(self) -> Iterator[NotHeld | None]:
        """The lock alone, taking no lease: for a look that must write nothing (`run
        --dry-run`). Yields None while held; NotHeld when another run holds the lock, or the
        previous holder's heartbeat is still fresh (it may still be draining its calls)."""
        with self._session() as session:
            if session is None:
                yield NotHeld("another run of this connector is in progress")
                return
            with translate_errors("taking the run lock"), self.engine.connect() as connection:
                heartbeat = connection.execute(
                    sa.select(lease.c.heartbeat_at).where(lease.c.connector == self.connector)
                ).scalar_one_or_none()
                now = self._now(connection)
                connection.rollback()
            if heartbeat is not None:
                age = (now - heartbeat).total_seconds()
                if -self.timing.stale_seconds < age < self.timing.stale_seconds:
                    yield NotHeld("the previous run is still finishing its calls in flight")
                    return
            yield None

    # -- the lock ---------------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[_Session | None]:
        if self._postgres:
            with self._postgres_session() as session:
                yield session
            return
        database = _database_file(self.engine)
        if not database:
            yield _FileSession(self.engine, None, None)  # in memory: no other process sees it
            return
        path = lock_file_path(database, self.connector)
        handle = _lock_file(path)
        if handle is None:
            yield None
            return
        try:
            yield _FileSession(self.engine, path, handle)
        finally:
            handle.close()

    @contextmanager
    def _postgres_session(self) -> Iterator[_Session | None]:
        engine = lock_session_engine(self.engine)
        try:
            with translate_errors("taking the run lock"):
                connection = engine.connect()
            try:
                with translate_errors("taking the run lock"):
                    held = self._advisory_lock(connection)
                yield _PostgresSession(connection) if held else None
            finally:
                # Ending the session releases the advisory lock, whatever state it is in.
                with suppress(SQLAlchemyError):
                    connection.close()
        finally:
            engine.dispose()

    def _advisory_lock(self, connection: Connection) -> bool:
        key = advisory_key(lock_session_scope(connection), self.connector)
        held = bool(connection.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one())
        connection.commit()
        return held

    # -- the lease --------------------------------------------------------------------------

    def _take_lease(self, session: _Session) -> Lease | None:
        waiting = False
        while True:
            sent_at = self.clock.monotonic()
            with translate_errors("taking the run lock"), session.transaction() as connection:
                epoch, heartbeat_age = self._try_take(connection)
            if epoch is not None:
                if waiting:
                    log.info("the previous run is done; this run goes on")
                return Lease(
                    self.engine,
                    self.connector,
                    epoch,
                    clock=self.clock,
                    timing=self.timing,
                    confirmed_at=sent_at,
                )
            if not waiting:
                waiting = True
                log.warning(
                    "waiting for the previous run to finish its calls in flight (its heartbeat "
                    "is fresh: it may have lost the run lock and still be draining)",
                    extra={"connector": self.connector, "heartbeat_age": heartbeat_age},
                )
            if not self.clock.sleep(self.timing.heartbeat_seconds):
                return None

    def _try_take(self, connection: Connection) -> tuple[int | None, float]:
        """(the new epoch, 0) when the lease is now ours; (None, the holder's heartbeat age)
        while the previous holder's heartbeat is fresh."""
        insert = (postgresql.insert if self._postgres else sqlite.insert)(lease)
        connection.execute(
            insert.values(connector=self.connector, epoch=0).on_conflict_do_nothing()
        )
        query = sa.select(lease.c.epoch, lease.c.heartbeat_at).where(
            lease.c.connector == self.connector
        )
        if self._postgres:
            # Waits for every write still checking the old epoch, and holds new ones back.
            query = query.with_for_update()
        epoch, heartbeat_at = connection.execute(query).one()
        if heartbeat_at is not None:
            age = (self._now(connection) - heartbeat_at).total_seconds()
            # A heartbeat far in the future means the clock stepped back since it was beaten;
            # waiting for it to go stale could take hours.
            if -self.timing.stale_seconds < age < self.timing.stale_seconds:
                return None, age
        connection.execute(
            sa.update(lease)
            .where(lease.c.connector == self.connector)
            .values(epoch=epoch + 1, heartbeat_at=self._now_value())
        )
        return epoch + 1, 0.0

    def _heartbeat(self, epoch: int) -> sa.Update:
        return (
            sa.update(lease)
            .where(lease.c.connector == self.connector, lease.c.epoch == epoch)
            .values(heartbeat_at=self._now_value())
        )

    def _release(self, taken: Lease) -> None:
        """Tell the next run it need not wait (best effort: else it waits until stale)."""
        if taken.retired:
            return
        released = (
            sa.update(lease)
            .where(lease.c.connector == self.connector, lease.c.epoch == taken.epoch)
            .values(heartbeat_at=None)
        )
        try:
            with self.engine.begin() as connection:
                connection.execute(released)
        except SQLAlchemyError as exc:
            log.warning(
                "could not release the run lease; the next run waits until it is stale",
                extra={"error": _first_line(exc)},
            )

    def _now(self, connection: Connection) -> datetime:
        if self._postgres:
            moment: datetime = connection.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
            return moment.astimezone(UTC)
        return self.clock.now()

    def _now_value(self) -> Any:
        """Now, as written into the lease: the database's clock on PostgreSQL."""
        if self._postgres:
            return sa.func.timezone("UTC", sa.func.clock_timestamp())
        return self.clock.now()

    # -- the watchdog -----------------------------------------------------------------------

    @contextmanager
    def _watchdog(self, session: _Session, taken: Lease) -> Iterator[None]:
        done, wake = threading.Event(), threading.Event()

        def doubt(*_: object) -> None:
            # A pooled connection found dead (a server restart, a failover, a proxy): the
            # lock's session may have died with it. Check now, not at the next beat.
            taken.doubt()
            wake.set()

        watchdog = threading.Thread(
            target=self._watch,
            args=(session, taken, done, wake),
            name=f"lsq-run-lock-{self.connector}",
            daemon=True,
        )
        event.listen(self.engine, "invalidate", doubt)
        watchdog.start()
        try:
            yield
        finally:
            event.remove(self.engine, "invalidate", doubt)
            done.set()
            wake.set()
            watchdog.join()

    def _watch(
        self, session: _Session, taken: Lease, done: threading.Event, wake: threading.Event
    ) -> None:
        while True:
            wake.wait(self.timing.heartbeat_seconds)
            wake.clear()
            if done.is_set():
                return
            with taken.beating() as live:
                if not live:
                    return
                try:
                    if not taken.lost:
                        self._beat(session, taken)
                    elif taken.lost_for() < self.drain_seconds:
                        self._beat_while_draining(taken)
                except Exception as exc:  # noqa: BLE001 (a watchdog that dies must not leave calls going)
                    taken.lose(f"the run lock's watchdog failed: {type(exc).__name__}: {exc}")

    def _beat(self, session: _Session, taken: Lease) -> None:
        sent_at = self.clock.monotonic()
        try:
            beaten = session.beat(self._heartbeat(taken.epoch))
        except _LockLost as lost:
            taken.lose(str(lost))
            self._beat_while_draining(taken)
            return
        if beaten:
            taken.confirm(sent_at)

    def _beat_while_draining(self, taken: Lease) -> None:
        """Keep the run that took the lock waiting while this one's calls finish."""
        try:
            with self.engine.begin() as connection:
                connection.execute(self._heartbeat(taken.epoch))
        except SQLAlchemyError as exc:
            log.debug("heartbeat while draining failed", extra={"error": _first_line(exc)})


def _lock_file(path: str) -> IO[bytes] | None:
    """The open, flock'ed lock file at `path`; None when another process holds it."""
    try:
        return _try_lock_file(path)
    except OSError as exc:
        raise LsqSyncError(f"cannot take the run lock file {path}: {exc.strerror}") from exc


def _try_lock_file(path: str) -> IO[bytes] | None:
    for _ in range(_LOCK_FILE_TRIES):
        # Never through a symlink: the file is truncated, and one planted at this path could
        # point at any file this process may write.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        handle = os.fdopen(descriptor, "wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        except OSError:
            handle.close()
            raise
        if _is_file_at(handle, path):
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n".encode())
            handle.flush()
            return handle
        # Deleted or replaced between open and flock: the lock is the file now at the path.
        handle.close()
    raise LsqSyncError(f"the run lock file {path} keeps being replaced; is something deleting it?")


def _is_file_at(handle: IO[bytes], path: str) -> bool:
    held = os.fstat(handle.fileno())
    try:
        current = os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip()
    return text.splitlines()[0] if text else type(original).__name__
