"""Daemons sharing connectors, in one process: members counted, fair shares, rebalancing
when a daemon joins or leaves (the subprocess tests with kill -9 are in tests/e2e)."""

from __future__ import annotations

import contextlib
import threading
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa

from connector import migrate
from connector.daemon import run_daemon
from connector.fleet import Fleet, FleetTiming, Membership
from connector.sync import Connector
from connector.testing.emulator import Emulator
from tests.support import config_dict, create_customers, load, wait_until

QUICK = FleetTiming(claim_seconds=0.1)


def upgraded(url: str) -> None:
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()


def connectors(stack: ExitStack, url: str, emulator: Emulator, count: int) -> list[Connector]:
    """One daemon's connectors: its own Connector objects, as another process would have."""
    return [
        stack.enter_context(Connector(load(config_dict(url, emulator, name=f"c{n}"))))
        for n in range(1, count + 1)
    ]


def test_members_are_counted_while_their_sessions_live(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    first, second = Membership(engine), Membership(engine)
    try:
        assert first.live_daemons() == 1
        assert second.live_daemons() == 2
        assert first.live_daemons() == 2
        assert {first.slot, second.slot} == {0, 1}
        second.leave()
        second.leave()  # twice is harmless
        assert first.live_daemons() == 1
    finally:
        first.leave()
        second.leave()
        engine.dispose()


def test_members_of_another_schema_do_not_count(pg_url: str) -> None:
    from tests.support import postgres_schema  # noqa: PLC0415

    with postgres_schema() as other_url:
        here, there = sa.create_engine(pg_url), sa.create_engine(other_url)
        first, second = Membership(here), Membership(there)
        try:
            assert first.live_daemons() == 1
            assert second.live_daemons() == 1
        finally:
            first.leave()
            second.leave()
            here.dispose()
            there.dispose()


def test_a_joining_daemon_gets_half_and_a_leaving_ones_move_back(
    pg_url: str, emulator: Emulator
) -> None:
    upgraded(pg_url)
    with ExitStack() as stack:
        first = Fleet(connectors(stack, pg_url, emulator, 6), timing=QUICK, daemon="first")
        first.start()
        stack.callback(first.stop)
        wait_until(lambda: len(first.owned()) == 6, timeout=30)

        second = Fleet(connectors(stack, pg_url, emulator, 6), timing=QUICK, daemon="second")
        second.start()
        stack.callback(second.stop)
        wait_until(lambda: len(first.owned()) == len(second.owned()) == 3, timeout=30)
        assert set(first.owned()).isdisjoint(second.owned())

        first.stop()
        first.stop()  # twice is harmless
        assert first.owned() == []
        wait_until(lambda: len(second.owned()) == 6, timeout=30)


def test_on_sqlite_the_first_daemon_runs_them_all_and_the_other_takes_over_at_its_stop(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    upgraded(url)
    with ExitStack() as stack:
        first = Fleet(connectors(stack, url, emulator, 3), timing=QUICK, daemon="first")
        first.start()
        stack.callback(first.stop)
        wait_until(lambda: len(first.owned()) == 3, timeout=30)
        second = Fleet(connectors(stack, url, emulator, 3), timing=QUICK, daemon="second")
        second.start()
        stack.callback(second.stop)
        first.stop()
        wait_until(lambda: len(second.owned()) == 3, timeout=30)


def test_a_stopped_connector_is_released_and_not_claimed_again(
    pg_url: str, emulator: Emulator
) -> None:
    upgraded(pg_url)
    claimed: list[str] = []
    with ExitStack() as stack:
        mine = connectors(stack, pg_url, emulator, 2)
        fleet = Fleet(mine, timing=QUICK, daemon="only", on_owned=claimed.append)
        fleet.start()
        stack.callback(fleet.stop)
        wait_until(lambda: len(fleet.owned()) == 2, timeout=30)
        mine[0].stop.set()  # as a fatal error does
        wait_until(lambda: fleet.owned() == ["c2"], timeout=30)
        for _ in range(3):
            fleet.balance()
            assert fleet.slots["c1"].state == "idle", "a stopped connector is not claimed"
        assert fleet.run_cycle("c1") is None, "nor run"
        assert sorted(claimed) == ["c1", "c2"]


def test_a_daemon_runs_more_connectors_at_once_than_a_default_scheduler_has_workers(
    emulator: Emulator, tmp_path: Path
) -> None:
    """APScheduler's default pool has 10 workers: with 12 connectors whose cycles all wait on
    LeadSquared, the last two would wait for a worker, and be dropped once late."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_customers(url)
    emulator.add_lead("L1")
    stop = threading.Event()
    # No call gives up while the emulator holds its answer: only a worker per cycle lets all
    # twelve be in flight at once.
    held_long = {
        "sync": {"interval_seconds": 3600},
        "leadsquared": {"timeout_seconds": {"connect": 5, "read": 300, "total": 300}},
    }
    with ExitStack() as stack:
        many = [
            stack.enter_context(
                Connector(load(config_dict(url, emulator, name=f"c{n}", **held_long)))
            )
            for n in range(1, 13)
        ]
        for connector in many:
            connector.init()
        app = stack.enter_context(contextlib.closing(sa.create_engine(url).connect()))
        app.exec_driver_sql(
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')"
        )
        app.commit()
        emulator.hold()
        daemon = threading.Thread(target=run_daemon, args=(many, stop), daemon=True)
        daemon.start()
        # Run in reverse: answer the calls, stop the daemon, wait for it.
        stack.callback(daemon.join, 60)
        stack.callback(stop.set)
        stack.callback(emulator.release)
        # Every connector's call is in flight at once, each held by the emulator.
        updates = [
            request
            for request in emulator.wait_for_requests(12, timeout=60)
            if request.api == "Lead.Update"
        ]
        assert len(updates) == 12
