"""LeadSquared at its worst, against the connector in-process: faults, throttling in all its
forms, permanent errors, refused keys, pacing shared through the database, the daily budget,
answers that never end, and keys that must never show.

Every test runs on SQLite and PostgreSQL, against the emulator over loopback HTTP. Nothing is
mocked; a test waits on real events (requests arriving, threads ending), never on a sleep.
Windows, timeouts and retry bounds are small so that the whole module stays fast.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.client import MAX_ANSWER_BYTES, LeadSquaredClient
from connector.clock import SystemClock
from connector.errors import FatalRunError, RetriableError
from connector.leads import LeadState
from connector.outcomes import RETRY_CAP
from connector.schema import lead as lead_table
from connector.schema import run as run_table
from connector.sync import RunReport
from connector.testing.emulator import Emulator, RecordedRequest
from tests.support import (
    ATTRIBUTES,
    CUSTOMERS_DDL,
    config_dict,
    execute,
    lead_states,
    load,
    source_values,
)

# Small enough to keep runs short, large enough for a shared machine's hiccups.
FAST_RETRY = {"attempts": 4, "max_seconds": 5}


def connector(
    url: str,
    emulator: Emulator,
    *,
    name: str = "test",
    table: str = "customers",
    clock: SystemClock | None = None,
    **leadsquared: Any,
) -> Connector:
    """A Connector on `url` calling `emulator`, with these `leadsquared` settings on top."""
    config = config_dict(
        url,
        emulator,
        name=name,
        leadsquared={"retry": FAST_RETRY, **leadsquared},
        source={"table": table, "key": "id"},
    )
    return Connector(load(config), clock=clock)


def insert_rows(
    engine: sa.Engine, rows: Sequence[tuple[int, str, str]], table: str = "customers"
) -> None:
    """(id, city, lead id) rows, in one transaction."""
    execute(
        engine,
        *(
            f"INSERT INTO {table} (id, city, lsq_prospect_id) VALUES ({key}, '{city}', '{lead}')"
            for key, city, lead in rows
        ),
    )


@contextmanager
def one_lead_queued(
    db_url: str, app: sa.Engine, emulator: Emulator, **leadsquared: Any
) -> Iterator[Connector]:
    """An initialised connector (these `leadsquared` settings) with one row queued: city Pune
    for lead L1, which LeadSquared holds."""
    emulator.add_lead("L1")
    with connector(db_url, emulator, **leadsquared) as sync:
        sync.init()
        insert_rows(app, [(1, "Pune", "L1")])
        yield sync


def expected_in_leadsquared(url: str) -> dict[str, dict[str, str]]:
    """What LeadSquared must hold for every linked row: its non-empty mapped values."""
    return {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(url).items()
    }


def held_by(emulator: Emulator, lead_ids: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """The emulator's leads (these, or all), with cleared ("") values left out."""
    leads = emulator.leads()
    return {
        lead_id: {a: v for a, v in values.items() if v != ""}
        for lead_id, values in leads.items()
        if lead_ids is None or lead_id in lead_ids
    }


def updates_to(emulator: Emulator, lead_id: str) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.api == "Lead.Update" and r.lead_id == lead_id]


def sent(request: RecordedRequest) -> dict[str, str]:
    return {item["Attribute"]: item["Value"] for item in request.body}


def assert_untouched(state: LeadState) -> None:
    """Still waiting for its first push, with no failure recorded against it."""
    assert state.pending, state
    assert not state.rejected, state
    assert (state.attempts, state.last_error, state.next_attempt_at) == (0, None, None), state
    assert state.pushed == {}, state


def assert_window(arrivals: Sequence[float], calls: int, window: float) -> None:
    """No sliding window of `window` seconds holds more than `calls` arrivals."""
    ordered = sorted(arrivals)
    crowded = [
        (first, later)
        for first, later in zip(ordered, ordered[calls:], strict=False)
        if later - first < window
    ]
    assert not crowded, f"{calls + 1} arrivals within {window} s: {crowded[:3]}"


class LaterClock(SystemClock):
    """The system clock, moved forward on demand: what a cron's wait between runs does to a
    lead's `next_attempt_at`, without the wait. Sleeps and monotonic time stay real."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


# -- transient faults ---------------------------------------------------------------------------


FAULT_KINDS = ["503", "502", "504", "drop", "timeout"]


def random_workload(rng: random.Random, keys: Sequence[int], first: bool) -> list[str]:
    choices: dict[str, list[str]] = {
        "phone": ["'111'", "'222'", "'333'", "NULL"],
        "city": ["'Pune'", "'Goa'", "'Delhi'", "'Agra'", "NULL"],
        "plan": ["'free'", "'pro'", "NULL"],
        "score": ["1", "2", "3", "NULL"],
    }
    statements = []
    for key in keys:
        values = {column: rng.choice(options) for column, options in choices.items()}
        if first:
            statements.append(
                f"INSERT INTO customers (id, {', '.join(values)}, lsq_prospect_id) "
                f"VALUES ({key}, {', '.join(values.values())}, 'L{key}')"
            )
        elif rng.random() < 0.5:
            column = rng.choice(list(choices))
            statements.append(f"UPDATE customers SET {column} = {values[column]} WHERE id = {key}")
    return statements


def test_a_fifth_of_calls_failing_converges_over_a_few_runs(db_url: str, app: sa.Engine) -> None:
    rng = random.Random(20261129)
    keys = range(1, 37)
    clock = LaterClock()
    max_runs = 6
    with Emulator(rate_limit=None) as account:
        account.fault_timeout_seconds = 1.0  # the client's read timeout gives up well before
        account.set_latency(0.0, 0.05, seed=5)
        for key in keys:
            account.add_lead(f"L{key}")
        sync = connector(
            db_url,
            account,
            clock=clock,
            # Two tries per run: some leads run out of them and wait for a later run.
            retry={"attempts": 2, "max_seconds": 2},
            timeout_seconds={"connect": 1, "read": 0.25, "total": 5},
        )
        with sync:
            sync.init()
            account.set_fault_rate(0.2, FAULT_KINDS, seed=7)
            execute(app, *random_workload(rng, keys, first=True))
            reports = [sync.run_once()]
            # More changes arrive while some leads still wait for their retry.
            execute(app, *random_workload(rng, keys, first=False))
            while len(reports) < max_runs:
                clock.advance(RETRY_CAP)  # every deferred lead is due again
                reports.append(sync.run_once())
                if not any(state.pending for state in lead_states(sync).values()):
                    break
            states = lead_states(sync)
        outcomes = [r.outcome for r in account.requests]

    assert outcomes.count("fault") > 0, "the faults must have happened"
    assert all(report.status == "ok" for report in reports), reports
    assert not [s.lead_id for s in states.values() if s.pending], f"not converged: {reports}"
    assert not [s.lead_id for s in states.values() if s.rejected]
    assert sum(report.counts.leads_rejected for report in reports) == 0
    assert held_by(account) == expected_in_leadsquared(db_url)


# -- throttling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 200, 403])
def test_throttling_below_the_configured_limit_is_absorbed_without_giving_up(
    db_url: str, app: sa.Engine, status: int
) -> None:
    leads = [(i, f"c{i}", f"L{i}") for i in range(1, 11)]
    # The account allows fewer calls than the config says: throttling will happen. A window
    # long enough that the calls' pace, whatever margin the limiter learns, crowds it.
    with Emulator(rate_limit=(3, 1.0), throttle_status=status) as account:
        account.set_latency(0.0, 0.05, seed=2)
        for _, _, lead_id in leads:
            account.add_lead(lead_id)
        with connector(
            db_url, account, rate_limit={"calls": 6, "window_seconds": 1.0}, max_in_flight=4
        ) as sync:
            sync.init()
            insert_rows(app, leads)
            reports = [sync.run_once()]
            while any(s.pending for s in lead_states(sync).values()) and len(reports) < 3:
                reports.append(sync.run_once())
            states = lead_states(sync)
        requests = account.requests
        throttled = account.throttled_count

    assert throttled > 0, "the emulator must have throttled some calls"
    # Every throttled answer, in whichever form, was seen as throttling.
    assert sum(report.counts.calls_throttled for report in reports) == throttled
    assert (
        sum(report.counts.leads_rejected + report.counts.leads_deferred for report in reports) == 0
    )
    assert not [s for s in states.values() if s.pending or s.rejected or s.last_error]
    assert held_by(account) == expected_in_leadsquared(db_url)
    # Each throttled call was sent again, and that later call went through.
    for index, request in enumerate(requests):
        if request.outcome == "throttled":
            assert any(
                later.lead_id == request.lead_id and later.outcome == "success"
                for later in requests[index + 1 :]
            ), request


def test_no_call_arrives_before_retry_after_has_passed(db_url: str, app: sa.Engine) -> None:
    # Longer than the window (1 s and the margin, at most half a window) waited without it.
    retry_after = 2.0
    leads = [(i, f"c{i}", f"L{i}") for i in range(1, 7)]
    with Emulator(rate_limit=(3, 1.0), retry_after=retry_after) as account:
        for _, _, lead_id in leads:
            account.add_lead(lead_id)
        # One call in flight: a call that had already started when the throttled answer came
        # back could not have known about it, so only with one can "no call" be exact.
        with connector(
            db_url, account, rate_limit={"calls": 4, "window_seconds": 1.0}, max_in_flight=1
        ) as sync:
            sync.init()
            insert_rows(app, leads)
            report = sync.run_once()
        requests = account.requests

    assert account.throttled_count > 0, "the emulator must have throttled a call"
    assert (
        report.counts.leads_pushed,
        report.counts.leads_deferred,
        report.counts.leads_rejected,
    ) == (6, 0, 0)
    for index, request in enumerate(requests[:-1]):
        if request.outcome == "throttled":
            gap = requests[index + 1].arrived_at - request.arrived_at
            assert gap >= retry_after, f"a call came {gap:.3f} s after a throttled answer"
    assert held_by(account) == expected_in_leadsquared(db_url)


# -- permanent errors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PermanentError:
    """A lead LeadSquared refuses for good, and how the source fixes it."""

    emulator: dict[str, Any]
    bad_row: str
    bad_lead: str
    error: str
    fix: str
    fixed_lead: str
    existing: dict[str, dict[str, str]] = field(default_factory=dict)
    refuse: Callable[[Emulator], None] | None = None


def _refuse_negative_scores(emulator: Emulator) -> None:
    emulator.reject_values("mx_Score", lambda value: value.startswith("-"))


PERMANENT_ERRORS = {
    "invalid-value": PermanentError(
        emulator={},
        refuse=_refuse_negative_scores,
        bad_row="INSERT INTO customers (id, city, score, lsq_prospect_id) "
        "VALUES (4, 'Agra', -5, 'L4')",
        bad_lead="L4",
        error="MXInvalidInputException: Invalid value for attribute mx_Score",
        fix="UPDATE customers SET score = 5 WHERE id = 4",
        fixed_lead="L4",
    ),
    "lead-does-not-exist": PermanentError(
        emulator={"missing_lead_error": "MXInvalidEntityException"},
        bad_row="INSERT INTO customers (id, city, lsq_prospect_id) VALUES (4, 'Agra', 'GONE')",
        bad_lead="GONE",
        error="MXInvalidEntityException: Lead does not exist in the system",
        fix="UPDATE customers SET lsq_prospect_id = 'L4' WHERE id = 4",
        fixed_lead="L4",
    ),
    "lead-not-found": PermanentError(
        emulator={"missing_lead_error": "MXInvalidEntityReferenceException"},
        bad_row="INSERT INTO customers (id, city, lsq_prospect_id) VALUES (4, 'Agra', 'GONE')",
        bad_lead="GONE",
        error="MXInvalidEntityReferenceException: Lead not found",
        fix="UPDATE customers SET lsq_prospect_id = 'L4' WHERE id = 4",
        fixed_lead="L4",
    ),
    "duplicate-entry": PermanentError(
        emulator={"unique_attributes": {"Phone"}},
        existing={"L0": {"Phone": "999"}},  # another lead, not in the source, has that phone
        bad_row="INSERT INTO customers (id, city, phone, lsq_prospect_id) "
        "VALUES (4, 'Agra', '999', 'L4')",
        bad_lead="L4",
        error="MXDuplicateEntryException: A Lead with same Phone already exists.",
        fix="UPDATE customers SET phone = '444' WHERE id = 4",
        fixed_lead="L4",
    ),
}


@pytest.mark.parametrize("case", PERMANENT_ERRORS.values(), ids=PERMANENT_ERRORS.keys())
def test_a_permanent_error_fails_only_its_lead_until_the_source_fixes_it(
    db_url: str, app: sa.Engine, case: PermanentError
) -> None:
    good = ["L1", "L2", "L3"]
    with Emulator(rate_limit=None, **case.emulator) as account:
        for lead_id in [*good, "L4"]:
            account.add_lead(lead_id)
        for lead_id, values in case.existing.items():
            account.add_lead(lead_id, **values)
        if case.refuse is not None:
            case.refuse(account)
        with connector(db_url, account) as sync:
            sync.init()
            execute(
                app,
                "INSERT INTO customers (id, city, phone, score, lsq_prospect_id) VALUES "
                "(1, 'Pune', '111', 1, 'L1'), (2, 'Goa', '222', 2, 'L2'), "
                "(3, 'Delhi', NULL, 3, 'L3')",
                case.bad_row,
            )
            first = sync.run_once()
            failed = lead_states(sync)[case.bad_lead]
            tries = len(updates_to(account, case.bad_lead))
            others = held_by(account, good)

            account.clear_requests()
            second = sync.run_once()
            calls_while_unchanged = account.requests

            execute(app, case.fix)
            third = sync.run_once()
            states = lead_states(sync)

    assert (first.status, first.counts.leads_pushed, first.counts.leads_rejected) == ("ok", 3, 1)
    assert first.counts.leads_deferred == 0
    assert failed.rejected
    assert failed.pending
    assert failed.last_error is not None
    assert case.error in failed.last_error
    assert tries == 1, "a permanent error is not retried"
    assert others == {k: v for k, v in expected_in_leadsquared(db_url).items() if k in good}
    # While the values stay the ones refused, no run calls for that lead (nor for any other).
    assert (second.status, second.counts.calls_made, calls_while_unchanged) == ("ok", 0, [])
    assert (third.counts.leads_pushed, third.counts.leads_rejected) == (1, 0)
    assert held_by(account)[case.fixed_lead] == expected_in_leadsquared(db_url)[case.fixed_lead]
    assert not states[case.fixed_lead].pending
    assert states[case.fixed_lead].last_error is None


def test_an_unknown_attribute_is_set_aside_and_the_rest_of_the_lead_is_pushed(
    db_url: str, app: sa.Engine
) -> None:
    without_plan = ATTRIBUTES - {"mx_Plan"}
    leads = ["L1", "L2"]
    with Emulator(rate_limit=None, attributes=without_plan) as partial:
        for lead_id in leads:
            partial.add_lead(lead_id)
        with connector(db_url, partial) as sync:
            sync.init()
            execute(
                app,
                "INSERT INTO customers (id, phone, city, plan, score, lsq_prospect_id) VALUES "
                "(1, '111', 'Pune', 'pro', 7, 'L1'), (2, '222', 'Goa', NULL, 3, 'L2')",
            )
            first = sync.run_once()
            after_first = lead_states(sync)
            held_after_first = held_by(partial)

            partial.clear_requests()
            unchanged = sync.run_once()
            calls_while_unchanged = partial.requests

            # A new value of the refused attribute is worth a new try (refused again here).
            execute(app, "UPDATE customers SET plan = 'max' WHERE id = 1")
            partial.clear_requests()
            changed = sync.run_once()
            retried = [sent(r) for r in partial.requests]
            after_change = lead_states(sync)["L1"]
        known = partial.leads()

    assert (first.status, first.counts.leads_pushed, first.counts.attributes_set_aside) == (
        "ok",
        2,
        1,
    )
    assert (first.counts.leads_rejected, first.counts.leads_deferred) == (0, 0)
    assert after_first["L1"].set_aside == {"mx_Plan": "pro"}
    assert after_first["L2"].set_aside == {}
    assert not after_first["L1"].pending
    # The reason stays on the lead, although the rest of it was pushed.
    assert after_first["L1"].last_error is not None
    assert (
        "MXUnknownAttributeException: Attribute(s) does not exist - mx_Plan"
        in after_first["L1"].last_error
    )
    # The lead's other attributes did reach LeadSquared.
    assert held_after_first == {
        "L1": {"Phone": "111", "mx_City": "Pune", "mx_Score": "7"},
        "L2": {"Phone": "222", "mx_City": "Goa", "mx_Score": "3"},
    }
    assert (unchanged.counts.calls_made, calls_while_unchanged) == (0, [])
    assert retried == [{"mx_Plan": "max"}]
    assert changed.counts.attributes_set_aside == 1
    assert after_change.set_aside == {"mx_Plan": "max"}

    # The field is added in LeadSquared; a retry pushes what was set aside.
    with Emulator(rate_limit=None, attributes=ATTRIBUTES) as full:
        for lead_id, values in known.items():
            full.add_lead(lead_id, **values)
        with connector(db_url, full) as sync:
            assert sync.run_once().counts.calls_made == 0, "set aside until a retry is asked for"
            assert sync.retry() == 1
            report = sync.run_once()
            states = lead_states(sync)
        assert [(r.lead_id, sent(r)) for r in full.requests] == [("L1", {"mx_Plan": "max"})]
        assert held_by(full) == expected_in_leadsquared(db_url)
    assert (report.counts.leads_pushed, report.counts.attributes_set_aside) == (1, 0)
    assert (states["L1"].set_aside, states["L1"].pending, states["L1"].last_error) == (
        {},
        False,
        None,
    )


# -- refused keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["access_key", "secret_key"])
def test_refused_keys_stop_the_run_after_one_call_and_lose_nothing(
    db_url: str, app: sa.Engine, emulator: Emulator, wrong: str
) -> None:
    leads = [(i, f"c{i}", f"L{i}") for i in range(1, 9)]
    for _, _, lead_id in leads:
        emulator.add_lead(lead_id)
    with connector(db_url, emulator, max_in_flight=4, **{wrong: "not-the-key"}) as refused:
        refused.init()
        insert_rows(app, leads)
        with pytest.raises(FatalRunError, match="401") as raised:
            refused.run_once()
        states = lead_states(refused)
        (run,) = refused.tables.runs.recent_runs()

    assert "access_key" in str(raised.value)
    assert "secret_key" in str(raised.value)
    assert [r.status for r in emulator.requests] == [401], "one call, and only one"
    assert set(states) == {lead_id for _, _, lead_id in leads}
    for state in states.values():
        assert_untouched(state)
    assert run.status == "failed"
    assert "401" in run.error
    assert emulator.leads() == {lead_id: {} for _, _, lead_id in leads}

    with connector(db_url, emulator, max_in_flight=4) as fixed:
        report = fixed.run_once()
    assert (report.status, report.counts.leads_pushed, report.counts.calls_made) == ("ok", 8, 8)
    assert held_by(emulator) == expected_in_leadsquared(db_url)


# -- pacing --------------------------------------------------------------------------------------


def test_pacing_at_the_accounts_own_limit_is_never_throttled(db_url: str, app: sa.Engine) -> None:
    # A 2 s window: the margin is capped at half the window, and on a loaded machine the time
    # from a slot to its call's arrival has exceeded the 0.25 s a 0.5 s window allows (one
    # throttled call in a CI run). The pacing itself is measured in bench/pacing.py.
    calls, window = 10, 2.0
    leads = [(i, f"c{i}", f"L{i}") for i in range(1, 26)]
    with Emulator(rate_limit=(calls, window)) as account:
        account.set_latency(0.02, 0.08, seed=3)
        for _, _, lead_id in leads:
            account.add_lead(lead_id)
        # margin_seconds left at its default.
        with connector(
            db_url,
            account,
            rate_limit={"calls": calls, "window_seconds": window},
            max_in_flight=4,
        ) as sync:
            sync.init()
            insert_rows(app, leads)
            report = sync.run_once()
        arrivals = [r.arrived_at for r in account.requests]

    assert (report.counts.leads_pushed, report.counts.calls_throttled, account.throttled_count) == (
        25,
        0,
        0,
    )
    assert len(arrivals) == 25
    assert_window(arrivals, calls, window)
    assert held_by(account) == expected_in_leadsquared(db_url)


def test_two_connectors_sharing_the_keys_keep_together_to_one_limit(
    db_url: str, app: sa.Engine
) -> None:
    calls, window = 5, 0.5
    execute(app, CUSTOMERS_DDL.replace("customers", "prospects"))
    alpha = [(i, f"a{i}", f"A{i}") for i in range(1, 13)]
    beta = [(i, f"b{i}", f"B{i}") for i in range(1, 13)]
    with Emulator(rate_limit=(calls, window)) as account:
        account.set_latency(0.01, 0.05, seed=4)
        for _, _, lead_id in alpha + beta:
            account.add_lead(lead_id)
        # A margin wider than the default: eight threads and the emulator share one process
        # (and its GIL), and this test is about sharing, not about the margin.
        limit = {"calls": calls, "window_seconds": window, "margin_seconds": 0.2}
        # Two connector names (each has its own run lock), each with its own engine.
        with (
            connector(db_url, account, name="alpha", rate_limit=limit) as first,
            connector(db_url, account, name="beta", table="prospects", rate_limit=limit) as second,
        ):
            first.init()
            second.init()
            insert_rows(app, alpha)
            insert_rows(app, beta, table="prospects")
            # Started together. How their calls interleave is up to the database's locks (on
            # SQLite one may wait out much of the other's run); either way, a limiter per
            # connector would crowd the window unless one run waited out the other entirely.
            together = threading.Barrier(2)

            def run(sync: Connector) -> RunReport:
                together.wait(timeout=10)
                return sync.run_once()

            with ThreadPoolExecutor(2) as pool:
                reports = list(pool.map(run, [first, second]))
        requests = account.requests

    assert [(r.status, r.counts.leads_pushed) for r in reports] == [("ok", 12), ("ok", 12)]
    assert account.throttled_count == 0
    assert_window([r.arrived_at for r in requests], calls, window)
    assert held_by(account) == {
        **{lead_id: {"mx_City": city} for _, city, lead_id in alpha},
        **{lead_id: {"mx_City": city} for _, city, lead_id in beta},
    }


def test_a_run_started_right_after_another_keeps_to_the_window(db_url: str, app: sa.Engine) -> None:
    calls, window = 5, 1.0
    earlier = [(i, f"c{i}", f"L{i}") for i in range(1, 6)]
    later = [(i, f"c{i}", f"L{i}") for i in range(6, 11)]
    with Emulator(rate_limit=(calls, window)) as account:
        for _, _, lead_id in earlier + later:
            account.add_lead(lead_id)
        # A window long enough for a run to end and the next to start within it, and the
        # margin as wide as in the test above: this one is about runs sharing the window too.
        limit = {"calls": calls, "window_seconds": window, "margin_seconds": 0.2}
        with connector(db_url, account, rate_limit=limit) as sync:
            sync.init()
            insert_rows(app, earlier)
            first = sync.run_once()
        insert_rows(app, later)
        # A new process, as cron or a manual run would start: nothing shared but the database.
        with connector(db_url, account, rate_limit=limit) as sync:
            second_started = time.monotonic()  # the emulator's clock too
            second = sync.run_once()
        requests = account.requests

    assert (first.counts.leads_pushed, second.counts.leads_pushed) == (5, 5)
    # The premise: the second run began while the first run's calls still filled the window.
    assert second_started - requests[0].arrived_at < window
    assert account.throttled_count == 0
    assert_window([r.arrived_at for r in requests], calls, window)


# -- the daily budget ----------------------------------------------------------------------------


def budget_run(db_url: str, app: sa.Engine, emulator: Emulator) -> Connector:
    """A connector with a daily budget of 3 calls, and 5 leads waiting for their push."""
    leads = [(i, f"c{i}", f"L{i}") for i in range(1, 6)]
    for _, _, lead_id in leads:
        emulator.add_lead(lead_id)
    budget = {"calls": 1000, "window_seconds": 1, "daily_budget": 3}
    sync = connector(db_url, emulator, rate_limit=budget, max_in_flight=4)
    sync.init()
    insert_rows(app, leads)
    return sync


def resumes_tomorrow() -> str:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    return f"pushing resumes after {tomorrow:%Y-%m-%d} 00:00 UTC"


def test_the_daily_budget_stops_the_run_cleanly_and_loses_nothing(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    with budget_run(db_url, app, emulator) as sync:
        first = sync.run_once()
        calls_first = len(emulator.requests)
        second = sync.run_once()
        calls_second = len(emulator.requests) - calls_first
        states = lead_states(sync)
        runs = [(r.status, r.error) for r in sync.tables.runs.recent_runs()]

    assert (first.status, first.counts.calls_made, first.counts.leads_pushed, calls_first) == (
        "stopped",
        3,
        3,
        3,
    )
    assert (second.status, second.counts.calls_made, calls_second) == ("stopped", 0, 0)
    assert [status for status, _ in runs] == ["stopped", "stopped"]
    for _, error in runs:
        assert error is not None
        assert resumes_tomorrow() in error
        assert "leadsquared.rate_limit.daily_budget" in error
    waiting = [state for state in states.values() if state.pending]
    assert len(waiting) == 2
    for state in waiting:
        assert_untouched(state)

    # Nothing was lost: with room in the budget the next run pushes the rest.
    more = {"calls": 1000, "window_seconds": 1, "daily_budget": 10}
    with connector(db_url, emulator, rate_limit=more) as sync:
        third = sync.run_once()
    assert (third.status, third.counts.leads_pushed, third.counts.calls_made) == ("ok", 2, 2)
    assert held_by(emulator) == expected_in_leadsquared(db_url)


def test_the_run_report_says_when_pushing_resumes(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    with budget_run(db_url, app, emulator) as sync:
        report = sync.run_once()

    assert report.status == "stopped"
    assert report.error is not None
    assert resumes_tomorrow() in report.error
    assert resumes_tomorrow() in report.summary()


# -- timeouts ------------------------------------------------------------------------------------


def test_an_answer_that_trickles_in_is_abandoned_at_the_total_timeout(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    # Far longer than the run takes on a loaded machine, so that waiting it out shows.
    drip = 60.0
    emulator.fault_drip_seconds = drip
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    # Each piece comes within the read timeout; only the total bounds the call.
    timeouts = {"connect": 1, "read": 1, "total": 0.5}
    with connector(db_url, emulator, timeout_seconds=timeouts, max_in_flight=1) as sync:
        sync.init()
        insert_rows(app, [(1, "Pune", "L1"), (2, "Goa", "L2")])
        emulator.fail_next(1, "drip")
        started = time.monotonic()
        report = sync.run_once()
        elapsed = time.monotonic() - started
        states = lead_states(sync)

    assert [(r.status, r.outcome) for r in emulator.requests][:2] == [
        (200, "fault"),
        (200, "success"),
    ]
    dripped = emulator.requests[0].lead_id
    assert dripped is not None
    assert [r.outcome for r in updates_to(emulator, dripped)] == ["fault", "success"]
    assert (report.counts.leads_pushed, report.counts.leads_deferred, report.counts.calls_made) == (
        2,
        0,
        3,
    )
    assert elapsed < drip, f"the run waited {elapsed:.1f} s: the whole drip"
    assert not [s for s in states.values() if s.pending or s.last_error]
    assert held_by(emulator) == expected_in_leadsquared(db_url)


def test_a_call_that_timed_out_is_sent_again(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.fault_timeout_seconds = 5.0
    timeouts = {"connect": 1, "read": 0.3, "total": 5}
    with one_lead_queued(db_url, app, emulator, timeout_seconds=timeouts) as sync:
        emulator.fail_next(1, "timeout")
        report = sync.run_once()
        (state,) = lead_states(sync).values()

    attempts = updates_to(emulator, "L1")
    assert [r.outcome for r in attempts] == ["fault", "success"]
    assert sent(attempts[0]) == sent(attempts[1]) == {"mx_City": "Pune"}
    assert (report.counts.leads_pushed, report.counts.leads_deferred) == (1, 0)
    assert (state.pending, state.last_error) == (False, None)
    assert emulator.lead("L1") == {"mx_City": "Pune"}


def test_an_update_that_landed_but_whose_answer_was_lost_is_sent_again(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    timeouts = {"connect": 1, "read": 0.3, "total": 5}
    with one_lead_queued(db_url, app, emulator, timeout_seconds=timeouts) as sync:
        emulator.hold()  # the update is applied, its answer does not come
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(sync.run_once)
            try:
                emulator.wait_for_requests(2)  # the client gave up and sent it again
            finally:
                emulator.release()
            report = running.result(timeout=30)
        (state,) = lead_states(sync).values()

    attempts = updates_to(emulator, "L1")
    assert len(attempts) >= 2
    assert all(sent(r) == {"mx_City": "Pune"} for r in attempts), "the same absolute values"
    assert (report.counts.leads_pushed, report.counts.leads_deferred) == (1, 0)
    assert (state.pending, state.last_error) == (False, None)
    assert emulator.lead("L1") == {"mx_City": "Pune"}


# -- per-lead ordering ---------------------------------------------------------------------------


def test_a_deferred_lead_that_changes_again_ends_at_its_newest_value(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    with one_lead_queued(db_url, app, emulator, retry={"attempts": 1, "max_seconds": 5}) as sync:
        emulator.fail_next(1, "503")
        deferring = sync.run_once()
        (deferred,) = lead_states(sync).values()
        waiting = sync.run_once()

        execute(app, "UPDATE customers SET city = 'Delhi' WHERE id = 1")
        newest = sync.run_once()
        (state,) = lead_states(sync).values()

    assert (deferring.counts.leads_deferred, deferring.counts.leads_pushed) == (1, 0)
    assert deferred.pending
    assert deferred.next_attempt_at is not None
    assert deferred.next_attempt_at > datetime.now(UTC)
    assert deferred.last_error is not None
    assert "HTTP 503" in deferred.last_error
    assert waiting.counts.calls_made == 0, "the lead waits for its next attempt"
    assert (newest.counts.leads_pushed, newest.counts.calls_made) == (1, 1)
    assert [(r.status, sent(r)) for r in updates_to(emulator, "L1")] == [
        (503, {"mx_City": "Pune"}),
        (200, {"mx_City": "Delhi"}),
    ]
    assert emulator.lead("L1") == {"mx_City": "Delhi"}
    assert (state.pending, state.next_attempt_at, state.last_error) == (False, None, None)


# -- keys ----------------------------------------------------------------------------------------

# Every character that means something in a URL or a query string; the alphanumeric cores
# survive any encoding, so not finding them rules out encodings not listed below too.
ACCESS_KEY = "Ak7CORE$/+=u"
SECRET_KEY = "Sk9CORE$ /+=%v=="
WRONG_SECRET = "Wr0CORE$/+=x"
CORES = ("Ak7CORE", "Sk9CORE", "Wr0CORE")


def encoded(secret: str) -> set[str]:
    return {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}


@pytest.mark.parametrize("auth", ["query", "header"])
def test_keys_with_url_characters_work_and_never_show(
    db_url: str, app: sa.Engine, auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "connector"):
        caplog.set_level(logging.DEBUG, logger=name)
    with Emulator(access_key=ACCESS_KEY, secret_key=SECRET_KEY, rate_limit=None) as account:
        account.add_lead("L1")
        account.add_lead("L2")
        keys = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "auth": auth}
        # One try per run, so the 503 leaves its error stored on the lead.
        once = {"attempts": 1, "max_seconds": 5}
        with connector(db_url, account, retry=once, **keys) as sync:
            sync.init()
            insert_rows(app, [(1, "Pune", "L1"), (2, "Goa", "L2")])
            account.fail_next(1, "503")
            first = sync.run_once()
        execute(app, "UPDATE customers SET city = 'Agra' WHERE id = 2")
        wrong = {**keys, "secret_key": WRONG_SECRET}
        with (
            connector(db_url, account, retry=once, **wrong) as refused,
            pytest.raises(FatalRunError) as raised,
        ):
            refused.run_once()
        statuses = [r.status for r in account.requests]
        held = held_by(account)

    assert statuses == [503, 200, 401], "a fault, a success with these keys, and a 401"
    assert (first.counts.leads_pushed, first.counts.leads_deferred) == (1, 1)
    assert sorted(map(len, held.values())) == [0, 1], "the success reached LeadSquared"
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        leads = connection.execute(sa.select(lead_table)).all()
        runs = connection.execute(sa.select(run_table)).all()
    engine.dispose()
    assert any(row.last_error and "HTTP 503" in row.last_error for row in leads)
    assert any(row.error and "401" in row.error for row in runs)
    stored = [*leads, *runs]
    logged = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    assert "Lead.Update" in logged, "the DEBUG logging did happen"
    everything = logged + repr(stored) + str(raised.value) + repr(raised.value)
    leaked = {
        form
        for secret in (ACCESS_KEY, SECRET_KEY, WRONG_SECRET)
        for form in encoded(secret)
        if form in everything
    }
    assert not leaked
    assert not [core for core in CORES if core.lower() in everything.lower()]


def echoes(secret: str) -> list[str]:
    """How a server quoting the request back may write a key: percent-encoded in lower case
    (.NET's UrlEncode), JSON-escaped as .NET's serialisers do (\\/ and \\u002B)."""
    return [
        quote(secret, safe="").lower(),
        quote_plus(secret).lower(),
        secret.replace("/", "\\/").replace("+", "\\u002B"),
    ]


def echo_body(status: str) -> str:
    quoted = " ".join(form for secret in (ACCESS_KEY, SECRET_KEY) for form in echoes(secret))
    if status == "Error":
        return (
            '{"Status":"Error","ExceptionType":"MXInvalidInputException",'
            f'"ExceptionMessage":"bad request {quoted}"}}'
        )
    return f'{{"Status":"{status}","Echo":"{quoted}"}}'


@pytest.mark.parametrize("auth", ["query", "header"])
def test_keys_echoed_back_in_any_encoding_or_a_redirect_never_show(
    db_url: str, app: sa.Engine, auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "connector"):
        caplog.set_level(logging.DEBUG, logger=name)
    keys = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "auth": auth}
    query = f"accessKey={quote(ACCESS_KEY, safe='')}&secretKey={quote(SECRET_KEY, safe='')}"
    elsewhere = f"https://elsewhere.example/v2/LeadManagement.svc/Lead.Update?{query}"
    with Emulator(access_key=ACCESS_KEY, secret_key=SECRET_KEY, rate_limit=None) as account:
        account.add_lead("L1")
        account.add_lead("L2")
        with connector(db_url, account, retry={"attempts": 1, "max_seconds": 5}, **keys) as sync:
            sync.init()
            insert_rows(app, [(1, "Pune", "L1"), (2, "Goa", "L2")])
            account.answer_next(1, 500, echo_body("Error"))
            account.answer_next(1, 200, echo_body("Pending"))
            first = sync.run_once()
            errors = [state.last_error for state in lead_states(sync).values()]
            execute(app, "UPDATE customers SET city = 'Agra' WHERE id = 1")
            echo = f"{SECRET_KEY};{quote(SECRET_KEY, safe='').lower()}"
            echoed = [("Location", elsewhere), ("X-Echo", echo)]
            account.answer_next(1, 301, "", headers=echoed)
            with pytest.raises(FatalRunError) as raised:
                sync.run_once()
        statuses = [r.status for r in account.requests]

    assert statuses == [500, 200, 301]
    assert (first.counts.leads_rejected, first.counts.leads_deferred) == (1, 1)
    assert "redirected to https://elsewhere.example (HTTP 301)" in str(raised.value)
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        errors += connection.scalars(sa.select(run_table.c.error)).all()
    engine.dispose()
    assert len([e for e in errors if e]) == 3, "both leads' errors and the run's"
    logged = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    assert "receive_response_headers" in logged, "httpcore's DEBUG logging did happen"
    everything = logged + repr(errors) + str(raised.value) + repr(raised.value)
    assert not [core for core in CORES if core.lower() in everything.lower()]


def test_an_error_message_that_cannot_be_stored_as_text_fails_only_its_lead(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    # A lone surrogate: valid JSON, but no UTF-8 text holds it.
    refused = '{"Status":"Error","ExceptionType":"MXInvalidInputException",'
    refused += '"ExceptionMessage":"bad value \\ud800 for mx_City"}'
    with connector(db_url, emulator) as sync:
        sync.init()
        insert_rows(app, [(1, "Pune", "L1"), (2, "Goa", "L2")])
        emulator.answer_next(1, 500, refused)
        report = sync.run_once()
        states = lead_states(sync)

    assert (report.status, report.counts.leads_pushed, report.counts.leads_rejected) == ("ok", 1, 1)
    (rejected,) = [state for state in states.values() if state.rejected]
    assert rejected.last_error is not None
    assert "MXInvalidInputException: bad value" in rejected.last_error
    assert "for mx_City" in rejected.last_error


# -- answers that are not what they should be ----------------------------------------------------


NOT_A_SUCCESS = {"list": "[]", "object": "{}", "pending": '{"Status":"Pending"}', "string": '"ok"'}


@pytest.mark.parametrize("body", NOT_A_SUCCESS.values(), ids=NOT_A_SUCCESS.keys())
def test_a_200_without_status_success_is_not_counted_as_pushed(
    db_url: str, app: sa.Engine, emulator: Emulator, body: str
) -> None:
    clock = LaterClock()
    retry = {"attempts": 2, "max_seconds": 5}
    with one_lead_queued(db_url, app, emulator, retry=retry, clock=clock) as sync:
        emulator.answer_next(2, 200, body)
        first = sync.run_once()
        (unsure,) = lead_states(sync).values()

        clock.advance(RETRY_CAP)
        second = sync.run_once()
        (state,) = lead_states(sync).values()

    assert [r.status for r in updates_to(emulator, "L1")] == [200, 200, 200]
    assert (first.counts.leads_pushed, first.counts.leads_deferred) == (0, 1)
    assert unsure.pending
    assert unsure.pushed == {}, "an answer without Status: Success is not a push"
    assert unsure.last_error is not None
    assert "without an object with Status: Success" in unsure.last_error
    assert (second.counts.leads_pushed, state.pending, state.pushed) == (
        1,
        False,
        {"mx_City": "Pune"},
    )
    assert emulator.lead("L1") == {"mx_City": "Pune"}


def test_a_bare_mx_exception_is_retried_like_a_transient_failure(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    with one_lead_queued(db_url, app, emulator, retry={"attempts": 3, "max_seconds": 10}) as sync:
        emulator.fail_next(2, "mx500")
        report = sync.run_once()
        (state,) = lead_states(sync).values()

    assert [r.status for r in updates_to(emulator, "L1")] == [500, 500, 200]
    assert (report.counts.leads_pushed, report.counts.leads_rejected) == (1, 0)
    assert (state.pending, state.rejected, state.last_error) == (False, False, None)
    assert emulator.lead("L1") == {"mx_City": "Pune"}


def test_a_bare_mx_exception_that_persists_parks_the_lead_until_a_retry(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L2")
    with one_lead_queued(db_url, app, emulator, retry={"attempts": 3, "max_seconds": 10}) as sync:
        emulator.fail_next(3, "mx500")
        parking = sync.run_once()
        (parked,) = lead_states(sync).values()

        emulator.clear_requests()
        insert_rows(app, [(2, "Goa", "L2")])
        others = sync.run_once()
        calls_while_parked = updates_to(emulator, "L1")

        assert sync.retry(["L1"]) == 1
        retried = sync.run_once()
        (state, _) = lead_states(sync).values()

    assert (
        parking.counts.leads_pushed,
        parking.counts.leads_rejected,
        parking.counts.calls_made,
    ) == (0, 1, 3)
    assert (parked.rejected, parked.pushed) == (True, {})
    assert parked.last_error is not None
    assert "MXException: There was an error processing the request." in parked.last_error
    assert "after 3 tries" in parked.last_error
    assert (others.counts.leads_pushed, calls_while_parked) == (1, [])
    assert (retried.counts.leads_pushed, state.lead_id, state.pending, state.rejected) == (
        1,
        "L1",
        False,
        False,
    )
    assert held_by(emulator) == expected_in_leadsquared(db_url)


@pytest.mark.parametrize("kind", ["huge", "huge-chunked"])
def test_an_answer_too_large_to_hold_is_abandoned_and_the_call_retried(
    db_url: str, app: sa.Engine, emulator: Emulator, kind: str
) -> None:
    with one_lead_queued(db_url, app, emulator) as sync:
        emulator.fail_next(1, kind)
        report = sync.run_once()
        (state,) = lead_states(sync).values()

    assert [r.outcome for r in updates_to(emulator, "L1")] == ["fault", "success"]
    assert (report.counts.leads_pushed, report.counts.leads_deferred, report.counts.calls_made) == (
        1,
        0,
        2,
    )
    assert (state.pending, state.last_error) == (False, None)


@pytest.mark.parametrize("kind", ["huge", "huge-chunked"])
def test_a_1_gib_answer_costs_the_process_no_more_than_the_cap(kind: str, tmp_path: Path) -> None:
    with Emulator(rate_limit=None) as account:
        account.add_lead("L1")
        account.fail_next(1, kind)
        config = load(config_dict(f"sqlite:///{tmp_path / 'unused.db'}", account)).leadsquared
        tracemalloc.start()
        try:
            with (
                LeadSquaredClient(config) as client,
                pytest.raises(RetriableError) as raised,
            ):
                client.update_lead("L1", {"mx_City": "Pune"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert account.fault_huge_bytes == 1 << 30
    assert type(raised.value) is RetriableError
    assert "larger than the 4,194,304 bytes accepted" in str(raised.value)
    assert peak < 4 * MAX_ANSWER_BYTES, f"{peak:,} bytes held at once"
