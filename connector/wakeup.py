"""Wake-ups: a daemon's cycle starts as soon as a change is captured, not on its next tick.

On PostgreSQL the capture triggers NOTIFY the connector's channel (`capture.wake_channel`),
and a `Waker` LISTENs on a session of its own. On SQLite, which has no NOTIFY, it checks once
a second whether the change table holds a row of this connector newer than the last it saw
(`PRAGMA data_version` first, which costs next to nothing when nothing was written).

A wake-up is only a hint: the cycle it starts reads the change table as any other does, and a
wake-up lost (the LISTEN session down, triggers installed before wake-ups existed) costs only
latency, since `sync.interval_seconds` still starts a cycle. One `Waker` serves one connector;
a daemon of several connectors starts one each.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool, PoolProxiedConnection

from connector import capture
from connector.database import is_postgres, wake_session_engine
from connector.schema import change as change_table

log = logging.getLogger(__name__)

# How often a Waker looks at its stop event while waiting for a notification (PostgreSQL),
# and how often it checks the change table (SQLite).
LISTEN_SLICE_SECONDS = 0.5
SQLITE_CHECK_SECONDS = 1.0
# Between attempts to open a lost watch again: doubling from the first to the last.
RETRY_FIRST_SECONDS = 1.0
RETRY_LAST_SECONDS = 30.0


class WatchLostError(Exception):
    """The session a watch reads from failed; open it again later."""


class Watch(Protocol):
    """Where wake-ups come from, for one connector."""

    def open(self) -> None: ...

    def wait(self) -> bool:
        """Whether a change was signalled; returns within about a second either way."""

    def drain(self) -> None:
        """Forget what was signalled until now (the cycle about to start covers it)."""

    def close(self) -> None: ...

    def dispose(self) -> None:
        """Close for good, with the engine the watch made."""


class PostgresWatch:
    """LISTEN on the connector's channel, in a session of the watch's own."""

    def __init__(self, engine: Engine, connector_name: str) -> None:
        self._engine = wake_session_engine(engine)
        self._connector_name = connector_name
        self._raw: PoolProxiedConnection | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self.channel: str | None = None
        self._told_about_old_triggers = False

    def open(self) -> None:
        try:
            raw = self._engine.raw_connection()
        except sa.exc.SQLAlchemyError as exc:
            raise WatchLostError(_first_line(exc)) from exc
        # The pool's wrapper is kept: dropping it would close the session under the watch.
        self._raw = raw
        connection: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
        connection.autocommit = True
        self._connection = connection
        try:
            own_schema = connection.execute("SELECT current_schema()").fetchone()
            if own_schema is None or own_schema[0] is None:
                raise WatchLostError("the session's search_path names no schema")
            self.channel = capture.wake_channel(own_schema[0], self._connector_name)
            self._tell_about_old_triggers(connection, self.channel)
            connection.execute(f'LISTEN "{self.channel}"')
        except psycopg.Error as exc:
            raise WatchLostError(_first_line(exc)) from exc

    def _tell_about_old_triggers(self, connection: psycopg.Connection[Any], channel: str) -> None:
        """Triggers installed before wake-ups existed send no NOTIFY: say so, once."""
        if self._told_about_old_triggers:
            return
        notifying = connection.execute(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_proc WHERE prosrc LIKE %s)",
            (f"%{channel}%",),
        ).fetchone()
        if notifying is not None and not notifying[0]:
            self._told_about_old_triggers = True
            log.warning(
                "change capture was installed before wake-ups existed: cycles start every "
                "sync.interval_seconds until `lsq-sync init` installs it again",
                extra={"connector": self._connector_name},
            )

    def wait(self) -> bool:
        try:
            for _ in self._live().notifies(timeout=LISTEN_SLICE_SECONDS, stop_after=1):
                return True
        except psycopg.Error as exc:
            raise WatchLostError(_first_line(exc)) from exc
        return False

    def drain(self) -> None:
        try:
            for _ in self._live().notifies(timeout=0):
                pass
        except psycopg.Error as exc:
            raise WatchLostError(_first_line(exc)) from exc

    def _live(self) -> psycopg.Connection[Any]:
        if self._connection is None:
            raise WatchLostError("not listening")
        return self._connection

    def close(self) -> None:
        raw, self._raw, self._connection = self._raw, None, None
        if raw is not None:
            # Closed without the pool's reset, which would fail, and log so, on a lost session.
            raw.invalidate()

    def dispose(self) -> None:
        self.close()
        self._engine.dispose()


class SqliteWatch:
    """Check, once a `period`, for a change row of this connector newer than the last seen.

    `PRAGMA data_version` changes when any other connection commits, the daemon's own
    included (every cycle records its run): it only says whether the change table is worth
    a look. Other connectors' rows in the shared change table are not this one's business.
    """

    def __init__(
        self,
        engine: Engine,
        connector_name: str,
        stop: threading.Event,
        period: float = SQLITE_CHECK_SECONDS,
    ) -> None:
        self._engine = sa.create_engine(engine.url, poolclass=NullPool)
        self._connector_name = connector_name
        self._stop = stop
        self._period = period
        self._connection: sa.Connection | None = None
        self._data_version: int | None = None
        self._newest_seen = 0

    def open(self) -> None:
        try:
            self._connection = self._engine.connect()
            self._data_version = self._read_data_version()
            self._newest_seen = self._newest_change()
        except sa.exc.SQLAlchemyError as exc:
            raise WatchLostError(_first_line(exc)) from exc

    def wait(self) -> bool:
        if self._stop.wait(self._period):
            return False
        return self.changed()

    def changed(self) -> bool:
        """Whether a change row of this connector was committed since the last look."""
        try:
            version = self._read_data_version()
            if version == self._data_version:
                return False
            self._data_version = version
            newest = self._newest_change()
            if newest <= self._newest_seen:
                return False
            mine = (
                self._live()
                .execute(
                    sa.select(change_table.c.change_id)
                    .where(
                        change_table.c.change_id > self._newest_seen,
                        change_table.c.change_id <= newest,
                        change_table.c.connector == self._connector_name,
                    )
                    .limit(1)
                )
                .first()
            )
            self._newest_seen = newest
        except sa.exc.SQLAlchemyError as exc:
            raise WatchLostError(_first_line(exc)) from exc
        else:
            return mine is not None
        finally:
            if self._connection is not None:
                self._connection.rollback()  # no read transaction left open between looks

    def _read_data_version(self) -> int:
        version: int = self._live().exec_driver_sql("PRAGMA data_version").scalar_one()
        return version

    def _newest_change(self) -> int:
        # max() over the rowid is one lookup, whatever the table holds; AUTOINCREMENT never
        # hands out an id again, so a larger one is a newer row.
        newest: int | None = (
            self._live().execute(sa.select(sa.func.max(change_table.c.change_id))).scalar_one()
        )
        return newest or 0

    def _live(self) -> sa.Connection:
        if self._connection is None:
            raise WatchLostError("not open")
        return self._connection

    def drain(self) -> None:
        """Nothing to forget: the next look compares with what this one saw."""

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def dispose(self) -> None:
        self.close()
        self._engine.dispose()


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip()
    return f"{type(original).__name__}: {text.splitlines()[0] if text else ''}"


class Waker:
    """A thread that calls `on_wake` after each wake-up, once `debounce` seconds have gathered
    the changes committed with it. Ends when `stop` is set."""

    def __init__(
        self,
        watch: Watch,
        on_wake: Callable[[], None],
        stop: threading.Event,
        debounce: float,
        *,
        connector: str = "",
    ) -> None:
        self.watch = watch
        self._connector = connector
        self._on_wake = on_wake
        self._stop = stop
        self._debounce = debounce
        self._looks = 0
        self._wakes = 0
        self._looked = threading.Condition()
        self._opened = False
        self._lost_because: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"lsq-sync wake-up {connector}".strip(), daemon=True
        )

    def start(self) -> Waker:
        """Open the watch, then watch on a thread: a cycle started after this returns is
        followed by a wake-up for any change committed after its start. A watch that cannot
        be opened now is opened by the thread, which keeps trying."""
        try:
            self.watch.open()
        except WatchLostError as exc:
            self._lost(str(exc), RETRY_FIRST_SECONDS)
            self._opened = False
        else:
            self._opened = True
            log.info(
                "listening for wake-ups",
                extra={"connector": self._connector, "debounce_seconds": self._debounce},
            )
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def looks(self) -> int:
        """How many times the watch was looked at so far, wake-ups handled included."""
        with self._looked:
            return self._looks

    def wait_for_looks(self, count: int, timeout: float) -> bool:
        """Wait until the watch has been looked at `count` times; False on timeout."""
        with self._looked:
            return self._looked.wait_for(lambda: self._looks >= count, timeout)

    def _run(self) -> None:
        try:
            self._watch_until_stopped()
        except Exception:
            # A bug, not a lost session: cycles go on at their interval; say why, once.
            log.exception("wake-ups stopped", extra={"connector": self._connector})
        finally:
            self.watch.dispose()

    def _watch_until_stopped(self) -> None:
        delay = RETRY_FIRST_SECONDS
        is_open = self._opened
        if not is_open:
            self._stop.wait(delay)
        while not self._stop.is_set():
            try:
                if not is_open:
                    self.watch.open()
                    is_open = True
                    # Changes committed while nobody listened sent their hint to no one.
                    self._wake()
                    log.info(
                        "wake-ups are back",
                        extra={"connector": self._connector, "after": self._lost_because},
                    )
                    self._lost_because, delay = None, RETRY_FIRST_SECONDS
                if self.watch.wait():
                    if self._stop.wait(self._debounce):
                        return
                    self.watch.drain()
                    self._wake()
                self._count_look()
            except WatchLostError as exc:
                self.watch.close()
                is_open = False
                self._lost(str(exc), delay)
                self._count_look()
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_LAST_SECONDS)

    def _lost(self, error: str, retry_seconds: float) -> None:
        """Say once, not on every attempt, that wake-ups stopped."""
        if self._lost_because is None:
            self._lost_because = error
            log.warning(
                "wake-ups lost: cycles start every sync.interval_seconds until they are back",
                extra={
                    "connector": self._connector,
                    "error": error,
                    "retry_seconds": retry_seconds,
                },
            )

    @property
    def wakes(self) -> int:
        """How many wake-ups were passed on so far."""
        with self._looked:
            return self._wakes

    def _wake(self) -> None:
        if self._stop.is_set():
            return
        with self._looked:
            self._wakes += 1
        self._on_wake()

    def _count_look(self) -> None:
        with self._looked:
            self._looks += 1
            self._looked.notify_all()


def watch_for(engine: Engine, connector_name: str, stop: threading.Event) -> Watch:
    if is_postgres(engine):
        return PostgresWatch(engine, connector_name)
    return SqliteWatch(engine, connector_name, stop)


def can_wake(engine: Engine) -> bool:
    """An in-memory SQLite database is seen by one connection only: nothing to watch it with."""
    if is_postgres(engine):
        return True
    return engine.url.database not in (None, "", ":memory:") and "mode=memory" not in str(
        engine.url
    )


class CycleRequests:
    """Turns wake-ups into runs of one APScheduler job (max_instances=1) without losing any.

    A wake-up runs the job now. While the job runs, APScheduler skips that (it never runs a
    job twice at once): the wake-up is kept, and the job runs again as soon as it ends. The
    job calls `starting` first, so that the wake-ups it covers start no run after it.

    A run that left changes behind a transaction still open on the server (ingest must not
    read past it) had its wake-up for nothing: the job runs again soon, `RETRY_FIRST_SECONDS`
    after it ends and doubling up to `interval`, rather than only on its interval.
    """

    def __init__(self, scheduler: BaseScheduler, job_id: str, interval: float) -> None:
        self._scheduler = scheduler
        self._job_id = job_id
        self._interval = interval
        self._lock = threading.Lock()
        self._wanted = False
        self._left_changes = False
        self._retry = RETRY_FIRST_SECONDS
        # A run APScheduler gave up on (started too late) asked for nothing: still wanted.
        scheduler.add_listener(
            self._job_ended, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
        )

    def starting(self) -> None:
        with self._lock:
            self._wanted = False
            self._left_changes = False

    def finished(self, *, changes_left: bool) -> None:
        """Said by the job as it ends: whether it left changes for a later run."""
        with self._lock:
            self._left_changes = changes_left

    def request(self) -> None:
        with self._lock:
            self._wanted = True
            self._run_at(datetime.now(UTC))

    def _job_ended(self, event: JobExecutionEvent) -> None:
        # Dispatched once APScheduler no longer counts the run as running, so a run asked
        # for now is not skipped.
        if event.job_id != self._job_id:
            return
        with self._lock:
            if not self._left_changes:
                self._retry = RETRY_FIRST_SECONDS
            if self._wanted:
                self._run_at(datetime.now(UTC))
            elif self._left_changes:
                self._run_at(datetime.now(UTC) + timedelta(seconds=self._retry))
                self._retry = min(self._retry * 2, self._interval)

    def _run_at(self, when: datetime) -> None:
        """Move the job's next run to `when`, if that is sooner; under `_lock`."""
        # Shut down, or not started yet (its first run comes at the start): nothing to do.
        with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
            job = self._scheduler.get_job(self._job_id)
            planned = getattr(job, "next_run_time", None)  # a job not yet started has none
            if job is None or (planned is not None and planned <= when):
                return
            self._scheduler.modify_job(self._job_id, next_run_time=when)
