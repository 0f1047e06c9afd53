"""The CLI as users run it: help, both entry points, status, secrets in logs, 401, the daemon."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from connector.testing.emulator import API_PREFIX, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator
from tests.e2e.harness import (
    LineReader,
    Project,
    assert_clean_failure,
    cli_command,
    lead_updates,
    parse_summary,
    run_cli_concurrently,
)
from tests.support import source_values

COMMANDS = [
    "init",
    "backfill",
    "run",
    "daemon",
    "status",
    "retry",
    "resync",
    "validate",
    "uninstall",
    "demo",
    "emulator",
]


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess[str]]:
    """`--help` of the top level ("") and of every command, run side by side."""
    return run_cli_concurrently(
        {"": ["--help"], **{command: [command, "--help"] for command in COMMANDS}}
    )


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help(command: str, helps: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = helps[command]

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"usage: lsq-sync {command}".rstrip())
    if not command:
        assert all(name in result.stdout for name in COMMANDS)


def console_script() -> str:
    beside_python = Path(sys.executable).with_name("lsq-sync")
    found = str(beside_python) if beside_python.exists() else shutil.which("lsq-sync")
    assert found is not None, "the lsq-sync console script is not installed"
    return found


def test_console_script_and_module_are_the_same_cli(sqlite_project: Project) -> None:
    project = sqlite_project
    project.emulator.add_lead("L1")
    init = subprocess.run(
        [console_script(), "--config", str(project.config_path), "init"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    assert "change capture installed on 'customers'" in init.stdout
    project.execute("INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")

    summary = project.run()  # python -m connector

    assert (summary.status, summary.pushed) == ("ok", 1)
    assert project.emulator.lead("L1") == {"mx_City": "Pune"}


def test_status_lists_leads_not_in_sync_and_why(project: Project, emulator: Emulator) -> None:
    emulator.add_lead("L1")
    emulator.add_lead("L2")  # LX is missing from LeadSquared: rejected
    project.init_in_process()
    project.execute(
        "INSERT INTO customers (id, city, lsq_prospect_id) "
        "VALUES (1, 'Pune', 'L1'), (2, 'Goa', 'L2'), (3, 'Agra', 'LX')"
    )
    # No retry within the run, so the 503 defers its lead. The run's first call goes out
    # alone and leads go in id order: L1 gets it.
    project.write(
        project.config(leadsquared={**project.config()["leadsquared"], "retry": {"attempts": 1}})
    )
    emulator.fail_next(1, "503")
    summary = project.run()
    assert (summary.pushed, summary.rejected, summary.deferred) == (1, 1, 1)
    project.execute("UPDATE customers SET city = 'Delhi' WHERE id = 2")

    result = project.cli("status")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("connector test: 3 leads known, 2 not in sync, 1 captured change")
    (l1,) = [line for line in lines if "lead L1 " in line]
    assert "(row 1)" in l1
    assert "will retry" in l1
    assert "HTTP 503" in l1
    (lx,) = [line for line in lines if "lead LX " in line]
    assert "rejected" in lx
    assert "MXInvalidEntityException" in lx
    assert not any("lead L2 " in line for line in lines), "L2 is in sync"
    assert any(line.strip().startswith(f"#{summary.run_id} ok") for line in lines)


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}


def test_debug_logs_never_show_the_keys(sqlite_project: Project) -> None:
    project = sqlite_project
    # The alphanumeric cores survive any URL or JSON encoding, so finding neither anywhere
    # also rules out encodings this test does not list.
    access_key, secret_key = "Ak7CORE$/+=a b", "Sk9CORE$/+=%z"
    cores = ("Ak7CORE", "Sk9CORE")
    project.init_in_process()
    with Emulator(access_key=access_key, secret_key=secret_key, rate_limit=None) as emulator:
        emulator.add_lead("L1")
        emulator.add_lead("L2")
        keys = {"access_key": "${E2E_ACCESS_KEY}", "secret_key": "${E2E_SECRET_KEY}"}
        project.write(project.config(leadsquared={"host": emulator.url, **keys}))
        env = {"E2E_ACCESS_KEY": access_key, "E2E_SECRET_KEY": secret_key}
        debug = ("--log-level", "DEBUG")
        outputs = []
        project.execute(
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')",
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'Goa', 'L2')",
        )
        emulator.fail_next(1, "503")
        outputs.append(project.cli(*debug, "run", env=env))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
        project.execute("UPDATE customers SET city = 'Agra' WHERE id = 2")
        outputs.append(project.cli(*debug, "run", env={**env, "E2E_SECRET_KEY": "wrong$/+="}))
        assert outputs[-1].returncode == 1, outputs[-1].stderr
        outputs.append(project.cli(*debug, "--log-format", "json", "status", env=env))

        statuses = [r.status for r in emulator.requests]
        # The 503 is retried within the run; the 401 ends the next run after one call.
        assert statuses == [503, 200, 200, 401], "the test must cover a fault, a success and a 401"
    stored = [
        *project.query("SELECT * FROM lsq_sync_lead"),
        *project.query("SELECT * FROM lsq_sync_run"),
    ]
    everything = "".join(r.stdout + r.stderr for r in outputs) + repr(stored)
    assert "DEBUG" in everything
    leaked = {
        form for key in (access_key, secret_key) for form in _forms(key) if form in everything
    }
    assert not leaked
    assert not [core for core in cores if core.lower() in everything.lower()]


def test_keys_with_a_trailing_newline_from_a_secret_file_work_and_never_show(
    sqlite_project: Project,
) -> None:
    project = sqlite_project
    access_key, secret_key = "Ak7CORE$/+=", "Sk9CORE$/+="
    # Kubernetes hands a secret file's content over as it is, final newline and all.
    env = {"E2E_ACCESS_KEY": access_key + "\n", "E2E_SECRET_KEY": secret_key + "\r\n"}
    with Emulator(access_key=access_key, secret_key=secret_key, rate_limit=None) as emulator:
        emulator.add_lead("L1")
        emulator.add_lead("L2")
        keys = {"access_key": "${E2E_ACCESS_KEY}", "secret_key": "${E2E_SECRET_KEY}"}
        project.write(project.config(leadsquared={"host": emulator.url, "auth": "header", **keys}))
        assert project.cli("init", env=env).returncode == 0
        project.execute(
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')",
            "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (2, 'Goa', 'L2')",
        )
        debug = ("--log-level", "DEBUG")
        run = project.cli(*debug, "run", env=env)
        status = project.cli(*debug, "status", env=env)
        held = emulator.leads()

    assert run.returncode == 0, run.stderr
    assert parse_summary(run.stdout).pushed == 2
    assert held == {"L1": {"mx_City": "Pune"}, "L2": {"mx_City": "Goa"}}
    stored = [
        *project.query("SELECT * FROM lsq_sync_lead"),
        *project.query("SELECT * FROM lsq_sync_run"),
    ]
    everything = run.stdout + run.stderr + status.stdout + status.stderr + repr(stored)
    assert "DEBUG" in everything
    assert "CORE" not in everything


def test_wrong_secret_key_stops_the_run_after_one_call(
    sqlite_project: Project, emulator: Emulator
) -> None:
    project = sqlite_project
    for i in (1, 2, 3):
        emulator.add_lead(f"L{i}")
    project.init_in_process()
    project.execute(
        "INSERT INTO customers (id, city, lsq_prospect_id) "
        "VALUES (1, 'Pune', 'L1'), (2, 'Goa', 'L2'), (3, 'Agra', 'L3')"
    )
    config = project.config()
    project.write(project.config(leadsquared={"secret_key": "not-the-secret"}))

    (line,) = assert_clean_failure(project.cli("run"), 1)

    assert "401" in line
    assert "access_key" in line
    assert "secret_key" in line
    assert "leadsquared.host" in line
    assert len(emulator.requests) <= 1
    assert emulator.leads() == {"L1": {}, "L2": {}, "L3": {}}
    (failed,) = project.query("SELECT status, error FROM lsq_sync_run")
    assert failed.status == "failed"
    assert "401" in failed.error

    # Nothing was lost: with the right key the next run pushes every lead.
    project.write(config)
    summary = project.run()
    assert (summary.status, summary.pushed) == ("ok", 3)
    assert emulator.leads() == {
        "L1": {"mx_City": "Pune"},
        "L2": {"mx_City": "Goa"},
        "L3": {"mx_City": "Agra"},
    }


def _cycle_that_pushed(line: str) -> bool:
    entry = json.loads(line)
    return (
        entry["logger"] == "connector.sync"
        and entry["message"] == "run finished"
        and " 1 leads pushed" in entry["summary"]
    )


def test_daemon_syncs_on_its_interval_and_stops_cleanly_on_sigterm(
    project: Project, emulator: Emulator
) -> None:
    for i in (1, 2, 3, 4):
        emulator.add_lead(f"L{i}")
    project.write(project.config(sync={"interval_seconds": 0.2}))
    project.init_in_process()
    project.execute("INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")

    with project.popen("--log-level", "INFO", "--log-format", "json", "daemon") as daemon:
        assert daemon.stderr is not None
        stderr = LineReader(daemon.stderr)
        try:
            emulator.wait_for_requests(1)
            stderr.wait_for(_cycle_that_pushed)
            # A change made while the daemon runs is picked up by a later cycle.
            project.execute("UPDATE customers SET city = 'Goa' WHERE id = 1")
            emulator.wait_for_requests(2)
            # Holding answers is safe only once this cycle's answer has gone out.
            stderr.wait_for(_cycle_that_pushed)

            # SIGTERM while a call is in flight: that call completes and is recorded, the
            # remaining leads stay pending, and the daemon exits 0.
            emulator.hold()
            project.execute(
                "INSERT INTO customers (id, city, lsq_prospect_id) "
                "VALUES (2, 'Agra', 'L2'), (3, 'Delhi', 'L3'), (4, 'Pune', 'L4')"
            )
            (*_, in_flight) = emulator.wait_for_requests(3)
            daemon.send_signal(signal.SIGTERM)
            stderr.wait_for("stop requested")
            emulator.release()
            assert daemon.wait(timeout=15) == 0
        finally:
            emulator.release()
            if daemon.poll() is None:
                daemon.kill()
        log = [json.loads(line) for line in stderr.text().splitlines()]
    assert not [entry for entry in log if entry["level"] in ("ERROR", "CRITICAL")]
    assert log[-1]["message"] == "daemon stopped"

    assert lead_updates(emulator)[:2] == [("L1", {"mx_City": "Pune"}), ("L1", {"mx_City": "Goa"})]
    assert in_flight.lead_id == "L2"
    assert len(emulator.requests) == 3, "no call is started after SIGTERM"
    runs = project.query("SELECT status, calls, finished_at FROM lsq_sync_run ORDER BY run_id")
    assert {run.status for run in runs} <= {"ok", "stopped"}, "no run is left 'running'"
    assert all(run.finished_at is not None for run in runs)
    assert [(run.status, run.calls) for run in runs if run.calls] == [
        ("ok", 1),
        ("ok", 1),
        ("stopped", 1),
    ]
    pending = project.query("SELECT lead_id FROM lsq_sync_lead WHERE pending ORDER BY lead_id")
    assert [row.lead_id for row in pending] == ["L3", "L4"]

    summary = project.run()
    assert (summary.pushed, summary.calls) == (2, 2), "the call in flight was recorded"
    assert emulator.leads() == {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(project.url).items()
    }


def test_emulator_command_serves_until_interrupted() -> None:
    with subprocess.Popen(
        cli_command("emulator", "--port", "0", "--lead", "L1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stdout is not None
        stdout = LineReader(server.stdout)
        try:
            url = stdout.wait_for("listening on").split()[-1]
            response = httpx.post(
                f"{url}{API_PREFIX}Lead.Update",
                params={
                    "leadId": "L1",
                    "accessKey": DEFAULT_ACCESS_KEY,
                    "secretKey": DEFAULT_SECRET_KEY,
                },
                json=[{"Attribute": "mx_City", "Value": "Pune"}],
            )
            assert response.status_code == 200
            assert response.json()["Status"] == "Success"
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=10) == 0
        finally:
            if server.poll() is None:
                server.kill()
        stdout.text()
