"""The run lock, its lease and fencing, on real SQLite and PostgreSQL with real HTTP.

Losing the lock is made for real: the lock's PostgreSQL session is terminated, or the SQLite
lock file is deleted. Every wait is on an observed event (a log record, the emulator's log, a
database row), never a sleep.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector import Connector, RunReport
from connector.clock import SystemClock
from connector.counts import RunCounts
from connector.database import create_engine, lock_session_engine
from connector.errors import LsqSyncError, RunLockLostError
from connector.ingest import ingest
from connector.runlock import (
    UNFENCED,
    Lease,
    LeaseTiming,
    NotHeld,
    RunLock,
    lock_file_path,
)
from connector.schema import lease, run
from connector.testing.emulator import Emulator
from tests.support import (
    config_dict,
    create_customers,
    execute,
    load,
    lock_holders,
    source_values,
    wait_until,
)

# Short enough for quick tests, long enough that a loaded machine's pauses do not make a live
# holder look dead.
TIMING = LeaseTiming(heartbeat_seconds=0.2, stale_seconds=5.0)
WAIT = 60.0  # bound on every wait for an event; reached only when something is broken
LEADS = 200
MAX_IN_FLIGHT = 4


class LogEvents(logging.Handler):
    """Sets an event when a record holding a wanted text is logged, and runs `on_record`."""

    def __init__(self, on_record: Callable[[str], None] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self._events: dict[str, threading.Event] = {}
        self._seen: list[str] = []
        self._lock = threading.Lock()
        self._on_record = on_record

    def event(self, text: str) -> threading.Event:
        """Set already if such a record came before anyone asked: the test thread may be
        slower than the thread it watches."""
        with self._lock:
            if text not in self._events:
                self._events[text] = threading.Event()
                if any(text in message for message in self._seen):
                    self._events[text].set()
            return self._events[text]

    def wait(self, text: str) -> None:
        assert self.event(text).wait(WAIT), f"no log record with {text!r} within {WAIT} s"

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self._on_record is not None:
            self._on_record(message)
        with self._lock:
            self._seen.append(message)
            for text, event in self._events.items():
                if text in message:
                    event.set()


@pytest.fixture
def log_events() -> Iterator[LogEvents]:
    handler = LogEvents()
    logger = logging.getLogger("connector")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def make_connector(url: str, emulator: Emulator, **options: Any) -> Connector:
    config = config_dict(url, emulator, leadsquared={"max_in_flight": MAX_IN_FLIGHT})
    return Connector(load(config), lease_timing=TIMING, **options)


def add_leads(app: sa.Engine, emulator: Emulator, count: int = LEADS) -> None:
    for i in range(1, count + 1):
        emulator.add_lead(f"L{i:04}")
    execute(
        app,
        *(
            f"INSERT INTO customers (id, city, score, lsq_prospect_id) "
            f"VALUES ({i}, 'c{i}', {i}, 'L{i:04}')"
            for i in range(1, count + 1)
        ),
    )


def run_under_way(
    sync: Connector, app: sa.Engine, emulator: Emulator, pool: Executor, *, leads: int, calls: int
) -> Future[RunReport]:
    """Installs capture with `sync`, queues `leads` leads and starts its run in `pool`;
    returns once `calls` of the run's calls have arrived."""
    sync.init()
    add_leads(app, emulator, leads)
    running = pool.submit(sync.run_once)
    emulator.wait_for_requests(calls, timeout=WAIT)
    return running


def take_the_lock_away(sync: Connector) -> None:
    """What a DBA, a proxy or a clean-up job does to a held lock."""
    if sync.engine.dialect.name == "postgresql":
        (pid,) = lock_holders(sync.engine, sync.config.name)
        with sync.engine.connect() as connection:
            connection.execute(sa.select(sa.func.pg_terminate_backend(pid)))
        wait_until(lambda: not lock_holders(sync.engine, sync.config.name))
    else:
        database = sync.engine.url.database
        assert database is not None
        os.unlink(lock_file_path(database, sync.config.name))


def updates(emulator: Emulator) -> list[tuple[str | None, frozenset[tuple[str, str]]]]:
    return [
        (r.lead_id, frozenset((f["Attribute"], f["Value"]) for f in r.body))
        for r in emulator.requests
        if r.api == "Lead.Update"
    ]


def assert_no_update_sent_twice(emulator: Emulator) -> None:
    twice = [update for update, n in Counter(updates(emulator)).items() if n > 1]
    assert not twice, f"{len(twice)} updates sent more than once, e.g. {twice[:3]}"


def assert_converged(url: str, emulator: Emulator) -> None:
    assert emulator.leads() == {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(url).items()
    }


def run_statuses(engine: sa.Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        return list(
            connection.execute(sa.select(run.c.status, run.c.error).order_by(run.c.run_id)).all()
        )


# -- losing the lock mid-push -------------------------------------------------------------------


def test_a_run_that_loses_its_lock_starts_no_call_after_noticing_and_fails(
    db_url: str, app: sa.Engine, emulator: Emulator, log_events: LogEvents
) -> None:
    emulator.set_latency(0.04, 0.06)
    counted_at_loss: list[int] = []

    def count_at_loss(message: str) -> None:
        if "lost the run lock" in message and not counted_at_loss:
            counted_at_loss.append(len(emulator.requests))

    log_events._on_record = count_at_loss
    with make_connector(db_url, emulator) as sync, ThreadPoolExecutor(1) as pool:
        running = run_under_way(sync, app, emulator, pool, leads=LEADS, calls=10)
        take_the_lock_away(sync)
        with pytest.raises(RunLockLostError, match="another run may now hold it"):
            running.result(timeout=WAIT)
        assert len(emulator.requests) < LEADS, "the run went on to the end"
        (lost_at,) = counted_at_loss
        # Only calls already started when the loss was noticed may arrive after it.
        assert len(emulator.requests) - lost_at <= MAX_IN_FLIGHT
        ((status, error),) = run_statuses(sync.engine)
        assert status == "failed"
        assert error is not None
        assert "lost the run lock" in error

    with make_connector(db_url, emulator) as after:
        assert after.run_once().status == "ok"
    assert_no_update_sent_twice(emulator)
    assert_converged(db_url, emulator)


def test_the_run_that_takes_the_lock_waits_for_the_one_that_lost_it_to_drain(
    db_url: str, app: sa.Engine, emulator: Emulator, log_events: LogEvents
) -> None:
    emulator.set_latency(0.02, 0.04)
    with (
        make_connector(db_url, emulator) as first,
        make_connector(db_url, emulator) as second,
        ThreadPoolExecutor(2) as pool,
    ):
        first_run = run_under_way(first, app, emulator, pool, leads=60, calls=8)
        emulator.hold()  # the first run's calls are now in flight, unanswered
        second_run: Future[Any] | None = None
        try:
            take_the_lock_away(first)
            log_events.wait("lost the run lock")
            second_run = pool.submit(second.run_once)
            log_events.wait("waiting for the previous run")
            # The first run is alive and draining: its run is not abandoned, and nothing of
            # it has been recorded as over.
            assert [status for status, _ in run_statuses(first.engine)] == ["running"]
        finally:
            emulator.release()
        with pytest.raises(RunLockLostError):
            first_run.result(timeout=WAIT)
        assert second_run.result(timeout=WAIT).status == "ok"
        statuses = run_statuses(first.engine)
    assert [status for status, _ in statuses] == ["failed", "ok"]
    assert "lost the run lock" in (statuses[0][1] or "")
    assert_no_update_sent_twice(emulator)
    assert_converged(db_url, emulator)


def test_a_draining_run_keeps_its_heartbeat_fresh_past_the_stale_time(
    pg_url: str, pg_app: sa.Engine, emulator: Emulator, log_events: LogEvents
) -> None:
    # Calls in flight may take longer than `stale_seconds` (up to the call's total timeout):
    # all that time the run that lost its lock must keep the next one waiting.
    timing = LeaseTiming(heartbeat_seconds=0.1, stale_seconds=2.0)
    with (
        Connector(load(config_dict(pg_url, emulator)), lease_timing=timing) as first,
        Connector(load(config_dict(pg_url, emulator)), lease_timing=timing) as second,
        ThreadPoolExecutor(2) as pool,
    ):
        first.init()
        add_leads(pg_app, emulator, 20)
        emulator.hold()
        try:
            first_run = pool.submit(first.run_once)
            emulator.wait_for_requests(1, timeout=WAIT)
            take_the_lock_away(first)
            log_events.wait("lost the run lock")
            second_run = pool.submit(second.run_once)
            log_events.wait("waiting for the previous run")
            epoch, lost_at = lease_row(first.engine)
            wait_until(lambda: lease_row(first.engine)[1] > lost_at + timedelta(seconds=4), WAIT)
            assert lease_row(first.engine)[0] == epoch, "the next run took over mid-drain"
            assert not second_run.done()
        finally:
            emulator.release()
        with pytest.raises(RunLockLostError):
            first_run.result(timeout=WAIT)
        assert second_run.result(timeout=WAIT).status == "ok"
    assert_no_update_sent_twice(emulator)


def lease_row(engine: sa.Engine) -> tuple[int, datetime]:
    with engine.connect() as connection:
        epoch, beaten = connection.execute(sa.select(lease.c.epoch, lease.c.heartbeat_at)).one()
    return epoch, beaten


def test_a_run_whose_connections_were_all_closed_checks_its_lock_before_its_next_call(
    pg_url: str, pg_app: sa.Engine, emulator: Emulator, log_events: LogEvents
) -> None:
    # What a server restart or a failover does to a run: every session ends at once. The
    # heartbeat is far apart here, so only a dead pooled connection can tell the run.
    timing = LeaseTiming(heartbeat_seconds=30.0, stale_seconds=120.0)
    # One call at a time: while it is held, every pooled connection is idle, so ending them
    # all fails no query in progress.
    config = config_dict(pg_url, emulator, leadsquared={"max_in_flight": 1})
    with Connector(load(config), lease_timing=timing) as sync, ThreadPoolExecutor(1) as pool:
        backends: list[int] = []

        def remember_backend(dbapi_connection: Any, _record: Any) -> None:
            pid = dbapi_connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            backends.append(pid)

        sa.event.listen(sync.engine, "connect", remember_backend)
        sync.init()
        add_leads(pg_app, emulator, 20)
        emulator.hold()
        try:
            running = pool.submit(sync.run_once)
            (held_call,) = emulator.wait_for_requests(1, timeout=WAIT)
            with pg_app.connect() as connection:
                for pid in [*lock_holders(sync.engine, "test"), *backends]:
                    connection.execute(sa.select(sa.func.pg_terminate_backend(pid)))
        finally:
            emulator.release()
        with pytest.raises(RunLockLostError, match="its database session ended"):
            running.result(timeout=WAIT)
    assert emulator.requests == [held_call], "a call started after the sessions ended"


# -- taking the lease ---------------------------------------------------------------------------


class ClockAhead(SystemClock):
    """A host whose clock is an hour ahead of the database server's."""

    def now(self) -> datetime:
        return super().now() + timedelta(hours=1)


def write_lease(engine: sa.Engine, epoch: int, heartbeat: Any) -> None:
    with engine.begin() as connection:
        connection.execute(sa.delete(lease))
        connection.execute(
            sa.insert(lease).values(connector="test", epoch=epoch, heartbeat_at=heartbeat)
        )


def fresh_heartbeat(engine: sa.Engine) -> Any:
    """A heartbeat just beaten, as the holder's database would time it."""
    if engine.dialect.name == "postgresql":
        return sa.func.timezone("UTC", sa.func.clock_timestamp())
    return datetime.now(UTC)


def test_a_run_goes_on_at_once_after_a_release_a_stale_heartbeat_or_a_clock_step_back(
    db_url: str, app: sa.Engine, emulator: Emulator, log_events: LogEvents
) -> None:
    with make_connector(db_url, emulator) as sync:
        sync.init()
        lock = RunLock(sync.engine, "test", clock=sync.clock, stop=sync.stop, timing=TIMING)
        stale = datetime.now(UTC) - timedelta(seconds=TIMING.stale_seconds * 4)
        # Beaten before the clock stepped back an hour.
        future = datetime.now(UTC) + timedelta(hours=1)
        for epoch, heartbeat in [(3, None), (7, stale), (11, future)]:
            write_lease(sync.engine, epoch, heartbeat)
            with lock.hold() as held:
                assert isinstance(held, Lease)
                assert held.epoch == epoch + 1
    assert not log_events.event("waiting for the previous run").is_set()


def test_a_fresh_heartbeat_is_judged_by_the_database_clock_and_waiting_ends_on_stop(
    db_url: str, app: sa.Engine, emulator: Emulator, log_events: LogEvents
) -> None:
    stop = threading.Event()
    with make_connector(db_url, emulator) as sync, ThreadPoolExecutor(1) as pool:
        sync.init()
        write_lease(sync.engine, 5, fresh_heartbeat(sync.engine))
        lock = RunLock(sync.engine, "test", clock=ClockAhead(stop), stop=stop, timing=TIMING)

        def take() -> Lease | NotHeld:
            with lock.hold() as held:
                return held

        taking = pool.submit(take)
        if sync.engine.dialect.name == "sqlite":
            # SQLite has no server clock: the host's own says the heartbeat is an hour old.
            held = taking.result(timeout=WAIT)
            assert isinstance(held, Lease)
            return
        # PostgreSQL's clock says the heartbeat is fresh, whatever this host's clock says.
        log_events.wait("waiting for the previous run")
        stop.set()
        held = taking.result(timeout=WAIT)
    assert isinstance(held, NotHeld)
    assert "stopped while waiting" in held.reason


# -- fencing ------------------------------------------------------------------------------------


def test_a_run_whose_lease_was_taken_over_records_nothing(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    with make_connector(db_url, emulator) as sync:
        sync.init()
        add_leads(app, emulator, 3)
        assert sync.run_once().counts.leads_pushed == 3
        execute(app, "UPDATE customers SET city = 'moved' WHERE id = 1")
        with sync._run_lock().hold() as held:
            assert isinstance(held, Lease)
            run_id = sync.tables.runs.start_run(sync.clock.now())
            sync.tables.fence.current = held
            with sync.engine.begin() as connection:  # what a run that takes over does
                connection.execute(sa.update(lease).values(epoch=held.epoch + 1))
            now = sync.clock.now()
            queue = sync.tables.queue(sync.source)
            attempts: list[Callable[[], object]] = [
                lambda: queue.record_pushed("L0002", {"mx_City": "x"}, frozenset(), now),
                lambda: queue.record_failure("L0002", {}, "boom", now, rejected=True),
                lambda: queue.set_aside("L0002", {"mx_City": "x"}, "unknown", now),
                lambda: queue.owned([], now),
                lambda: sync.tables.runs.finish_run(run_id, now, "ok", RunCounts(), None),
                lambda: sync.tables.runs.close_abandoned_runs(now),
                lambda: ingest(
                    sync.engine,
                    tables=sync.tables,
                    source=sync.source,
                    clock=sync.clock,
                    batch_size=10,
                ),
                lambda: call_gate(sync.engine, held),
            ]
            for attempt in attempts:
                with pytest.raises(RunLockLostError, match="another run took over"):
                    attempt()
            sync.tables.fence.current = UNFENCED
        with sync.engine.connect() as connection:
            leads = {s.lead_id: s for s in sync.tables.leads.all_leads(connection)}
            waiting = sync.tables.changes.pending_changes(connection)
        assert [status for status, _ in run_statuses(sync.engine)] == ["ok", "running"]
    assert waiting == 1, "the change was not ingested"
    assert leads["L0002"].pushed == {"mx_City": "c2", "mx_Score": "2"}
    assert (leads["L0002"].rejected, leads["L0002"].set_aside) == (False, {})


def call_gate(engine: sa.Engine, held: Lease) -> float:
    with engine.begin() as connection:
        return held.call_delay(connection)


class SteppedClock(SystemClock):
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.at = 0.0

    def monotonic(self) -> float:
        return self.at


def test_no_call_starts_while_no_heartbeat_has_gone_through_for_half_the_stale_time(
    tmp_path: Path,
) -> None:
    # The watchdog may be stuck on a dead network, or starved on a loaded host: the holder
    # must stop calling well before another run may find its heartbeat stale.
    engine = create_engine(f"sqlite:///{tmp_path / 'lease.db'}")
    lease.create(engine)
    write_lease(engine, 7, None)
    clock = SteppedClock()
    held = Lease(engine, "test", 7, clock=clock, timing=TIMING, confirmed_at=0.0)
    try:
        assert call_gate(engine, held) == 0
        clock.at = TIMING.stale_seconds / 2 + 0.1
        assert call_gate(engine, held) > 0, "a call started although the lock went unconfirmed"
        held.confirm(clock.at)
        assert call_gate(engine, held) == 0
        held.doubt()  # a pooled connection was found dead
        assert call_gate(engine, held) > 0
        held.confirm(clock.at - 0.01)  # sent before the doubt: proves nothing about it
        assert call_gate(engine, held) > 0
        clock.at += 0.01
        held.confirm(clock.at)
        assert call_gate(engine, held) == 0
    finally:
        engine.dispose()


# -- uninstall ----------------------------------------------------------------------------------


def test_uninstall_dropping_the_state_is_not_raced_by_its_own_heartbeat(
    pg_url: str, pg_app: sa.Engine, emulator: Emulator
) -> None:
    # The teardown deletes the lease row, then drops the table: a heartbeat waiting on that
    # row in between is a deadlock, which PostgreSQL may break by failing the teardown.
    timing = LeaseTiming(heartbeat_seconds=0.05, stale_seconds=5.0)
    with Connector(load(config_dict(pg_url, emulator)), lease_timing=timing) as sync:
        sync.init()
        backends: list[int] = []
        seen: list[str] = []

        def remember_backend(dbapi_connection: Any, _record: Any) -> None:
            backends.append(dbapi_connection.execute("SELECT pg_backend_pid()").fetchone()[0])

        def heartbeat_waiting() -> bool:
            with pg_app.connect() as connection:
                return bool(
                    connection.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids) "
                            "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE lsq_sync_lease%'"
                        ),
                        {"pids": backends},
                    ).scalar_one()
                )

        def watchdog_running() -> bool:
            return any(t.name == "lsq-run-lock-test" for t in threading.enumerate())

        def linger(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.startswith("DELETE FROM lsq_sync_lease"):
                # As long as the teardown of a big state takes: until the watchdog either
                # blocks on the deleted row or is gone.
                wait_until(lambda: heartbeat_waiting() or not watchdog_running(), WAIT)
                seen.append("heartbeat waiting" if heartbeat_waiting() else "watchdog gone")

        sa.event.listen(sync.engine, "connect", remember_backend)
        sa.event.listen(sync.engine, "after_cursor_execute", linger)
        assert sync.uninstall(drop_state=True).tables_dropped
    assert seen == ["watchdog gone"]


# -- the lock's PostgreSQL sessions ---------------------------------------------------------


def test_the_lock_session_keeps_alive_and_ignores_idle_timeouts(pg_url: str) -> None:
    url = f"{pg_url}%20-cidle_session_timeout%3D100%20-cidle_in_transaction_session_timeout%3D100"
    engine = create_engine(url)
    try:
        lock_engine = lock_session_engine(engine)
        with lock_engine.connect() as connection:
            parameters = connection.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert {k: parameters.get(k) for k in ("keepalives", "tcp_user_timeout")} == {
            "keepalives": "1",
            "tcp_user_timeout": "10000",
        }
        lock_engine.dispose()
    finally:
        engine.dispose()


def test_the_server_keeps_alive_its_side_of_every_session(pg_url: str) -> None:
    # Left to the kernel's defaults, the server notices a client whose host died (power,
    # network) only after two hours. Until then it keeps that client's session, with the run
    # lock (every other run is skipped) or the row locks of a transaction it left open (the
    # next run's takeover of the lease waits on them).
    engine = create_engine(pg_url)
    lock_engine = lock_session_engine(engine)
    try:
        assert server_keepalives(lock_engine) == {
            "tcp_keepalives_idle": "5",
            "tcp_keepalives_interval": "2",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "10000",
        }
        assert server_keepalives(engine) == {
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "60000",
        }
    finally:
        lock_engine.dispose()
        engine.dispose()


def server_keepalives(engine: sa.Engine) -> dict[str, str]:
    """The server's keepalive settings for a TCP session of `engine` (as pg_settings holds
    them: seconds, and milliseconds for tcp_user_timeout)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT name, setting FROM pg_settings WHERE name LIKE 'tcp_keepalives_%' "
                "OR name = 'tcp_user_timeout'"
            )
        )
        return {name: setting for name, setting in rows}


def test_pooled_connections_closed_while_idle_are_replaced(pg_url: str) -> None:
    engine = create_engine(f"{pg_url}%20-cidle_session_timeout%3D50")
    try:
        with engine.connect() as connection:
            first_pid = connection.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
        # The pooled connection now sits idle, and the server ends it.
        watcher = sa.create_engine(pg_url)
        try:
            wait_until(lambda: not _backend_alive(watcher, first_pid))
        finally:
            watcher.dispose()
        with engine.connect() as connection:
            assert connection.execute(sa.select(sa.func.pg_backend_pid())).scalar_one() != first_pid
    finally:
        engine.dispose()


def _backend_alive(engine: sa.Engine, pid: int) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
        )


# -- SQLite: one file, one lock -----------------------------------------------------------------


def another_path_to(real: Path, way: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A URL that SQLite opens as the same database file, written another way."""
    if way == "symlink":
        link = real.parent.parent / "link.db"
        link.symlink_to(real)
        return f"sqlite:///{link}"
    if way == "relative":
        monkeypatch.chdir(real.parent)
        return "sqlite:///app.db"
    if way == "uri":
        return f"sqlite:///file:{real}?uri=true"
    # A symlinked directory, then "..": SQLite drops the name before the "..", where the kernel
    # (and os.path.realpath) would go up from the symlink's target.
    target = real.parent.parent / "elsewhere" / "deep"
    target.mkdir(parents=True)
    (target.parent / real.parent.name).mkdir()
    hop = real.parent.parent / "hop"
    hop.symlink_to(target)
    return f"sqlite:///{hop}/../{real.parent.name}/{real.name}"


@pytest.mark.parametrize("second_path", ["symlink", "relative", "uri", "symlinked_dir_dotdot"])
def test_one_sqlite_file_reached_by_two_paths_has_one_run_lock(
    second_path: str,
    tmp_path: Path,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = tmp_path / "data" / "app.db"
    real.parent.mkdir()
    url = f"sqlite:///{real}"
    other_url = another_path_to(real, second_path, monkeypatch)
    app = sa.create_engine(url)
    emulator.set_latency(0.02, 0.04)
    try:
        create_customers(url)
        with (
            make_connector(url, emulator) as first,
            make_connector(other_url, emulator) as second,
            ThreadPoolExecutor(1) as pool,
        ):
            first_run = run_under_way(first, app, emulator, pool, leads=60, calls=4)
            assert not first_run.done()
            report = second.run_once()
            assert report.status == "skipped", report.summary()
            assert first_run.result(timeout=WAIT).counts.leads_pushed == 60
    finally:
        app.dispose()
    assert_no_update_sent_twice(emulator)
    assert_converged(url, emulator)


def test_a_symlink_planted_as_the_lock_file_is_refused_and_its_target_untouched(
    tmp_path: Path, emulator: Emulator
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_customers(url)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    with make_connector(url, emulator) as sync:
        sync.init()
        Path(lock_file_path(str(tmp_path / "app.db"), "test")).symlink_to(victim)
        with pytest.raises(LsqSyncError, match=r"cannot take the run lock file .*\.lock: "):
            sync.run_once()
    assert victim.read_text() == "keep me"
