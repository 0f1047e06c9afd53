"""The sync cycle through the library API, on real SQLite and PostgreSQL and real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector import Connector, LsqSyncError
from connector.counts import RunCounts
from connector.testing.emulator import Emulator
from tests.support import config_dict, create_customers, execute, lead_state, load, source_values


@pytest.fixture
def sync(db_url: str, app: sa.Engine, emulator: Emulator) -> Iterator[Connector]:
    with Connector(load(config_dict(db_url, emulator))) as connector:
        connector.init()
        yield connector


def updates(emulator: Emulator) -> list[tuple[str | None, dict[str, str]]]:
    return [
        (r.lead_id, {f["Attribute"]: f["Value"] for f in r.body})
        for r in emulator.requests
        if r.api == "Lead.Update"
    ]


def test_new_rows_send_their_non_empty_mapped_values(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    execute(
        app,
        "INSERT INTO customers (id, name, phone, city, plan, score, notes, lsq_prospect_id) "
        "VALUES (1, 'Ada', '111', 'Pune', 'free', 7, 'x', 'L1'), "
        "(2, 'Bob', NULL, 'Goa', NULL, NULL, 'y', 'L2')",
    )
    report = sync.run_once()
    assert report.status == "ok"
    assert sorted(updates(emulator)) == [
        ("L1", {"Phone": "111", "mx_City": "Pune", "mx_Plan": "free", "mx_Score": "7"}),
        ("L2", {"mx_City": "Goa"}),
    ]


def test_coalesces_changes_and_sends_only_what_differs(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    execute(
        app,
        "INSERT INTO customers (id, phone, city, plan, lsq_prospect_id) "
        "VALUES (1, '111', 'Pune', 'free', 'L1')",
    )
    sync.run_once()
    emulator.clear_requests()
    execute(
        app,
        "UPDATE customers SET city = 'Goa' WHERE id = 1",
        "UPDATE customers SET city = 'Delhi' WHERE id = 1",
        "UPDATE customers SET plan = 'pro' WHERE id = 1",
        "UPDATE customers SET plan = 'free' WHERE id = 1",  # back to what was pushed
        "UPDATE customers SET notes = 'unmapped' WHERE id = 1",
    )
    sync.run_once()
    assert updates(emulator) == [("L1", {"mx_City": "Delhi"})]


def test_value_set_back_before_a_run_sends_nothing(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    sync.run_once()
    emulator.clear_requests()
    execute(
        app,
        "UPDATE customers SET city = 'Goa' WHERE id = 1",
        "UPDATE customers SET city = 'Pune' WHERE id = 1",
    )
    report = sync.run_once()
    assert report.counts.changes_ingested == 2
    assert updates(emulator) == []


def test_unmapped_and_no_op_updates_capture_nothing(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    sync.run_once()
    execute(
        app,
        "UPDATE customers SET notes = 'n', name = 'Ada' WHERE id = 1",
        "UPDATE customers SET city = 'Pune' WHERE id = 1",
    )
    assert sync.run_once().counts.changes_ingested == 0


def test_row_without_lead_id_waits_until_it_gets_one(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L9")
    execute(app, "INSERT INTO customers (id, city) VALUES (1, 'Pune')")
    report = sync.run_once()
    assert (report.counts.rows_without_lead_id, report.counts.calls_made) == (1, 0)
    execute(app, "UPDATE customers SET lsq_prospect_id = 'L9' WHERE id = 1")
    sync.run_once()
    assert emulator.lead("L9") == {"mx_City": "Pune"}


def test_rejected_lead_is_kept_with_its_error_and_not_retried(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    execute(
        app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        "(1, 'Pune', 'L1'), (2, 'Goa', 'MISSING')",
    )
    report = sync.run_once()
    assert (report.counts.leads_pushed, report.counts.leads_rejected) == (1, 1)
    state = lead_state(sync, "MISSING")
    assert state.pending
    assert state.rejected
    assert state.last_error is not None
    assert "MXInvalidEntityException" in state.last_error
    emulator.clear_requests()
    assert sync.run_once().counts.calls_made == 0
    # New values deserve a new try.
    emulator.add_lead("MISSING")
    execute(app, "UPDATE customers SET city = 'Agra' WHERE id = 2")
    sync.run_once()
    assert emulator.lead("MISSING") == {"mx_City": "Agra"}


def test_leadsquared_ends_equal_to_the_source(
    db_url: str, app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    for i in range(1, 31):
        emulator.add_lead(f"L{i}")
    execute(
        app,
        *(
            f"INSERT INTO customers (id, phone, city, score, lsq_prospect_id) "
            f"VALUES ({i}, '{i}{i}', 'c{i % 4}', {i}, 'L{i}')"
            for i in range(1, 31)
        ),
    )
    execute(
        app,
        "UPDATE customers SET city = 'moved' WHERE MOD(id, 3) = 0",
        "UPDATE customers SET score = score + 1 WHERE MOD(id, 5) = 0",
    )
    sync.run_once()
    expected = {
        lead: {a: v for a, v in values.items() if v is not None}
        for lead, values in source_values(db_url).items()
    }
    assert emulator.leads() == expected
    assert len(updates(emulator)) == 30


def test_a_second_concurrent_run_is_skipped_without_calls(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    from connector.runlock import Lease, RunLock  # noqa: PLC0415

    emulator.add_lead("L1")
    execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    other = RunLock(sync.engine, sync.config.name, clock=sync.clock, stop=sync.stop)
    with other.hold() as held:
        assert isinstance(held, Lease)
        report = sync.run_once()
    assert (report.status, report.counts.calls_made, emulator.requests) == ("skipped", 0, [])
    assert sync.run_once().counts.leads_pushed == 1


def test_backfill_queues_rows_written_before_init(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    execute(
        app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        "(1, 'Pune', 'L1'), (2, 'Goa', 'L2')",
    )
    with Connector(load(config_dict(db_url, emulator))) as connector:
        connector.init()
        assert connector.run_once().counts.calls_made == 0
        assert connector.backfill() == 2
        assert connector.run_once().counts.leads_pushed == 2
        # A second backfill finds nothing that differs: no call.
        connector.backfill()
        assert connector.run_once().counts.calls_made == 0
    assert emulator.leads() == {"L1": {"mx_City": "Pune"}, "L2": {"mx_City": "Goa"}}


def test_pacing_keeps_within_the_account_limit(db_url: str, app: sa.Engine) -> None:
    calls, window = 5, 1.0
    with Emulator(rate_limit=(calls, window)) as account:
        for i in range(1, 13):
            account.add_lead(f"L{i}")
        config = config_dict(
            db_url, account, leadsquared={"rate_limit": {"calls": calls, "window_seconds": window}}
        )
        with Connector(load(config)) as connector:
            connector.init()
            execute(
                app,
                *(
                    "INSERT INTO customers (id, city, lsq_prospect_id) "
                    f"VALUES ({i}, 'c{i}', 'L{i}')"
                    for i in range(1, 13)
                ),
            )
            report = connector.run_once()
        arrivals = [r.arrived_at for r in account.requests]
    assert (report.counts.leads_pushed, report.counts.calls_throttled, account.throttled_count) == (
        12,
        0,
        0,
    )
    for first, later in zip(arrivals, arrivals[calls:], strict=False):
        assert later - first >= window


def test_a_value_that_cannot_be_sent_holds_back_only_its_lead(
    tmp_path: Path, emulator: Emulator
) -> None:
    # SQLite only: it is the database that lets a TEXT column hold bytes.
    url = f"sqlite:///{tmp_path / 'bytes.db'}"
    create_customers(url)
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    with Connector(load(config_dict(url, emulator))) as sync:
        sync.init()
        with sync.engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO customers (id, city, lsq_prospect_id) VALUES (:i, :c, :l)"),
                [{"i": 1, "c": "Pune", "l": "L1"}, {"i": 2, "c": b"\x00\xff", "l": "L2"}],
            )
        report = sync.run_once()
        assert (report.status, report.counts.leads_pushed) == ("ok", 1)
        held = lead_state(sync, "L2")
        assert not held.rejected
        assert held.hold is not None
        assert "row 2, column 'city'" in held.hold
        execute(sync.engine, "UPDATE customers SET city = 'Goa' WHERE id = 2")
        sync.run_once()
    assert emulator.lead("L2") == {"mx_City": "Goa"}


def test_a_run_refuses_triggers_that_no_longer_match_the_mapping(
    db_url: str, app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    remapped = config_dict(db_url, emulator, mapping={"city": "mx_City", "name": "FirstName"})
    with Connector(load(remapped)) as changed, pytest.raises(LsqSyncError, match="init"):
        changed.run_once()
    with Connector(load(remapped)) as changed:
        changed.init()
        emulator.add_lead("L1")
        execute(app, "INSERT INTO customers (id, name, lsq_prospect_id) VALUES (1, 'Ada', 'L1')")
        changed.run_once()
        execute(app, "UPDATE customers SET name = 'Bea' WHERE id = 1")
        changed.run_once()
    assert emulator.lead("L1") == {"FirstName": "Bea"}


def test_a_run_refuses_to_start_when_capture_was_never_installed(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    from connector import migrate  # noqa: PLC0415

    with Connector(load(config_dict(db_url, emulator))) as connector:
        migrate.upgrade(connector.engine)  # as a failed `init` leaves it
        with pytest.raises(LsqSyncError, match="capture is not installed"):
            connector.run_once()


def test_a_run_that_died_is_marked_abandoned_by_the_next(app: sa.Engine, sync: Connector) -> None:
    from connector.schema import run  # noqa: PLC0415

    dead_run = sync.tables.runs.start_run(sync.clock.now())
    sync.run_once()
    with sync.engine.connect() as connection:
        statuses = dict(connection.execute(sa.select(run.c.run_id, run.c.status)).all())
    assert statuses[dead_run] == "abandoned"
    assert "running" not in statuses.values()


def test_run_history_older_than_keep_runs_days_is_deleted_as_a_run_starts(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    from datetime import timedelta  # noqa: PLC0415

    from connector.schema import run  # noqa: PLC0415

    config = config_dict(db_url, emulator, sync={"keep_runs_days": 7})
    with Connector(load(config)) as sync:
        sync.init()
        now = sync.clock.now()
        old, recent = (sync.tables.runs.start_run(now - timedelta(days=d)) for d in (8, 6))
        for run_id, days in ((old, 8), (recent, 6)):
            sync.tables.runs.finish_run(run_id, now - timedelta(days=days), "ok", RunCounts(), None)
        report = sync.run_once()
        with sync.engine.connect() as connection:
            kept = set(connection.execute(sa.select(run.c.run_id)).scalars())
    assert kept == {recent, report.run_id}


def test_many_changes_across_small_batches_end_at_the_latest_values(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    config = config_dict(db_url, emulator, sync={"ingest_batch_size": 2})
    with Connector(load(config)) as connector:
        connector.init()
        execute(
            app,
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
            "(1, 'c0', 'L1'), (2, 'd0', 'L2')",
        )
        execute(app, *(f"UPDATE customers SET city = 'c{i}' WHERE id = 1" for i in range(1, 8)))
        report = connector.run_once()
    # Nine change rows in five batches: one call per lead, with its latest values.
    assert (report.counts.changes_ingested, report.counts.calls_made) == (9, 2)
    assert emulator.leads() == {"L1": {"mx_City": "c7"}, "L2": {"mx_City": "d0"}}
