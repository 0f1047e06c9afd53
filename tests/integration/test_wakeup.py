"""Wake-ups: what starts a cycle early, what must not, and a hostile schema on the way."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from unittest import mock

import pytest
import sqlalchemy as sa
from apscheduler.events import (
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler

from connector import Connector, capture, catalogue
from connector.daemon import add_cycle_job
from connector.database import create_engine
from connector.schema import change
from connector.testing.emulator import Emulator
from connector.wakeup import PostgresWatch, SqliteWatch, Waker, watch_for
from tests.support import PG_URL, config_dict, create_customers, execute, load

TIMEOUT = 30.0
HOUR = 3600


@pytest.fixture
def sync(db_url: str, emulator: Emulator) -> Iterator[Connector]:
    create_customers(db_url)
    with Connector(load(config_dict(db_url, emulator))) as connector:
        connector.init()
        yield connector


class Counted:
    """A wake-up target that a test can wait on."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.count >= count, TIMEOUT), self.count


@contextmanager
def waking(sync: Connector, debounce: float = 0.0) -> Iterator[tuple[Waker, Counted]]:
    stop = threading.Event()
    watch = watch_for(sync.engine, sync.config.name, stop)
    if isinstance(watch, SqliteWatch):
        watch = SqliteWatch(sync.engine, sync.config.name, stop, period=0.05)
    woken = Counted()
    waker = Waker(watch, woken, stop, debounce).start()
    try:
        yield waker, woken
    finally:
        stop.set()
        waker.join(TIMEOUT)


def test_a_committed_change_wakes_the_daemon(sync: Connector) -> None:
    with waking(sync) as (waker, woken):
        execute(sync.engine, "INSERT INTO customers (id, city) VALUES (1, 'Pune')")
        woken.wait_for(1)
        execute(sync.engine, "UPDATE customers SET city = 'Goa' WHERE id = 1")
        woken.wait_for(2)
        looked = waker.looks
        assert waker.wait_for_looks(looked + 3, TIMEOUT)
        assert woken.count == 2


def test_a_write_capture_ignores_wakes_nobody(sync: Connector) -> None:
    """An update of no captured column records no change, so there is nothing to push."""
    execute(sync.engine, "INSERT INTO customers (id, city) VALUES (1, 'Pune')")
    with waking(sync) as (waker, woken):
        execute(sync.engine, "UPDATE customers SET notes = 'unmapped' WHERE id = 1")
        execute(sync.engine, "UPDATE customers SET city = 'Pune' WHERE id = 1")
        looked = waker.looks
        assert waker.wait_for_looks(looked + 3, TIMEOUT)
        assert woken.count == 0
        execute(sync.engine, "UPDATE customers SET city = 'Goa' WHERE id = 1")
        woken.wait_for(1)


def test_a_burst_of_commits_within_the_debounce_is_one_wake_up(sync: Connector) -> None:
    with waking(sync, debounce=2.0) as (waker, woken):
        for row in range(1, 6):
            execute(sync.engine, f"INSERT INTO customers (id, city) VALUES ({row}, 'c')")
        woken.wait_for(1)
        looked = waker.looks
        assert waker.wait_for_looks(looked + 3, TIMEOUT)
        assert woken.count == 1


def test_sqlite_the_connectors_own_writes_are_no_change(
    emulator: Emulator, tmp_path: object
) -> None:
    """PRAGMA data_version moves with every commit of another connection, the daemon's own run
    records among them; only a new change row of this connector is a wake-up."""
    url = f"sqlite:///{tmp_path}/app.db"
    create_customers(url)
    with (
        Connector(load(config_dict(url, emulator))) as sync,
        Connector(load(config_dict(url, emulator, name="other"))) as other,
    ):
        sync.init()
        other.init()
        watch = SqliteWatch(sync.engine, "test", threading.Event())
        watch.open()
        try:
            sync.run_once()
            other.run_once()
            assert not watch.changed()
            execute(
                other.engine,
                "INSERT INTO lsq_sync_change (connector, row_key) VALUES ('other', '9')",
            )
            assert not watch.changed()
            execute(sync.engine, "INSERT INTO customers (id, city) VALUES (1, 'Pune')")
            assert watch.changed()
            assert not watch.changed()
            sync.run_once()  # ingests, so deletes, the change row; records the run
            assert not watch.changed()
            execute(sync.engine, "UPDATE customers SET city = 'Goa' WHERE id = 1")
            assert watch.changed()
        finally:
            watch.dispose()


class Cycles:
    """Counts the cycle job's runs as APScheduler starts and ends them."""

    def __init__(self, scheduler: BackgroundScheduler) -> None:
        self.started = 0
        self.ended = 0
        self.skipped = 0  # asked to start while running
        self._changed = threading.Condition()
        scheduler.add_listener(
            self._event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_MAX_INSTANCES
        )

    def _event(self, event: JobEvent) -> None:
        with self._changed:
            if event.code == EVENT_JOB_SUBMITTED:
                self.started += 1
            elif event.code == EVENT_JOB_MAX_INSTANCES:
                self.skipped += 1
            else:
                self.ended += 1
            self._changed.notify_all()

    def wait_for(self, started: int, ended: int = 0, skipped: int = 0) -> None:
        with self._changed:
            assert self._changed.wait_for(
                lambda: self.started >= started and self.ended >= ended and self.skipped >= skipped,
                TIMEOUT,
            ), (self.started, self.ended, self.skipped)


@contextmanager
def daemon(sync: Connector) -> Iterator[tuple[Waker, Cycles]]:
    """The daemon's scheduler and waker for `sync`, cycles an hour apart."""
    scheduler = BackgroundScheduler(timezone=UTC)
    cycles = Cycles(scheduler)
    waker = add_cycle_job(scheduler, sync, HOUR)
    assert waker is not None
    scheduler.start()
    try:
        yield waker, cycles
    finally:
        sync.stop.set()
        scheduler.shutdown(wait=True)
        waker.join(TIMEOUT)


def test_sqlite_the_daemon_does_not_wake_itself(emulator: Emulator, tmp_path: object) -> None:
    """Every cycle writes its run record, which moves PRAGMA data_version: after the cycle a
    wake-up started, the checks that follow must find nothing to wake for."""
    url = f"sqlite:///{tmp_path}/app.db"
    create_customers(url)
    with Connector(load(config_dict(url, emulator))) as sync:
        sync.init()
        emulator.add_lead("L1")
        with daemon(sync) as (waker, cycles):
            cycles.wait_for(1, ended=1)
            execute(
                sync.engine,
                "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')",
            )
            cycles.wait_for(2, ended=2)
            assert waker.wakes == 1
            assert emulator.lead("L1") == {"mx_City": "Pune"}
            looked = waker.looks
            assert waker.wait_for_looks(looked + 5, TIMEOUT)
            assert waker.wakes == 1
            assert (cycles.started, cycles.ended) == (2, 2)


def test_a_wake_up_during_a_cycle_runs_another_right_after_it(
    sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    emulator.hold()
    with daemon(sync) as (_, cycles):
        cycles.wait_for(1, ended=1)
        execute(
            sync.engine,
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')",
        )
        # The wake-up's cycle now waits on the held call for L1.
        emulator.wait_for_requests(1, TIMEOUT)
        execute(
            sync.engine,
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'Agra', 'L2')",
        )
        # Asked for while the cycle runs: skipped by APScheduler, so it must follow.
        cycles.wait_for(2, skipped=1)
        emulator.release()
        requests = emulator.wait_for_requests(2, TIMEOUT)
        assert [r.lead_id for r in requests] == ["L1", "L2"]
        cycles.wait_for(3)


HOSTILE_SCHEMA = "Wé\"ird 'sch$lsq$ema%s; DROP TABLE x;--" + "z" * 10


@pytest.fixture
def hostile_url() -> Iterator[str]:
    """A PostgreSQL schema whose name needs quoting everywhere, 63 bytes long, as the
    connector's own and the source table's."""
    name = HOSTILE_SCHEMA
    name += "z" * (63 - len(name.encode()))
    quoted = '"' + name.replace('"', '""') + '"'
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {quoted.replace('%', '%%')}")
        # libpq's options: a backslash escapes a space.
        option = "-csearch_path=" + quoted.replace("\\", "\\\\").replace(" ", "\\ ")
        yield f"{PG_URL}?options={urllib.parse.quote(option)}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {quoted.replace('%', '%%')} CASCADE")
        admin.dispose()


@pytest.mark.postgres
def test_postgresql_a_hostile_schema_breaks_neither_the_statement_nor_the_wake_up(
    hostile_url: str, emulator: Emulator
) -> None:
    create_customers(hostile_url)
    with Connector(load(config_dict(hostile_url, emulator, name="w" * 40))) as sync:
        with sync.engine.connect() as connection:
            schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
        assert schema.startswith('Wé"ird')
        channel = capture.wake_channel(schema, "w" * 40)
        assert len(channel.encode()) <= 63
        sync.init()
        with waking(sync) as (_, woken):
            execute(sync.engine, "INSERT INTO customers (id, city) VALUES (1, 'Pune')")
            woken.wait_for(1)
        with sync.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM customers").scalar_one() == 1


@pytest.mark.postgres
def test_postgresql_triggers_installed_before_wake_ups_still_run_and_say_so(
    pg_url: str, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The capture signature is unchanged by the NOTIFY: an older install still runs, on its
    interval, and the daemon says once that `init` brings wake-ups."""
    create_customers(pg_url)
    with Connector(load(config_dict(pg_url, emulator))) as sync:
        with mock.patch.object(capture, "_wake", return_value=""):
            sync.init()
        emulator.add_lead("L1")
        execute(
            sync.engine,
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')",
        )
        assert sync.run_once().counts.leads_pushed == 1
        with (
            caplog.at_level(logging.WARNING, logger="connector.wakeup"),
            waking(sync) as (
                waker,
                woken,
            ),
        ):
            execute(sync.engine, "UPDATE customers SET city = 'Goa' WHERE id = 1")
            looked = waker.looks
            assert waker.wait_for_looks(looked + 3, TIMEOUT)
            assert woken.count == 0
        assert [r.getMessage() for r in caplog.records if "before wake-ups" in r.getMessage()]
        sync.init()
        with waking(sync) as (_, woken):
            execute(sync.engine, "UPDATE customers SET city = 'Agra' WHERE id = 1")
            woken.wait_for(1)


# What the config would refuse: quotes, a comment, a dollar-quote tag (40 characters at most).
HOSTILE_NAME = "x'); DROP TABLE customers;--\"$lsq$"


@pytest.mark.postgres
def test_postgresql_a_hostile_connector_name_breaks_neither_the_statement_nor_the_channel(
    pg_url: str, emulator: Emulator
) -> None:
    """The config admits only [a-z0-9_] names; capture must not depend on that."""
    create_customers(pg_url)
    with Connector(load(config_dict(pg_url, emulator))) as sync:
        sync.init()
        with sync.engine.begin() as connection:
            table = catalogue.resolve(connection, None, "customers")
            assert table is not None
            capture.install(connection, HOSTILE_NAME, sync.source, table)
        stop = threading.Event()
        woken = Counted()
        waker = Waker(PostgresWatch(sync.engine, HOSTILE_NAME), woken, stop, 0.0).start()
        try:
            execute(sync.engine, "INSERT INTO customers (id, city) VALUES (1, 'Pune')")
            woken.wait_for(1)
        finally:
            stop.set()
            waker.join(TIMEOUT)
        with sync.engine.connect() as connection:
            keys = connection.execute(
                sa.select(change.c.row_key).where(change.c.connector == HOSTILE_NAME)
            ).scalars()
            assert list(keys) == ["1"]
            assert connection.exec_driver_sql("SELECT count(*) FROM customers").scalar_one() == 1


@pytest.mark.postgres
def test_postgresql_a_change_behind_an_open_transaction_is_pushed_once_it_ends(
    pg_url: str, emulator: Emulator
) -> None:
    """Gap safety holds the woken cycle back from a change while an older transaction is
    open; the change must not then wait out the interval."""
    create_customers(pg_url)
    emulator.add_lead("L1")
    with Connector(load(config_dict(pg_url, emulator))) as sync:
        sync.init()
        with daemon(sync) as (_, cycles):
            cycles.wait_for(1, ended=1)
            with sync.engine.connect() as blocker:
                blocker.exec_driver_sql("SELECT pg_current_xact_id()")
                execute(
                    sync.engine,
                    "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')",
                )
                cycles.wait_for(2, ended=2)
                assert emulator.requests == []
                blocker.rollback()
            emulator.wait_for_requests(1, TIMEOUT)
            assert emulator.lead("L1") == {"mx_City": "Pune"}
