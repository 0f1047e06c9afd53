"""`lsq-sync daemon` with `metrics:`: /metrics and /healthz while it runs, gone when it stops;
a port in use and a missing extra end it at once with the reason."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from connector.testing.emulator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator
from tests.e2e.harness import LineReader, Project, assert_clean_failure
from tests.support import wait_until, wait_until_readable

EXIT_WITHIN = 60.0
EXIT_RUN_FAILED = 1


@contextmanager
def daemon(project: Project) -> Iterator[tuple[int, LineReader, subprocess.Popen[str]]]:
    """The daemon logging at INFO, and the port its metrics were served on."""
    with project.popen("--log-level", "INFO", "daemon") as process:
        assert process.stderr is not None
        stderr = LineReader(process.stderr)
        try:
            served = stderr.wait_for("metrics served", timeout=EXIT_WITHIN)
            port = re.search(r"port=(\d+)", served)
            assert port is not None, served
            yield int(port.group(1)), stderr, process
        finally:
            if process.poll() is None:
                process.kill()


def scrape(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def pushed(port: int) -> bool:
    return 'lsq_sync_leads_pushed_total{connector="test"} 1.0' in scrape(port, "/metrics").text


def test_the_daemon_serves_metrics_and_health_until_it_stops(
    project: Project, emulator: Emulator
) -> None:
    project.write(
        project.config(sync={"interval_seconds": 0.2}, metrics={"host": "127.0.0.1", "port": 0})
    )
    project.init_in_process()
    emulator.add_lead("L1")
    project.execute("INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    wait_until_readable(project.engine)

    with daemon(project) as (port, stderr, process):
        wait_until(lambda: pushed(port), timeout=EXIT_WITHIN)
        health = scrape(port, "/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["connectors"][0]["connector"] == "test"
        shown = scrape(port, "/metrics").text + health.text
        calls = 'lsq_sync_calls_total{connector="test",endpoint="Lead.Update",outcome="success"}'
        assert f"{calls} 1.0" in shown
        for secret in (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, project.url):
            assert secret not in shown
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_WITHIN) == 0
        assert "Traceback" not in stderr.text()

    with pytest.raises(httpx.ConnectError):
        scrape(port, "/healthz")
    assert emulator.lead("L1") == {"mx_City": "Pune"}


def test_a_port_in_use_ends_the_daemon_at_once_with_the_reason(sqlite_project: Project) -> None:
    project = sqlite_project
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project.write(project.config(metrics={"port": port}))
        project.init_in_process()
        result = project.cli("daemon", timeout=EXIT_WITHIN)
    (message,) = assert_clean_failure(result, EXIT_RUN_FAILED)
    assert message.startswith(f"cannot serve metrics on 127.0.0.1:{port} (")
    assert "metrics.port" in message


def test_without_the_extra_the_daemon_says_what_to_install_and_other_commands_work(
    sqlite_project: Project, tmp_path: Path
) -> None:
    project = sqlite_project
    # A package of that name that fails to import, found first: as if it were not installed.
    missing = tmp_path / "without-extra" / "prometheus_client"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": str(missing.parent)}
    project.write(project.config(metrics={"port": 0}))
    project.init_in_process()

    result = project.cli("daemon", env=env, timeout=EXIT_WITHIN)
    (message,) = assert_clean_failure(result, EXIT_RUN_FAILED)
    assert message == (
        "metrics: is set in the config, but the prometheus-client package is not installed: "
        "pip install 'lsq-sync[metrics]'"
    )
    assert project.cli("run", env=env).returncode == 0
