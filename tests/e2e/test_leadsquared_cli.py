"""LeadSquared's refusals as a user meets them through the CLI: attributes set aside and
`lsq-sync retry`, and the daily budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connector.testing.emulator import Emulator
from tests.e2e.harness import Project, assert_clean_failure, lead_updates
from tests.support import ATTRIBUTES, source_values


def expected_in_leadsquared(url: str) -> dict[str, dict[str, str]]:
    return {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(url).items()
    }


def test_retry_pushes_what_was_set_aside_once_leadsquared_knows_the_field(
    project: Project,
) -> None:
    with Emulator(rate_limit=None, attributes=ATTRIBUTES - {"mx_Plan"}) as partial:
        partial.add_lead("L1")
        partial.add_lead("L2")
        project.write(project.config(leadsquared={"host": partial.url}))
        project.init_in_process()
        project.execute(
            "INSERT INTO customers (id, city, plan, lsq_prospect_id) "
            "VALUES (1, 'Pune', 'pro', 'L1'), (2, 'Goa', 'free', 'L2')"
        )

        result = project.cli("run")
        known = partial.leads()

    assert result.returncode == 0, result.stderr
    assert "2 leads pushed" in result.stdout
    assert "2 attributes set aside (unknown to LeadSquared" in result.stdout
    assert known == {"L1": {"mx_City": "Pune"}, "L2": {"mx_City": "Goa"}}

    # The field is created in LeadSquared: a retry of one lead, then of all that are left.
    with Emulator(rate_limit=None, attributes=ATTRIBUTES) as full:
        for lead_id, values in known.items():
            full.add_lead(lead_id, **values)
        project.write(project.config(leadsquared={"host": full.url}))

        one = project.cli("retry", "--lead", "L1")
        every = project.cli("retry", "--all")  # L1 is no longer failed: only L2 is left
        summary = project.run()
        sent = sorted(lead_updates(full))
        held = full.leads()

    assert one.returncode == 0, one.stderr
    assert "1 lead will be pushed again" in one.stdout
    assert every.returncode == 0, every.stderr
    assert "1 lead will be pushed again" in every.stdout
    assert (summary.pushed, summary.calls) == (2, 2)
    assert sent == [("L1", {"mx_Plan": "pro"}), ("L2", {"mx_Plan": "free"})]
    assert held == expected_in_leadsquared(project.url)


def budget_project(project: Project, emulator: Emulator) -> None:
    for i in range(1, 6):
        emulator.add_lead(f"L{i}")
    budget = {"calls": 1000, "window_seconds": 1, "daily_budget": 3}
    project.write(project.config(leadsquared={"rate_limit": budget}))
    project.init_in_process()
    project.execute(
        *(
            f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES ({i}, 'c{i}', 'L{i}')"
            for i in range(1, 6)
        )
    )


def resumes_tomorrow() -> str:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    return f"pushing resumes after {tomorrow:%Y-%m-%d} 00:00 UTC"


def test_a_run_stopped_by_the_daily_budget_exits_0_and_status_says_when_it_resumes(
    project: Project, emulator: Emulator
) -> None:
    budget_project(project, emulator)

    summary = project.run()  # exit 0, or it fails here
    status = project.cli("status")

    assert (summary.status, summary.calls, summary.pushed) == ("stopped", 3, 3)
    assert len(emulator.requests) == 3
    assert status.returncode == 0, status.stderr
    assert "2 not in sync" in status.stdout
    (run,) = [line for line in status.stdout.splitlines() if line.strip().startswith("#")]
    assert "stopped" in run
    assert resumes_tomorrow() in run


def test_a_run_stopped_by_the_daily_budget_says_when_it_resumes(
    sqlite_project: Project, emulator: Emulator
) -> None:
    budget_project(sqlite_project, emulator)

    result = sqlite_project.cli("run")

    assert result.returncode == 0, result.stderr
    assert resumes_tomorrow() in result.stdout


def test_resync_sends_hand_edited_leads_their_values_again(project: Project) -> None:
    with Emulator(rate_limit=None) as account:
        account.add_lead("L1")
        account.add_lead("L2")
        project.write(project.config(leadsquared={"host": account.url}))
        project.init_in_process()
        project.execute(
            "INSERT INTO customers (id, city, plan, lsq_prospect_id) "
            "VALUES (1, 'Pune', 'pro', 'L1'), (2, 'Goa', 'free', 'L2')"
        )
        project.run()
        account.add_lead("L2", mx_City="Edited", mx_Plan="Edited")  # by hand, in LeadSquared
        account.clear_requests()

        one = project.cli("resync", "--lead", "L2", "--attribute", "mx_City")
        summary = project.run()
        sent = lead_updates(account)
        unknown = project.cli("resync", "--all", "--attribute", "mx_Nope")
        neither = project.cli("resync")

    assert one.returncode == 0, one.stderr
    assert "1 lead will be sent their current values by the next run" in one.stdout
    assert (summary.pushed, summary.calls) == (1, 1)
    assert sent == [("L2", {"mx_City": "Goa"})]
    [message] = assert_clean_failure(unknown, 1)
    assert "not a mapped attribute: mx_Nope" in message
    assert neither.returncode == 2
    assert "one of the arguments --lead --all is required" in neither.stderr
