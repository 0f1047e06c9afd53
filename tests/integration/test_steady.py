"""A daemon's cycles hold steady: statements are built once while the source table's columns
stay as they are (SQLAlchemy keeps every compiled statement it is given), and a change
committed during a long push joins that push."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.instrumentation import Instrumentation
from connector.testing.emulator import Emulator
from tests.support import ATTRIBUTES, config_dict, load, wait_until_readable
from tests.support import execute as execute_now


def execute(engine: sa.Engine, *statements: str) -> None:
    """The application's writes, once a run can read them: on PostgreSQL, other sessions'
    open transactions on the shared server would hold them back (see wait_until_readable)."""
    execute_now(engine, *statements)
    wait_until_readable(engine)


@pytest.fixture
def sync(db_url: str, app: sa.Engine, emulator: Emulator) -> Iterator[Connector]:
    with Connector(load(config_dict(db_url, emulator))) as connector:
        connector.init()
        yield connector


def _busy_cycle(app: sa.Engine, sync: Connector, emulator: Emulator, cycle: int) -> None:
    """A cycle that ingests, pushes and records, as a daemon's busy cycles do."""
    emulator.add_lead(f"L{cycle}")
    execute(
        app,
        f"INSERT INTO customers (id, city, score, lsq_prospect_id) "
        f"VALUES ({cycle}, 'c{cycle}', {cycle}, 'L{cycle}')",
        f"UPDATE customers SET city = 'again {cycle}' WHERE id < {cycle}",
    )
    report = sync.run_once()
    assert report.status == "ok", report.summary()
    assert report.counts.leads_pushed == cycle


def _compiled_statements(sync: Connector) -> int:
    cache = sync.engine._compiled_cache  # private, but it is what grew
    assert cache is not None
    return len(cache)


def test_cycles_build_no_new_statement_while_the_columns_stay(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    _busy_cycle(app, sync, emulator, 1)
    _busy_cycle(app, sync, emulator, 2)
    source = sync.source
    compiled = _compiled_statements(sync)
    for cycle in range(3, 8):
        _busy_cycle(app, sync, emulator, cycle)
    assert sync.source is source
    assert _compiled_statements(sync) == compiled


def test_a_column_type_changed_under_a_daemon_is_read_as_its_new_type(
    pg_url: str, pg_app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    with Connector(load(config_dict(pg_url, emulator))) as sync:
        sync.init()
        execute(pg_app, "INSERT INTO customers (id, score, lsq_prospect_id) VALUES (1, 7, 'L1')")
        sync.run_once()
        assert isinstance(sync.source.table.c.score.type, sa.Integer)
        # As a migration of the application would, between two cycles of the daemon.
        execute(
            pg_app,
            "ALTER TABLE customers ALTER COLUMN score TYPE numeric(6, 2)",
            "UPDATE customers SET score = 7.25 WHERE id = 1",
        )
        report = sync.run_once()
        assert report.status == "ok", report.summary()
        assert isinstance(sync.source.table.c.score.type, sa.Numeric)
    assert emulator.leads()["L1"]["mx_Score"] == "7.25"


def test_a_column_added_under_a_daemon_reflects_the_table_again(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    _busy_cycle(app, sync, emulator, 1)
    source = sync.source
    execute(app, "ALTER TABLE customers ADD COLUMN extra TEXT")
    _busy_cycle(app, sync, emulator, 2)
    assert sync.source is not source
    assert "extra" in sync.source.table.c


def test_the_tables_version_is_asked_once_then_again_after_a_database_error(
    app: sa.Engine, sync: Connector, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector import migrate  # noqa: PLC0415
    from connector.errors import SourceDatabaseError  # noqa: PLC0415
    from connector.schema import VERSION_TABLE, lead  # noqa: PLC0415

    asked: list[str | None] = []
    real = migrate.current_revision

    def counted(engine: sa.Engine) -> str | None:
        asked.append(real(engine))
        return asked[-1]

    monkeypatch.setattr(migrate, "current_revision", counted)
    for cycle in range(1, 4):
        _busy_cycle(app, sync, emulator, cycle)
    assert len(asked) == 1
    # Someone drops the connector's tables: the run fails on the database, and the next one
    # finds out why.
    execute(app, f"DROP TABLE {lead.name}", f"DROP TABLE {VERSION_TABLE}")
    with pytest.raises(SourceDatabaseError):
        sync.run_once()
    with pytest.raises(Exception, match="run `lsq-sync init` first"):
        sync.run_once()
    assert asked[1:] == [None]


class _OnCall(Instrumentation):
    """Runs `action` once, as the `at`th call of the run is answered (in the push's worker)."""

    def __init__(self, at: int, action: Callable[[], None]) -> None:
        self.at, self.action, self.calls = at, action, 0

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.action()


def _pushed_order(emulator: Emulator) -> list[str | None]:
    return [r.lead_id for r in emulator.requests if r.api == "Lead.Update"]


def test_a_change_committed_during_a_long_push_goes_out_before_that_push_ends(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    burst = 60
    for n in [*range(1, burst + 1), 999]:
        emulator.add_lead(f"L{n:03}")
    # One call at a time, each answered no sooner than 0.05 s: the burst's push lasts at
    # least 3 s, so it takes changes in (every second) long before it ends.
    emulator.set_latency(0.05)
    fresh = "L999"  # last in lead id order, and last to change
    on_call = _OnCall(
        3,
        lambda: execute(
            app,
            f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES (999, 'fresh', '{fresh}')",
        ),
    )
    config = config_dict(db_url, emulator, leadsquared={"max_in_flight": 1})
    with Connector(load(config), instrumentation=on_call) as sync:
        sync.init()
        execute(
            app,
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
            + ", ".join(f"({n}, 'c{n}', 'L{n:03}')" for n in range(1, burst + 1)),
        )
        report = sync.run_once()
        runs = sync.tables.runs.recent_runs()
    assert report.status == "ok", report.summary()
    assert on_call.calls == burst + 1
    # Pushed by the run that was pushing when it was committed, before that push ended: the
    # fresh change did not wait for the backlog ahead of it.
    order = _pushed_order(emulator)
    assert sorted(order) == [f"L{n:03}" for n in [*range(1, burst + 1), 999]]
    assert order.index(fresh) < len(order) - 1
    assert [(r.run_id, r.leads_pushed) for r in runs] == [(report.run_id, burst + 1)]
    assert emulator.lead(fresh) == {"mx_City": "fresh"}


class _OnPushStart(Instrumentation):
    """Runs `action` as the push begins, before its first call."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def push_started(self, leads: int) -> None:
        self.action()


def test_a_change_committed_while_the_push_waits_for_its_last_call_goes_out_with_it(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    """Once the backlog is all handed out, the push still waits for its calls in flight; a
    single change taken in meanwhile goes out then, rather than waiting for the next run."""
    for lead_id in ("L001", "L002"):
        emulator.add_lead(lead_id)
    # The backlog's one call is answered 2.5 s after it is sent: the push takes in (every
    # second) the change committed as it began long before that answer.
    emulator.set_latency(2.5)
    on_start = _OnPushStart(
        lambda: execute(
            app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'b', 'L002')"
        )
    )
    with Connector(load(config_dict(db_url, emulator)), instrumentation=on_start) as sync:
        sync.init()
        execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'a', 'L001')")
        report = sync.run_once()
    assert report.status == "ok", report.summary()
    assert report.counts.leads_pushed == 2
    assert _pushed_order(emulator) == ["L001", "L002"]
    assert emulator.lead("L002") == {"mx_City": "b"}


def test_the_queue_serves_the_lead_waiting_longest_first(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    """A lead that keeps changing keeps its place (it cannot be starved by being changed
    again); once pushed, its next change queues behind those already waiting."""
    from datetime import timedelta  # noqa: PLC0415

    from connector.leads import DesiredChange  # noqa: PLC0415

    with Connector(load(config_dict(db_url, emulator))) as sync:
        sync.init()
        queue = sync.tables.queue(sync.source)
        start = sync.clock.now()

        def desire(lead_id: str, city: str, minutes: int) -> None:
            change = DesiredChange(lead_id, f"row-{lead_id}", {"mx_City": city})
            with sync.engine.begin() as connection:
                sync.tables.desired.write_desired(
                    connection, [change], start + timedelta(minutes=minutes)
                )

        def order() -> list[str]:
            due = start + timedelta(hours=1)
            return [state.lead_id for state in queue.pending_leads(due, None, 10)]

        desire("Z-hot", "a", 0)  # last in lead id order, first to wait
        desire("A-one", "b", 1)
        desire("M-two", "c", 2)
        desire("Z-hot", "a again", 3)
        desire("Z-hot", "a once more", 4)
        assert order() == ["Z-hot", "A-one", "M-two"]
        queue.record_pushed("Z-hot", {"mx_City": "a once more"}, ATTRIBUTES, start)
        desire("Z-hot", "after its push", 5)
        assert order() == ["A-one", "M-two", "Z-hot"]
        # Changed while its call was in flight: still pending, and as fresh as the change.
        desire("M-two", "c in flight", 6)
        queue.record_pushed("M-two", {"mx_City": "c"}, ATTRIBUTES, start + timedelta(minutes=7))
        assert order() == ["A-one", "Z-hot", "M-two"]
        # A retry delay keeps its place: once due, it goes before those that came later.
        queue.record_failure(
            "A-one", {"mx_City": "b"}, "503", start, rejected=False, next_attempt_at=start
        )
        assert order() == ["A-one", "Z-hot", "M-two"]
        page = queue.pending_leads(start + timedelta(hours=1), None, 1)
        assert [
            s.lead_id for s in queue.pending_leads(start + timedelta(hours=1), page[-1], 10)
        ] == [
            "Z-hot",
            "M-two",
        ]
