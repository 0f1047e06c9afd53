"""The daemon pushes a change as soon as it is committed, not on its next tick.

Every daemon here runs with an interval of an hour: a push within the test's timeout can only
come from a wake-up. Each change is made once the daemon's first cycle has finished (it is
logged), so that no cycle already on its way could carry it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from connector.testing.emulator import Emulator
from tests.e2e.harness import LineReader, Project, assert_clean_failure

HOUR = 3600
TIMEOUT = 30


@contextmanager
def daemon(project: Project) -> Iterator[LineReader]:
    """`lsq-sync daemon` with an hour between cycles, once its first cycle has finished;
    stopped with SIGTERM, which must end it cleanly."""
    project.write(project.config(sync={"interval_seconds": HOUR}))
    process = project.popen("--log-level", "INFO", "daemon")
    assert process.stderr is not None
    log = LineReader(process.stderr)
    try:
        log.wait_for("listening for wake-ups", TIMEOUT)
        log.wait_for("run finished", TIMEOUT)
        yield log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
            raise
        finally:
            text = log.text()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    assert process.returncode == 0, text
    assert "Traceback" not in text


def pushed(emulator: Emulator, count: int) -> list[str]:
    """The lead ids of the first `count` Lead.Update calls, once that many have arrived."""
    requests = emulator.wait_for_requests(count, TIMEOUT)
    return [request.lead_id or "" for request in requests if request.api == "Lead.Update"]


def test_a_change_is_pushed_without_waiting_out_the_interval(
    project: Project, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    project.init()
    with daemon(project) as log:
        project.execute(
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')"
        )
        assert pushed(emulator, 1) == ["L1"]
        assert emulator.lead("L1")["mx_City"] == "Pune"
        log.wait_for("run finished", TIMEOUT)
        project.execute("UPDATE customers SET city = 'Goa' WHERE id = 1")
        project.execute(
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'Agra', 'L2')"
        )
        assert emulator.wait_for_requests(3, TIMEOUT)
        assert emulator.lead("L1")["mx_City"] == "Goa"
        assert emulator.lead("L2")["mx_City"] == "Agra"


def test_postgresql_a_killed_listen_session_is_opened_again(
    pg_project: Project, emulator: Emulator
) -> None:
    project = pg_project
    emulator.add_lead("L1")
    project.init()
    with daemon(project) as log:
        channel = _channel(project)
        killed = project.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE query = 'LISTEN \"{channel}\"'"
        )
        assert [row[0] for row in killed] == [True]
        log.wait_for("wake-ups lost", TIMEOUT)
        log.wait_for("wake-ups are back", TIMEOUT)
        # The cycle a reopened session asks for, for changes made while nobody listened.
        log.wait_for("run finished", TIMEOUT)
        project.execute(
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')"
        )
        assert pushed(emulator, 1) == ["L1"]
    assert sum("wake-ups lost" in line for line in log.lines) == 1


def _channel(project: Project) -> str:
    from connector.capture import wake_channel  # noqa: PLC0415

    schema = project.query("SELECT current_schema()")[0][0]
    return wake_channel(schema, "test")


@pytest.mark.parametrize("debounce", ["-1", "soon", "61"])
def test_a_bad_debounce_is_refused_naming_its_key(sqlite_project: Project, debounce: str) -> None:
    project = sqlite_project
    config = project.config()
    config["sync"] = {"debounce_seconds": debounce}
    project.write(config)
    [line] = assert_clean_failure(project.cli("daemon"), 2)
    assert "sync.debounce_seconds" in line
    assert str(project.config_path) in line
