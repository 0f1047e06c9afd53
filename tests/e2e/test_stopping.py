"""Stopping promptly and saying what happened: signals on `run` and `daemon`, a call that hangs
at SIGTERM, a LeadSquared that cannot be reached, and the phase a database error came from.

The CLI runs as a subprocess against the emulator over loopback; every wait is on an event
(a request arriving, a log line, the process ending), with generous bounds.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from connector.testing.emulator import Emulator
from tests.e2e.harness import (
    ERROR_PREFIX,
    LineReader,
    Project,
    assert_clean_failure,
    parse_summary,
)
from tests.support import lock_holders, source_values

MAX_IN_FLIGHT = 3
# Far above any wait below: a process still running after it has not stopped at all.
EXIT_WITHIN = 60.0


def expected_leads(project: Project) -> dict[str, dict[str, str]]:
    return {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(project.url).items()
    }


def add_rows(project: Project, count: int) -> None:
    """Rows 1..count linked to leads L1..Ln, captured, and readable by the next ingest."""
    for i in range(1, count + 1):
        project.emulator.add_lead(f"L{i}")
    project.execute(
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        + ", ".join(f"({i}, 'city {i}', 'L{i}')" for i in range(1, count + 1))
    )
    wait_until_ingestible(project)


def wait_until_ingestible(project: Project) -> None:
    """On PostgreSQL an ingest reads only changes older than every transaction still open on
    the server (see the README), and other sessions of a shared test server may keep one open
    for seconds: wait for them, or the run under test would find nothing to push."""
    if not project.url.startswith("postgresql"):
        return
    (newest,) = project.query("SELECT max(tx_id) AS tx_id FROM lsq_sync_change")
    deadline = time.monotonic() + 120
    while True:
        (snapshot,) = project.query(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin"
        )
        if snapshot.xmin > newest.tx_id:
            return
        assert time.monotonic() < deadline, "a transaction on the server stayed open for 2 min"
        time.sleep(0.1)  # polling the condition above


def untouched_leads(project: Project) -> list[str]:
    """Leads still waiting for their first push, with nothing recorded against them."""
    rows = project.query(
        "SELECT lead_id FROM lsq_sync_lead WHERE pending AND NOT rejected AND attempts = 0 "
        "AND last_error IS NULL AND next_attempt_at IS NULL AND pushed = '{}' ORDER BY lead_id"
    )
    return [row.lead_id for row in rows]


@contextmanager
def running(project: Project, *args: str) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    """The CLI as a subprocess logging at INFO, its stderr read line by line; killed if the
    test leaves it running, and the emulator's answers released."""
    with project.popen("--log-level", "INFO", *args) as process:
        assert process.stderr is not None
        try:
            yield process, LineReader(process.stderr)
        finally:
            project.emulator.release()
            if process.poll() is None:
                process.kill()


# -- signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_on_run_stops_new_calls_at_once_and_records_the_run_as_stopped(
    project: Project, emulator: Emulator, signum: signal.Signals
) -> None:
    leads = 100
    project.write(project.config(leadsquared={"max_in_flight": MAX_IN_FLIGHT}))
    project.init_in_process()
    add_rows(project, leads)
    # Slow enough that the run is far from done when the signal comes.
    emulator.set_latency(0.05)

    with running(project, "run") as (run, stderr):
        assert run.stdout is not None
        stdout = LineReader(run.stdout)
        # Past the first call, which goes alone: every worker is calling.
        emulator.wait_for_requests(2 * MAX_IN_FLIGHT)
        emulator.hold()
        before_signal = len(emulator.requests)
        run.send_signal(signum)
        stderr.wait_for("stop requested")
        run.send_signal(signum)  # a second signal changes nothing
        stderr.wait_for("stop requested")
        emulator.release()
        code = run.wait(timeout=EXIT_WITHIN)
        printed = stdout.text()
        logged = stderr.text()

    calls = len(emulator.requests)
    assert code == 128 + signum.value
    assert calls - before_signal <= MAX_IN_FLIGHT, "only calls already starting may go out"
    assert "Traceback" not in logged
    summary = parse_summary(printed)
    assert (summary.status, summary.calls) == ("stopped", calls)
    assert summary.pushed == calls, "every call in flight was answered and recorded"
    (recorded,) = project.query("SELECT status, calls, leads_pushed FROM lsq_sync_run")
    assert (recorded.status, recorded.calls, recorded.leads_pushed) == ("stopped", calls, calls)
    assert len(untouched_leads(project)) == leads - calls > 0

    # Nothing was lost: the next run pushes the rest.
    assert project.run().pushed == leads - calls
    assert emulator.leads() == expected_leads(project)


def test_a_call_hanging_at_sigterm_is_abandoned_after_the_drain_and_sent_next_run(
    project: Project, emulator: Emulator
) -> None:
    # The hang outlasts the read timeout, which outlasts this test's own bounds many times.
    emulator.fault_timeout_seconds = 3600
    timeouts = {"connect": 5, "read": 600, "total": 1200}
    project.write(
        project.config(
            leadsquared={"timeout_seconds": timeouts},
            sync={"interval_seconds": 0.2, "drain_seconds": 0.5},
        )
    )
    project.init_in_process()
    add_rows(project, 1)
    emulator.fail_next(1, "timeout")

    with running(project, "daemon") as (daemon, stderr):
        emulator.wait_for_requests(1)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=EXIT_WITHIN)
        logged = stderr.text()

    assert code == 0
    assert "call abandoned at stop" in logged
    assert "Traceback" not in logged
    assert len(emulator.requests) == 1
    assert untouched_leads(project) == ["L1"], "an abandoned call counts against nothing"
    (recorded,) = project.query("SELECT status, calls, error FROM lsq_sync_run")
    assert (recorded.status, recorded.calls) == ("stopped", 1)

    summary = project.run()
    assert (summary.pushed, summary.calls) == (1, 1)
    assert emulator.lead("L1") == {"mx_City": "city 1"}


# -- LeadSquared unreachable ---------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (it was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("unreachable", "cause"),
    [("closed-port", "connection refused"), ("tls-to-plain-http", "TLS handshake with ")],
)
def test_an_unreachable_host_stops_the_run_after_three_calls_naming_host_and_cause(
    project: Project, emulator: Emulator, unreachable: str, cause: str
) -> None:
    leads = 20
    project.init_in_process()
    add_rows(project, leads)
    if unreachable == "closed-port":
        host = f"http://127.0.0.1:{closed_port()}"
    else:
        host = emulator.url.replace("http://", "https://")
    config = project.config()
    project.write(project.config(leadsquared={"host": host, "max_in_flight": 4}))

    (line,) = assert_clean_failure(project.cli("run"), 1)

    assert host in line
    assert cause in line
    assert "3 calls in a row" in line
    (attempts,) = project.query("SELECT count(*) AS n FROM lsq_sync_call")
    assert attempts.n == 3, "a dead host costs three calls, not a retry budget per lead"
    assert len(untouched_leads(project)) == leads
    (recorded,) = project.query("SELECT status, error FROM lsq_sync_run")
    assert recorded.status == "failed"
    assert host in recorded.error

    project.write(config)
    assert project.run().pushed == leads
    assert emulator.leads() == expected_leads(project)


# -- which phase failed --------------------------------------------------------------------------

REFUSE = "refused by the test"


def refuse_updates(project: Project, tables: list[str]) -> None:
    if project.url.startswith("sqlite"):
        project.execute(
            *(
                f"CREATE TRIGGER refuse_{table} BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
                for table in tables
            )
        )
        return
    project.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{REFUSE}'; END $$",
        *(
            f"CREATE TRIGGER refuse_{table} BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
            for table in tables
        ),
    )


def test_a_database_error_while_pushing_is_named_as_pushing(
    project: Project, emulator: Emulator
) -> None:
    project.init_in_process()
    add_rows(project, 1)
    # Recording the push fails, and so does recording the failed run afterwards.
    refuse_updates(project, ["lsq_sync_lead", "lsq_sync_run"])

    result = project.cli("run")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    (error,) = [line for line in lines if line.startswith(ERROR_PREFIX)]
    others = [line for line in lines if not line.startswith(ERROR_PREFIX)]
    assert error.startswith(f"{ERROR_PREFIX}database error while pushing leads: ")
    assert REFUSE in error
    # What else went wrong is said too, without taking the error's place.
    assert len(others) == 1
    assert "the failed run could not be recorded" in others[0]
    assert len(emulator.requests) == 1


def test_losing_every_database_session_while_pushing_says_the_run_lock_was_lost(
    pg_project: Project, emulator: Emulator
) -> None:
    project = pg_project
    name = f"lsq_sync_e2e_{uuid.uuid4().hex[:8]}"
    project.write(project.config(database={"url": f"{project.url}&application_name={name}"}))
    project.init_in_process()
    add_rows(project, 10)
    emulator.hold()

    with running(project, "run") as (run, stderr):
        emulator.wait_for_requests(1)
        (lock_session,) = lock_holders(project.engine, "test")
        # Every session of the run dies while its call is in flight: the pooled ones (which
        # are replaced when next used) and the run lock's own.
        with project.engine.connect() as connection:
            killed = connection.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name OR pid = :lock_session"
                ),
                {"name": name, "lock_session": lock_session},
            ).scalar_one()
        # Until the watchdog's next heartbeat finds the lock gone, a call may still start
        # (the run lock promises no more): wait for that before the held call is answered.
        stderr.wait_for("lost the run lock", timeout=EXIT_WITHIN)
        emulator.release()
        code = run.wait(timeout=EXIT_WITHIN)
        logged = stderr.text()

    assert killed >= 2, "the run lock's session and a pooled one"
    assert code == 1
    assert "Traceback" not in logged
    errors = [line for line in logged.splitlines() if line.startswith("lsq-sync: error: ")]
    assert len(errors) == 1, logged
    # Not "taking the run lock", as it once said: what was lost, and that no call followed.
    assert errors[0].startswith("lsq-sync: error: lost the run lock of connector 'test' ("), errors
    assert "started no call after noticing" in errors[0]
    # The run's first call goes alone: it was in flight, and no other followed it.
    assert len(emulator.requests) == 1
