"""`lsq-sync run` losing its PostgreSQL run lock mid-push: never the same update twice.

The lock's session is lost the two ways seen in production: terminated (a DBA's
`pg_terminate_backend`, a proxy, a failover) with a second run starting at once, and a DBA's
`idle_session_timeout` shorter than the run. Every wait is on an observed event.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa

from connector.schema import run
from connector.testing.emulator import Emulator
from tests.e2e.conftest import _project
from tests.e2e.harness import LineReader, Project, lead_updates, parse_summary
from tests.support import lock_holders, source_values, wait_until

WAIT = 60.0


def add_leads(project: Project, emulator: Emulator, count: int) -> None:
    for i in range(1, count + 1):
        emulator.add_lead(f"L{i:04}")
    project.execute(
        *(
            f"INSERT INTO customers (id, city, score, lsq_prospect_id) "
            f"VALUES ({i}, 'c{i}', {i}, 'L{i:04}')"
            for i in range(1, count + 1)
        )
    )


def assert_each_update_sent_once_and_converged(project: Project, emulator: Emulator) -> None:
    sent = Counter(
        (lead_id, frozenset(values.items())) for lead_id, values in lead_updates(emulator)
    )
    twice = [update for update, n in sent.items() if n > 1]
    assert not twice, f"{len(twice)} updates sent more than once, e.g. {twice[:3]}"
    assert emulator.leads() == {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(project.url).items()
    }


def end(process: subprocess.Popen[str]) -> None:
    """Kill a run the test no longer waits for (when it failed half-way)."""
    if process.poll() is None:
        process.kill()
        process.communicate()


def run_statuses(project: Project) -> list[str]:
    with project.engine.connect() as connection:
        return list(connection.execute(sa.select(run.c.status).order_by(run.c.run_id)).scalars())


def test_a_terminated_lock_session_mid_push_sends_no_update_twice(
    pg_project: Project, emulator: Emulator
) -> None:
    project = pg_project
    project.init_in_process()
    add_leads(project, emulator, 300)
    emulator.set_latency(0.02, 0.04)
    with project.popen("run") as first, ExitStack() as cleanup:
        cleanup.callback(end, first)
        try:
            emulator.wait_for_requests(20, timeout=WAIT)
            emulator.hold()  # the first run's calls are in flight, unanswered
            (pid,) = lock_holders(project.engine, "test")
            with project.engine.connect() as connection:
                connection.execute(sa.select(sa.func.pg_terminate_backend(pid)))
            wait_until(lambda: not lock_holders(project.engine, "test"))
            second = cleanup.enter_context(project.popen("run"))
            cleanup.callback(end, second)
            assert second.stderr is not None
            second_log = LineReader(second.stderr)
            # Released only once the second run has found the first's heartbeat fresh: were
            # the first run done by then, the second would have had nothing to wait for.
            second_log.wait_for("waiting for the previous run to finish", timeout=WAIT)
        finally:
            emulator.release()
        first_out, first_err = first.communicate(timeout=WAIT)
        second.wait(timeout=WAIT)
        assert second.stdout is not None
        second_out, second_err = second.stdout.read(), second_log.text()

    assert_each_update_sent_once_and_converged(project, emulator)
    assert first.returncode == 1, (first_out, first_err)
    assert "Traceback" not in first_err
    assert "lsq-sync: error: lost the run lock of connector 'test' (its database session ended" in (
        first_err
    )
    assert "another run may now hold it" in first_err
    assert second.returncode == 0, second_err
    assert "waiting for the previous run to finish its calls in flight" in second_err
    assert parse_summary(second_out).status == "ok"
    assert run_statuses(project) == ["failed", "ok"]


def test_an_idle_session_timeout_shorter_than_the_run_loses_nothing(
    pg_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    # As a DBA would set it for the connector's role: every session ends after 200 ms idle.
    url = f"{pg_url}%20-cidle_session_timeout%3D200"
    with _project(url, emulator, tmp_path) as project:
        project.init_in_process()
        add_leads(project, emulator, 40)
        # Four calls in flight, 300 ms each: pooled connections idle longer than the timeout
        # between uses, and the run outlasts several heartbeats of the lock's session.
        emulator.set_latency(0.3)
        summary = project.run()
        assert (summary.status, summary.pushed) == ("ok", 40)
        assert run_statuses(project) == ["ok"]
        assert_each_update_sent_once_and_converged(project, emulator)
