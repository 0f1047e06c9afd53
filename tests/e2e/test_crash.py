"""`kill -9` mid-push: the next run converges and re-sends only the call that was in flight."""

from __future__ import annotations

import signal
from collections import Counter

from connector.testing.emulator import Emulator
from tests.e2e.harness import Project, assert_only_mapped, lead_updates
from tests.support import source_values

LEADS = 5


def test_run_killed_mid_push_converges_and_resends_only_the_call_in_flight(
    project: Project, emulator: Emulator
) -> None:
    for i in range(1, LEADS + 1):
        emulator.add_lead(f"L{i}")
    project.init_in_process()
    project.execute(
        *(
            f"INSERT INTO customers (id, phone, city, score, lsq_prospect_id) "
            f"VALUES ({i}, '9{i}', 'c{i}', {i}, 'L{i}')"
            for i in range(1, LEADS + 1)
        )
    )
    # The emulator applies each update on arrival and holds only its answer, so the
    # killed run's last call landed in LeadSquared but was never recorded as pushed.
    emulator.hold()
    with project.popen("run") as killed:
        try:
            (in_flight,) = emulator.wait_for_requests(1)
        finally:
            killed.kill()
            killed.wait(timeout=10)
            emulator.release()
    assert killed.returncode == -signal.SIGKILL
    assert in_flight.api == "Lead.Update"
    assert in_flight.lead_id is not None
    assert emulator.lead(in_flight.lead_id) != {}, "the held update was applied on arrival"

    summary = project.run()

    calls = lead_updates(emulator)
    assert_only_mapped(calls)
    assert summary.status == "ok"
    assert summary.changes == 0, "the killed run had already ingested every change"
    per_lead = Counter(lead_id for lead_id, _ in calls)
    assert set(per_lead) == {f"L{i}" for i in range(1, LEADS + 1)}, "every lead was updated"
    assert len(calls) <= LEADS + 1
    assert all(n == 1 for lead_id, n in per_lead.items() if lead_id != in_flight.lead_id)
    # A re-send repeats exactly the call that was in flight (Lead.Update sets absolute values).
    resent = [sent for lead_id, sent in calls[1:] if lead_id == in_flight.lead_id]
    assert all(sent == calls[0][1] for sent in resent)
    assert emulator.leads() == {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(project.url).items()
    }

    emulator.clear_requests()
    after = project.run()
    assert (after.calls, after.pushed) == (0, 0), "nothing is left to push once converged"
    assert lead_updates(emulator) == []


def bulk_leads(emulator: Emulator) -> list[list[tuple[str, dict[str, str]]]]:
    """Each bulk call's leads, as (lead id, attributes sent), in order of arrival."""
    return [
        [
            (lead["Fields"][0]["Value"], {f["Attribute"]: f["Value"] for f in lead["Fields"][1:]})
            for lead in request.body["LeadPropertiesList"]
        ]
        for request in emulator.requests
        if request.api == "Lead/Bulk/UpdateV2"
    ]


def test_run_killed_mid_bulk_resends_at_most_the_one_bulk_call_in_flight(
    project: Project, emulator: Emulator
) -> None:
    leads = 60
    for i in range(1, leads + 1):
        emulator.add_lead(f"L{i}")
    project.write(project.config(leadsquared={"bulk": {"mode": "always"}}))
    project.init_in_process()
    project.execute(
        *(
            "INSERT INTO customers (id, city, score, lsq_prospect_id) "
            f"VALUES ({i}, 'c{i}', {i}, 'L{i}')"
            for i in range(1, leads + 1)
        )
    )
    emulator.hold()
    with project.popen("run") as killed:
        try:
            (in_flight,) = emulator.wait_for_requests(1)
        finally:
            killed.kill()
            killed.wait(timeout=10)
            emulator.release()
    assert in_flight.api == "Lead/Bulk/UpdateV2"
    [first] = bulk_leads(emulator)
    assert len(first) == 25

    summary = project.run()

    calls = bulk_leads(emulator)
    assert summary.status == "ok"
    sent = Counter(lead_id for call in calls for lead_id, _ in call)
    assert set(sent) == {f"L{i}" for i in range(1, leads + 1)}
    twice = {lead_id for lead_id, n in sent.items() if n > 1}
    # Only the killed run's call is repeated, each lead with the same values.
    assert twice <= {lead_id for lead_id, _ in first}
    assert all(n <= 2 for n in sent.values())
    assert sum(sent.values()) <= leads + len(first)
    repeats = [lead for call in calls[1:] for lead in call if lead[0] in twice]
    assert all(lead in first for lead in repeats)
    assert emulator.leads() == {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in source_values(project.url).items()
    }
