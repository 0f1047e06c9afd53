"""`lsq-sync run --dry-run`: what the next run would send, changes not yet ingested included,
with no call to LeadSquared and no write to any lsq_sync_* table."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from connector import Connector, load_config
from connector.runlock import NotHeld
from connector.schema import PREFIX
from tests.e2e.harness import Project, assert_clean_failure, lead_updates
from tests.support import wait_until_readable


def dump_state(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every lsq_sync_* table, in a stable order."""
    names = [n for n in sa.inspect(engine).get_table_names() if n.startswith(PREFIX)]
    assert f"{PREFIX}lead" in names
    with engine.connect() as connection:
        return {
            name: sorted(
                (tuple(row) for row in connection.execute(sa.text(f'SELECT * FROM "{name}"'))),
                key=repr,
            )
            for name in sorted(names)
        }


def arrange(project: Project) -> None:
    """Three leads pushed once; then changes captured and not yet ingested."""
    for lead_id in ("L1", "L2", "L3"):
        project.emulator.add_lead(lead_id)
    project.init_in_process()
    project.execute(
        "INSERT INTO customers (id, city, plan, score, lsq_prospect_id) VALUES "
        "(1, 'Pune', 'Gold', 5, 'L1'), (2, 'Goa', 'Free', 7, 'L2'), (3, 'Agra', NULL, 1, 'L3')"
    )
    wait_until_readable(project.engine)
    assert project.run().pushed == 3
    project.execute(
        "UPDATE customers SET city = 'Delhi', score = 6 WHERE id = 1",
        "UPDATE customers SET plan = NULL WHERE id = 2",
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (4, 'Kochi', NULL)",
    )
    wait_until_readable(project.engine)
    project.emulator.clear_requests()


def test_dry_run_shows_the_next_run_and_sends_and_records_nothing(project: Project) -> None:
    arrange(project)
    before = dump_state(project.engine)

    result = project.cli("run", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert project.emulator.requests == [], "a dry run makes no call"
    assert dump_state(project.engine) == before, "a dry run writes nothing"
    lines = result.stdout.splitlines()
    assert lines[0] == "dry run of connector test: nothing was sent or recorded"
    assert lines[1] == (
        "the next run would ingest 3 captured changes, then push 2 leads due, through "
        "Lead.Update calls, one lead each"
    )
    assert "  lead L1 (row 1): mx_City='Delhi', mx_Score='6'" in lines
    assert "  lead L2 (row 2): mx_Plan=(empty)" in lines
    assert not any("lead L3" in line for line in lines)

    # The run itself then sends exactly that.
    assert project.run().pushed == 2
    assert sorted(lead_updates(project.emulator)) == [
        ("L1", {"mx_City": "Delhi", "mx_Score": "6"}),
        ("L2", {"mx_Plan": ""}),
    ]


def test_dry_run_json_and_limit(project: Project) -> None:
    arrange(project)
    before = dump_state(project.engine)

    result = project.cli("run", "--dry-run", "--json", "--limit", "1")

    assert result.returncode == 0, result.stderr
    assert project.emulator.requests == []
    assert dump_state(project.engine) == before
    plan = json.loads(result.stdout)
    assert plan["skipped"] is None
    assert (plan["changes_to_ingest"], plan["leads_due"], plan["leads_checked"]) == (3, 2, 1)
    assert plan["planned"] == [
        {
            "lead_id": "L1",
            "row": "1",
            "values": {"mx_City": "Delhi", "mx_Score": "6"},
            "held": {},
            "lookup": None,
        }
    ]
    text = project.cli("run", "--dry-run", "--limit", "1").stdout
    assert "  ... and 1 more lead due, not shown (--limit 1)" in text


def test_dry_run_is_skipped_while_a_run_holds_the_lock(project: Project) -> None:
    arrange(project)
    with Connector(load_config(project.config_path)) as sync, sync._run_lock().hold() as held:
        assert not isinstance(held, NotHeld)
        before = dump_state(project.engine)
        result = project.cli("run", "--dry-run")
        after = dump_state(project.engine)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "dry run skipped: another run of this connector is in progress"
    )
    assert project.emulator.requests == []
    # The holder beats its lease's heartbeat meanwhile; the dry run took no lease (same epoch).
    assert before.pop(f"{PREFIX}lease")[0][:2] == after.pop(f"{PREFIX}lease")[0][:2]
    assert after == before


def test_dry_run_says_a_lead_found_by_email_needs_a_lookup(project: Project) -> None:
    config = project.config(lead_id={"column": "lsq_prospect_id", "match": "EmailAddress"})
    project.write(config)
    project.init_in_process()
    project.execute(
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'a@example.com')"
    )
    wait_until_readable(project.engine)
    project.emulator.clear_requests()
    before = dump_state(project.engine)

    result = project.cli("run", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert project.emulator.requests == []
    assert dump_state(project.engine) == before
    lines = result.stdout.splitlines()
    assert "  lead a@example.com (row 1): mx_City='Pune'" in lines
    assert (
        "    its ProspectId would be looked up first (Leads.GetByEmailaddress by "
        "EmailAddress); not now: a dry run makes no call"
    ) in lines


def test_dry_run_before_init_fails_cleanly(sqlite_project: Project) -> None:
    assert_clean_failure(sqlite_project.cli("run", "--dry-run"), 1)
