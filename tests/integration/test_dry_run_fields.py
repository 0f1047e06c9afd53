"""A dry run shapes values by the field list kept, says what pre-flight would hold back, and
shows exactly what the run then sends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.testing.emulator import Emulator
from tests.support import PEOPLE_MAPPING, PEOPLE_SCHEMA, config_dict, load, wait_until_readable


@pytest.fixture
def account() -> Iterator[Emulator]:
    with Emulator(rate_limit=(10_000, 1.0), schema=PEOPLE_SCHEMA) as emulator:
        yield emulator


def test_a_dry_run_shows_values_as_the_run_then_sends_them(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    config = config_dict(
        db_url,
        account,
        leadsquared={"check_fields": True},
        source={"table": "people", "key": "id"},
        lead_id={"column": "email", "match": "EmailAddress"},
    )
    config["mapping"] = dict(PEOPLE_MAPPING)
    with Connector(load(config)) as sync:
        sync.init()  # keeps the field list
        with people.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO people (id, email, plan, seats, active, city, notes) VALUES "
                    "(1, 'ada@example.com', 'Gold', '12', true, 'Pune', 'far too long a note')"
                )
            )
        wait_until_readable(people)
        account.clear_requests()

        plan = sync.dry_run(20)

        assert account.requests == [], "no call: no field list read, no lookup"
        (lead,) = plan.planned
        assert lead.lead_id == "ada@example.com"
        assert plan.shaped_by.startswith("shaped by the account's field list kept at ")
        assert lead.lookup is not None
        assert "Leads.GetByEmailaddress" in lead.lookup
        assert set(lead.held) == {"mx_Notes"}, lead.held
        assert "10" in lead.held["mx_Notes"]

        report = sync.run_once()

    assert report.counts.leads_pushed == 1
    (update,) = [r for r in account.requests if r.api == "Lead.Update"]
    assert isinstance(update.body, list)
    assert {f["Attribute"]: f["Value"] for f in update.body} == lead.values
