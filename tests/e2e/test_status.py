"""`lsq-sync status` at scale: totals counted by the database, lists capped by --limit, the
JSON document, a run in progress, calls used, and memory bounded at 100k leads."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from connector import Connector, load_config
from tests.e2e.harness import Project, assert_clean_failure
from tests.support import (
    PEAK_RSS_CLI,
    PROBLEM_ROWS,
    run_cli,
    seed_leads,
    wait_until_readable,
)

LEADS = 100_000
# Peak RSS of `status --json` at 100k leads. Measured at 68 MB (SQLite) and 75 MB
# (PostgreSQL), against about 64 MB for the CLI's imports alone; status used to read every
# lead into memory. The bound leaves a wide margin for other versions and machines.
MAX_RSS_MB = 150


def measured_cli(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CLI, "--config", str(project.config_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("peak_kb "), result.stderr
    return result, int(last.split()[1]) / 1024


def test_status_json_at_100k_leads_counts_in_sql_and_caps_every_list(project: Project) -> None:
    project.init_in_process()
    # Rows the database counts as having no lead id (NULL, blank); captured, not ingested.
    project.execute(
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        "(1, 'Pune', NULL), (2, 'Goa', '   '), (3, 'Agra', NULL)"
    )
    now = datetime.now(UTC)
    expected = seed_leads(project.engine, "test", LEADS, now)

    result, rss_mb = measured_cli(project, "status", "--json", "--limit", "7")

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    print(f"status --json at {LEADS} leads: peak RSS {rss_mb:.0f} MB ({project.url[:10]})")
    assert rss_mb < MAX_RSS_MB
    assert {name: status["leads"][name] for name in expected} == expected
    assert status["backlog"]["changes_not_ingested"] == 3
    assert status["backlog"]["leads_pending"] == expected["pending"]
    assert status["backlog"]["leads_retrying_later"] == expected["retrying_later"]
    # The oldest lead waiting to be pushed (due or retrying) is L0099992, 99992 s old.
    assert status["backlog"]["lag_seconds"] >= 99_992
    oldest = datetime.fromisoformat(status["backlog"]["oldest_waiting_since"])
    assert abs((now - timedelta(seconds=99_992) - oldest).total_seconds()) < 1
    assert status["rows"] == {"without_lead_id": 3, "held_back": PROBLEM_ROWS}
    assert len(status["not_in_sync"]) == 7
    assert status["not_in_sync_not_shown"] == expected["not_in_sync"] - 7
    # Problems come before leads merely waiting, in lead id order.
    assert [entry["lead_id"] for entry in status["not_in_sync"][:3]] == [
        "L0000000",
        "L0000003",
        "L0000004",
    ]
    assert [entry["state"] for entry in status["not_in_sync"][:3]] == [
        "rejected",
        "held_back",
        "attributes_set_aside",
    ]
    assert len(status["rows_held_back"]) == 7
    assert status["rows_held_back_not_shown"] == PROBLEM_ROWS - 7
    assert status["run_in_flight"] is None
    assert status["calls"]["in_window"] == 0
    assert status["calls"]["limit"] == 1000
    assert datetime.fromisoformat(status["at"]).tzinfo is not None


def test_status_text_caps_its_lists_and_says_how_many_more(sqlite_project: Project) -> None:
    project = sqlite_project
    project.init_in_process()
    seed_leads(project.engine, "test", 500, datetime.now(UTC))

    result = project.cli("status", "--limit", "3")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "connector test: 500 leads known, 220 not in sync, 0 captured changes not yet ingested"
    )
    assert lines[1].startswith("backlog: 100 leads to push (50 waiting out a retry delay); lag ")
    listed = [line for line in lines if line.startswith("  lead ")]
    assert len(listed) == 3
    assert "  ... and 217 more leads (--limit 3)" in lines
    assert "  ... and 297 more rows (--limit 3)" in lines
    assert (
        "not sent: 0 rows with no lead id, 10 conflicts (several rows with one lead id), "
        "300 bad rows (held at ingest), 10 leads held back by the connector, 50 leads with "
        "attributes set aside, 50 leads rejected"
    ) in lines
    assert any(line.startswith("calls: 0 of 1000 in the current 1 s window") for line in lines)

    totals_only = project.cli("status", "--limit", "0")
    assert totals_only.returncode == 0, totals_only.stderr
    assert not [line for line in totals_only.stdout.splitlines() if line.startswith("  lead ")]
    assert totals_only.stdout.splitlines()[:2] == lines[:2]


def test_status_refuses_a_negative_or_non_numeric_limit(sqlite_project: Project) -> None:
    for bad, said in (("-1", "-1 is negative; give 0 or more"), ("x", "'x' is not a whole number")):
        result = run_cli("--config", str(sqlite_project.config_path), "status", "--limit", bad)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert f"argument --limit: {said}" in result.stderr


def test_status_counts_the_calls_of_the_window_and_the_day(project: Project) -> None:
    project.init_in_process()
    project.emulator.add_lead("L1")
    project.emulator.add_lead("L2")
    project.execute(
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1'), "
        "(2, 'Goa', 'L2')"
    )
    config = project.config()
    config["leadsquared"]["rate_limit"] = {
        "calls": 50,
        "window_seconds": 3600,
        "daily_budget": 900,
    }
    project.write(config)
    wait_until_readable(project.engine)
    assert project.run().calls == 2

    result = project.cli("status", "--json")

    assert result.returncode == 0, result.stderr
    calls = json.loads(result.stdout)["calls"]
    assert calls["in_window"] == 2
    assert (calls["limit"], calls["window_seconds"], calls["daily_budget"]) == (50, 3600, 900)
    assert calls["today"] == 2
    text = project.cli("status").stdout
    assert (
        "calls: 2 of 50 in the current 3600 s window, 2 today (UTC) of a daily budget of 900"
        in (text)
    )


def test_status_shows_the_leads_of_a_run_in_progress_as_being_pushed(project: Project) -> None:
    project.init_in_process()
    project.execute("INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    wait_until_readable(project.engine)
    with Connector(load_config(project.config_path)) as sync:
        sync.run_once()  # L1 is rejected (unknown to the emulator); make it pending again
        sync.retry(["L1"])
        # Hold the run lock and lease as a run does, with its run record, and look meanwhile.
        with sync._run_lock().hold() as held:
            assert not hasattr(held, "reason"), held
            run_id = sync.tables.runs.start_run(sync.clock.now())

            during = project.cli("status", "--json")
            text = project.cli("status")

        after = project.cli("status", "--json")

    assert during.returncode == 0, during.stderr
    flight = json.loads(during.stdout)["run_in_flight"]
    assert flight["run_id"] == run_id
    (entry,) = json.loads(during.stdout)["not_in_sync"]
    assert (entry["lead_id"], entry["state"]) == ("L1", "being_pushed")
    assert f"lead L1 (row 1): being pushed by run #{run_id}, in progress" in text.stdout
    assert f"run #{run_id} is in progress" in text.stdout
    # Released: the run left its record 'running' (as a killed one would), but nothing holds
    # the lease, so nothing is in flight; L1 waits with the error of its last push.
    assert json.loads(after.stdout)["run_in_flight"] is None
    assert json.loads(after.stdout)["not_in_sync"][0]["state"] == "retrying"


def test_status_into_a_closed_pipe_with_json_ends_quietly(sqlite_project: Project) -> None:
    project = sqlite_project
    project.init_in_process()
    seed_leads(project.engine, "test", 2000, datetime.now(UTC))
    command = [sys.executable, "-m", "connector", "--config", str(project.config_path)]
    for args in (["status", "--json", "--limit", "2000"], ["status", "--limit", "2000"]):
        child = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None
        child.stdout.read(10)
        child.stdout.close()  # the reader goes away, as `| head -c 10` would
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
        assert b"Traceback" not in stderr
        assert b"BrokenPipe" not in stderr


def test_status_before_init_fails_cleanly(sqlite_project: Project) -> None:
    result = sqlite_project.cli("status", "--json")
    assert_clean_failure(result, 1)
