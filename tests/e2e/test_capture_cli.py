"""Capture through the CLI: the application's own migrations break nothing, `run` says what
changed, `init` picks up every change made in between; `uninstall` removes capture."""

from __future__ import annotations

import re
from typing import Any

import pytest

from connector.testing.emulator import Emulator
from tests.e2e.harness import Project, assert_clean_failure, parse_summary
from tests.support import MAPPING, wait_until_readable

ROWS = (
    "INSERT INTO customers (id, phone, city, plan, score, lsq_prospect_id) VALUES "
    "(1, '111', 'Pune', 'free', 1, 'L1'), (2, '222', 'Goa', 'free', 2, 'L2')"
)


def schema_of(project: Project) -> str:
    return str(project.engine.url.query["options"]).split("=")[-1]


def run(project: Project) -> Any:
    wait_until_readable(project.engine)
    return project.run()


# (the application's migration, the key the run names, the config that fixes it, the column
# the application then writes, the attribute LeadSquared must end up with)
DRIFTS = {
    "mapped column dropped": (
        "ALTER TABLE customers DROP COLUMN score",
        "mapped column `score` no longer exists in table `{table}`: update the mapping and run "
        "`lsq-sync init`",
        {"mapping": {k: v for k, v in MAPPING.items() if k != "score"}},
        "city",
    ),
    "mapped column renamed": (
        "ALTER TABLE customers RENAME COLUMN city TO town",
        "mapped column `city` no longer exists in table `{table}`: update the mapping and run "
        "`lsq-sync init`",
        {"mapping": {**{k: v for k, v in MAPPING.items() if k != "city"}, "town": "mx_City"}},
        "town",
    ),
    "key renamed": (
        "ALTER TABLE customers RENAME COLUMN id TO customer_id",
        "key column `id` no longer exists in table `{table}`: update `source.key` and run "
        "`lsq-sync init`",
        {"source": {"table": "customers", "key": "customer_id"}},
        "city",
    ),
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_the_application_migrates_its_table_and_nothing_is_lost(
    pg_project: Project, emulator: Emulator, drift: str
) -> None:
    project = pg_project
    alter, message, fix, city = DRIFTS[drift]
    emulator.add_lead("L1")
    emulator.add_lead("L2")
    project.init()
    project.execute(ROWS)
    assert run(project).pushed == 2

    # The application's migration, and its writes afterwards: every one succeeds.
    project.execute(alter)
    project.execute(f"UPDATE customers SET {city} = 'Delhi' WHERE lsq_prospect_id = 'L1'")
    project.execute("UPDATE customers SET plan = 'pro' WHERE lsq_prospect_id = 'L2'")

    for command in (["run"], ["status"], ["backfill"], ["retry", "--all"], ["daemon"]):
        (line,) = assert_clean_failure(project.cli(*command), 1)
        assert line == message.format(table=f"{schema_of(project)}.customers")

    project.write({**project.config(), **fix})
    init = project.cli("init")
    assert init.returncode == 0, init.stderr
    queued = "all 2 rows were queued" in init.stdout
    assert queued == (drift == "key renamed")
    summary = run(project)
    assert (summary.status, summary.pushed) == ("ok", 2)
    assert emulator.lead("L1")["mx_City"] == "Delhi"
    assert emulator.lead("L2")["mx_Plan"] == "pro"


def test_a_run_reports_what_the_triggers_could_not_do(
    pg_project: Project, emulator: Emulator
) -> None:
    project = pg_project
    emulator.add_lead("L1")
    project.init()
    project.execute(ROWS)
    project.execute(
        "ALTER TABLE customers ALTER COLUMN plan TYPE json USING to_json(plan)",
        "UPDATE customers SET city = 'Delhi' WHERE id = 1",
    )
    (line,) = assert_clean_failure(project.cli("run"), 1)
    assert line.startswith(
        f"change capture on table `{schema_of(project)}.customers` could not compare the rows "
        "of 1 statement(s) since "
    )
    assert "collations are not supported by type json" in line
    project.init()
    summary = run(project)
    assert summary.status == "ok"
    assert emulator.lead("L1")["mx_City"] == "Delhi"


def test_uninstall_removes_capture_then_the_state(project: Project, emulator: Emulator) -> None:
    emulator.add_lead("L1")
    project.init()
    project.execute("INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    run(project)
    table = (
        "customers"
        if project.engine.dialect.name == "sqlite"
        else (f"{schema_of(project)}.customers")
    )

    removed = project.cli("uninstall")
    assert removed.returncode == 0, removed.stderr
    first, second = removed.stdout.splitlines()
    assert first.startswith(f"test: change capture removed from table '{table}' (trigger ")
    assert second == "test: its sync state is kept; `lsq-sync init` installs capture again"
    (line,) = assert_clean_failure(project.cli("run"), 1)
    assert "removed by `lsq-sync uninstall`" in line

    dropped = project.cli("uninstall", "--drop-state")
    assert dropped.returncode == 0, dropped.stderr
    first, second = dropped.stdout.splitlines()
    assert (
        first == f"test: change capture removed from table '{table}' (nothing was left to remove)"
    )
    # Its install, cursor, lead and run at least.
    assert re.fullmatch(
        r"test: ([4-9]|\d\d) rows of this connector deleted; the lsq_sync_\* tables were "
        r"dropped, as no other connector uses them",
        second,
    ), second
    assert not [row for row in project.query(_OWN_TABLES[project.engine.dialect.name]) if row[0]]
    (line,) = assert_clean_failure(project.cli("status"), 1)
    assert "run `lsq-sync init` first" in line

    project.init()
    project.execute("UPDATE customers SET city = 'Goa'")
    assert run(project).pushed == 1  # a fresh start: every lead is pushed again
    assert emulator.lead("L1") == {"mx_City": "Goa"}


_OWN_TABLES = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE name LIKE 'lsq_sync%'",
    "postgresql": "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
    "AND starts_with(tablename, 'lsq_sync')",
}


def test_uninstall_works_after_the_table_is_gone(project: Project) -> None:
    project.init()
    project.execute("DROP TABLE customers")
    (line,) = assert_clean_failure(project.cli("run"), 1)
    assert line == (
        "table `customers` no longer exists: if it was renamed, update `source.table` and run "
        "`lsq-sync init`"
    )
    done = project.cli("uninstall", "--drop-state")
    assert done.returncode == 0, done.stderr
    assert "the lsq_sync_* tables were dropped" in done.stdout


def test_init_refuses_a_name_taken_on_another_table(project: Project) -> None:
    project.init()
    project.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, city TEXT, lsq_prospect_id TEXT)")
    project.write(
        project.config(source={"table": "orders", "key": "id"}) | {"mapping": {"city": "mx_City"}}
    )
    (line,) = assert_clean_failure(project.cli("init"), 2)
    assert "name: connector 'test' is already installed on table" in line
    assert summary_free(project)


def summary_free(project: Project) -> bool:
    """The first install is untouched: its run still works."""
    project.write(project.config())
    result = project.cli("run")
    return result.returncode == 0 and parse_summary(result.stdout).status == "ok"
