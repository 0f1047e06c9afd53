"""The PostgreSQL server restarts in the middle of a run: the next run converges.

A crash (`immediate`: no checkpoint, recovery from the WAL) while calls are in flight. The
server is the test's own (tests/pgserver.py), never the shared one.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connector.database import create_engine
from connector.testing.emulator import Emulator
from tests.e2e.harness import Project, assert_only_mapped, lead_updates
from tests.pgserver import Server, throwaway_server
from tests.support import create_customers, source_values

pytestmark = pytest.mark.postgres

LEADS = 60
IN_FLIGHT = 4


@pytest.fixture
def server() -> Iterator[Server]:
    with throwaway_server() as server:
        yield server


@pytest.fixture
def restart_project(server: Server, emulator: Emulator, tmp_path: Path) -> Iterator[Project]:
    create_customers(server.url)
    engine = create_engine(server.url)
    project = Project(server.url, tmp_path / "lsq-sync.yaml", emulator, engine)
    project.write(project.config(leadsquared={"max_in_flight": IN_FLIGHT}))
    try:
        yield project
    finally:
        engine.dispose()


def expected_leads(url: str) -> dict[str, dict[str, str]]:
    return {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(url).items()
    }


def test_a_server_crash_mid_run_fails_the_run_cleanly_and_the_next_run_converges(
    restart_project: Project, server: Server, emulator: Emulator
) -> None:
    project = restart_project
    for i in range(1, LEADS + 1):
        emulator.add_lead(f"L{i}")
    project.init()
    project.execute(
        *(
            f"INSERT INTO customers (id, phone, city, score, lsq_prospect_id) "
            f"VALUES ({i}, '9{i}', 'c{i}', {i}, 'L{i}')"
            for i in range(1, LEADS + 1)
        )
    )
    with project.popen("run") as crashed:
        try:
            # Let part of the run through, then hold the answers so that calls are in flight
            # when the server goes down.
            emulator.wait_for_requests(LEADS // 3, timeout=60)
            emulator.hold()
            emulator.wait_for_requests(LEADS // 3 + IN_FLIGHT, timeout=60)
            server.restart("immediate")
        finally:
            emulator.release()
        stdout, stderr = crashed.communicate(timeout=120)
    pushed_before = len(lead_updates(emulator))
    assert pushed_before < LEADS, "the crash came before the run had pushed every lead"
    assert crashed.returncode == 1, (crashed.returncode, stdout, stderr)
    assert "Traceback" not in stderr + stdout
    (error,) = stderr.splitlines()
    # The server came back before the answers did: the pooled sessions are replaced, and the
    # run lock's session, which died with the server, is what ends the run. Not "taking the
    # run lock", as a failure anywhere in the run used to be named.
    assert error.startswith("lsq-sync: error: lost the run lock of connector 'test' ("), error

    # The application goes on writing after the restart (on new connections): rows already
    # pushed, and new ones.
    project.engine.dispose()
    project.execute(
        "UPDATE customers SET city = 'moved' WHERE id IN (1, 2, 3)",
        f"INSERT INTO customers (id, phone, city, lsq_prospect_id) "
        f"VALUES ({LEADS + 1}, '1', 'new', 'L{LEADS + 1}')",
    )
    emulator.add_lead(f"L{LEADS + 1}")

    summary = project.run()
    assert summary.status == "ok"
    assert emulator.leads() == expected_leads(project.url)

    calls = lead_updates(emulator)
    assert_only_mapped(calls)
    # Lead.Update sets absolute values, so a call whose answer the crashed run never recorded
    # is sent again: at most the calls that were in flight. Every other repeat is a bug.
    repeats = Counter((lead_id, tuple(sorted(sent.items()))) for lead_id, sent in calls)
    resent = {key: n for key, n in repeats.items() if n > 1}
    assert sum(n - 1 for n in resent.values()) <= IN_FLIGHT, resent

    emulator.clear_requests()
    after = project.run()
    assert (after.calls, after.pushed) == (0, 0), "nothing is left to push once converged"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll for a condition the daemon brings about; the bound is generous, never a timing
    claim."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_a_daemon_keeps_syncing_across_a_server_restart(
    restart_project: Project, server: Server, emulator: Emulator
) -> None:
    project = restart_project
    project.write(
        project.config(leadsquared={"max_in_flight": IN_FLIGHT}, sync={"interval_seconds": 0.2})
    )
    for i in range(1, 6):
        emulator.add_lead(f"L{i}")
    project.init()
    daemon = project.popen("daemon")
    try:
        project.execute(
            *(
                f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES ({i}, 'c{i}', 'L{i}')"
                for i in range(1, 6)
            )
        )
        wait_until(
            lambda: emulator.leads() == expected_leads(project.url), 60, "the first rows pushed"
        )
        server.restart("fast")
        project.engine.dispose()
        for i in range(6, 11):
            emulator.add_lead(f"L{i}")
        project.execute(
            "UPDATE customers SET city = 'after' WHERE id = 1",
            *(
                f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES ({i}, 'c{i}', 'L{i}')"
                for i in range(6, 11)
            ),
        )
        wait_until(
            lambda: emulator.leads() == expected_leads(project.url),
            60,
            "the rows written after the restart pushed by the same daemon",
        )
        assert daemon.poll() is None, "the daemon is still running"
    finally:
        daemon.send_signal(signal.SIGTERM)
        stdout, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, (stdout, stderr)
    assert "Traceback" not in stderr
