"""Real tables: leads found by email address or phone number, values shaped by the account's
field types and held back before a call when LeadSquared would refuse them, bulk updates and
`resync`. On SQLite and PostgreSQL, over real HTTP against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.testing.emulator import Emulator
from tests.support import PEOPLE_MAPPING as MAPPING
from tests.support import PEOPLE_SCHEMA as SCHEMA
from tests.support import config_dict, execute, lead_state, load


@pytest.fixture
def account() -> Iterator[Emulator]:
    with Emulator(rate_limit=(10_000, 1.0), bulk_rate_limit=(10_000, 1.0), schema=SCHEMA) as em:
        yield em


def connector(db_url: str, emulator: Emulator, **sections: Any) -> Connector:
    sections.setdefault("lead_id", {"column": "email", "match": "EmailAddress"})
    sections["leadsquared"] = {
        "check_fields": True,
        "bulk": {"mode": "auto"},
        **sections.get("leadsquared", {}),
    }
    mapping = sections.pop("mapping", MAPPING)
    sections.setdefault("source", {"table": "people", "key": "id"})
    config = config_dict(db_url, emulator, **sections)
    config["mapping"] = dict(mapping)  # in place of the customers table's
    sync = Connector(load(config))
    sync.init()
    return sync


def insert(people: sa.Engine, **values: Any) -> None:
    """One row, by default row 1 with ada@example.com, the other columns NULL."""
    values = {"id": 1, "email": "ada@example.com", **values}
    columns = ", ".join(values)
    with people.begin() as connection:
        connection.execute(
            sa.text(f"INSERT INTO people ({columns}) VALUES (:{', :'.join(values)})"), values
        )


def calls(emulator: Emulator, api: str) -> list[Any]:
    return [request for request in emulator.requests if request.api == api]


def sent(emulator: Emulator) -> list[tuple[str | None, dict[str, str]]]:
    return [
        (r.lead_id, {f["Attribute"]: f["Value"] for f in r.body})
        for r in calls(emulator, "Lead.Update")
    ]


# Leads found by email address or phone number


def test_a_row_is_looked_up_once_not_once_per_change(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        insert(people, city="Pune")
        assert sync.run_once().counts.leads_pushed == 1
        for city in ("Goa", "Agra", "Delhi"):
            execute(people, f"UPDATE people SET city = '{city}' WHERE id = 1")
            assert sync.run_once().counts.leads_pushed == 1
    assert len(calls(account, "Leads.GetByEmailaddress")) == 1
    assert [lead for lead, _ in sent(account)] == ["P1"] * 4
    assert account.lead("P1") == {"EmailAddress": "ada@example.com", "mx_City": "Delhi"}


def test_a_row_matching_no_lead_is_shown_and_tried_again_when_it_changes(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    with connector(db_url, account) as sync:
        insert(people, email="new@example.com", city="Pune")
        report = sync.run_once()
        assert (report.counts.leads_rejected, report.counts.leads_pushed) == (1, 0)
        state = lead_state(sync, "new@example.com")
        assert state.rejected
        assert "not in LeadSquared: no lead has EmailAddress 'new@example.com'" in (
            state.last_error or ""
        )
        assert sent(account) == []  # never created, never guessed
        assert sync.run_once().counts.calls_made == 0  # not looked up again unchanged

        account.add_lead("P9", EmailAddress="new@example.com")
        execute(people, "UPDATE people SET city = 'Goa' WHERE id = 1")
        assert sync.run_once().counts.leads_pushed == 1
    assert account.lead("P9") == {"EmailAddress": "new@example.com", "mx_City": "Goa"}


def test_retry_looks_a_row_that_matched_nothing_up_again(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    with connector(db_url, account) as sync:
        insert(people, email="late@example.com", city="Pune")
        sync.run_once()
        account.add_lead("P2", EmailAddress="LATE@example.com")
        assert sync.retry() == 1
        assert sync.run_once().counts.leads_pushed == 1
    assert account.lead("P2") == {"EmailAddress": "LATE@example.com", "mx_City": "Pune"}


def test_a_row_matching_several_leads_is_reported_not_guessed(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="twin@example.com")
    account.add_lead("P2", EmailAddress="twin@example.com")
    with connector(db_url, account) as sync:
        insert(people, email="twin@example.com", city="Pune")
        assert sync.run_once().counts.leads_rejected == 1
        error = lead_state(sync, "twin@example.com").last_error or ""
    assert "2 leads in LeadSquared have EmailAddress 'twin@example.com' (P1, P2)" in error
    assert sent(account) == []


def test_a_merged_lead_is_looked_up_again_once(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("OLD", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        insert(people, city="Pune")
        sync.run_once()
        # Merged in LeadSquared: the old id is gone, another lead has the address.
        account.reset()
        account.add_lead("NEW", EmailAddress="ada@example.com")
        execute(people, "UPDATE people SET city = 'Goa' WHERE id = 1")
        report = sync.run_once()
        assert report.counts.leads_pushed == 1
        found = sync.tables.matches.get("ada@example.com")
        assert found is not None
        assert found.prospect_id == "NEW"
    assert [r.api for r in account.requests] == [
        "Lead.Update",  # to OLD: no such lead
        "Leads.GetByEmailaddress",
        "Lead.Update",
    ]
    assert account.lead("NEW") == {"EmailAddress": "ada@example.com", "mx_City": "Goa"}


def test_a_changed_address_moves_the_row_to_the_lead_with_the_new_one(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="a@example.com")
    account.add_lead("P2", EmailAddress="b@example.com")
    with connector(db_url, account) as sync:
        insert(people, email="a@example.com", city="Pune")
        sync.run_once()
        execute(people, "UPDATE people SET email = 'b@example.com', city = 'Goa' WHERE id = 1")
        report = sync.run_once()
        assert report.counts.leads_pushed == 1
    # The old lead keeps what it was last sent; the new one gets every mapped value.
    assert account.lead("P1") == {"EmailAddress": "a@example.com", "mx_City": "Pune"}
    assert account.lead("P2") == {"EmailAddress": "b@example.com", "mx_City": "Goa"}


def test_leads_are_found_by_phone_number_as_written(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", Phone="+91-98450")
    mapping = {column: a for column, a in MAPPING.items() if column != "phone"}
    lead_id = {"column": "phone", "match": "Phone"}
    with connector(db_url, account, lead_id=lead_id, mapping=mapping) as sync:
        execute(people, "INSERT INTO people (id, phone, city) VALUES (1, '+91-98450', 'Pune')")
        execute(people, "INSERT INTO people (id, phone, city) VALUES (2, '9845', 'Goa')")
        report = sync.run_once()
        assert (report.counts.leads_pushed, report.counts.leads_rejected) == (1, 1)
    assert len(calls(account, "RetrieveLeadByPhoneNumber")) == 2
    assert account.lead("P1") == {"Phone": "+91-98450", "mx_City": "Pune"}


# Values shaped by the field's type, and held back before a call


def test_each_data_type_is_sent_in_the_form_its_field_takes(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(
        db_url, account, source={"table": "people", "key": "id", "timezone": "Asia/Kolkata"}
    ) as sync:
        execute(
            people,
            "INSERT INTO people "
            "(id, email, phone, plan, seats, signed_up, active, renewal, call_at, site, city) "
            "VALUES (1, 'ada@example.com', '+91 98450 00001', ' gold ', '1.50', "
            "'2026-03-01 10:00:00', TRUE, '2026-03-01 10:00:00', '9:05', 'example.com', "
            "'Pune')",
        )
        assert sync.run_once().counts.leads_pushed == 1
    assert account.lead("P1") == {
        "EmailAddress": "ada@example.com",
        "mx_Plan": "Gold",  # the option's own spelling
        "mx_Seats": "1.5",
        "mx_Signed_Up": "2026-03-01 04:30:00",  # read in Asia/Kolkata, sent in UTC
        "mx_Active": "true",
        "mx_Renewal": "2026-03-01 04:30:00",  # text: read in Asia/Kolkata too, and once
        "mx_Call_At": "09:05:00",
        "mx_Site": "example.com",
        "Phone": "+91 98450 00001",
        "mx_City": "Pune",
    }


@pytest.mark.parametrize(
    "case",
    [
        ("plan", "'Platinum'", "not_an_option", "'silver'", "Silver"),
        ("notes", "'far too long for ten'", "too_long", "'short'", "short"),
        ("seats", "'1,234'", "not_a_number", "'1234'", "1234"),
        ("renewal", "'soon'", "not_a_date", "'2026-01-02'", "2026-01-02 00:00:00"),
    ],
)
def test_a_value_the_field_refuses_is_held_back_without_a_call_and_the_rest_is_sent(
    db_url: str, people: sa.Engine, account: Emulator, case: tuple[str, str, str, str, str]
) -> None:
    column, value, rule, fixed, wire = case
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        execute(
            people,
            f"INSERT INTO people (id, email, {column}, city) "
            f"VALUES (1, 'ada@example.com', {value}, 'Pune')",
        )
        report = sync.run_once()
        assert (report.counts.leads_pushed, report.counts.attributes_set_aside) == (1, 1)
        state = lead_state(sync, "ada@example.com")
        attribute = MAPPING[column]
        assert attribute in state.set_aside
        reason = state.aside_reasons.get(attribute, "")
        for part in ("row 1", f"column {column!r}", f"attribute {attribute}", f"[{rule}]"):
            assert part in reason, reason
        # Refused by the metadata, not by LeadSquared: one call, without the attribute.
        assert sent(account) == [("P1", {"mx_City": "Pune"})]
        assert sync.run_once().counts.calls_made == 0  # not tried again while unchanged

        execute(people, f"UPDATE people SET {column} = {fixed} WHERE id = 1")
        account.clear_requests()
        assert sync.run_once().counts.leads_pushed == 1  # a new value is tried again
        assert sent(account) == [("P1", {attribute: wire})]
        assert lead_state(sync, "ada@example.com").set_aside == {}


def test_clearing_a_mandatory_field_is_held_back(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        insert(people, city="Pune")
        sync.run_once()
        account.clear_requests()
        execute(people, "UPDATE people SET city = NULL, seats = '3' WHERE id = 1")
        sync.run_once()
        assert "[mandatory_cleared]" in (
            lead_state(sync, "ada@example.com").aside_reasons.get("mx_City", "")
        )
    assert sent(account) == [("P1", {"mx_Seats": "3"})]
    assert account.lead("P1") == {
        "EmailAddress": "ada@example.com",
        "mx_City": "Pune",
        "mx_Seats": "3",
    }


def test_truncate_and_empty_skip_choose_per_field(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    mapping = {
        **MAPPING,
        "notes": {"attribute": "mx_Notes", "truncate": True},
        "plan": {"attribute": "mx_Plan", "empty": "skip"},
    }
    with connector(db_url, account, mapping=mapping) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, notes, plan, city) "
            "VALUES (1, 'ada@example.com', 'twelve chars', 'Gold', 'Pune')",
        )
        sync.run_once()
        execute(people, "UPDATE people SET plan = NULL WHERE id = 1")
        report = sync.run_once()
        assert (report.counts.calls_made, report.counts.leads_pushed) == (0, 0)
        assert not lead_state(sync, "ada@example.com").pending
    assert account.lead("P1") == {
        "EmailAddress": "ada@example.com",
        "mx_Notes": "twelve cha",
        "mx_Plan": "Gold",  # left as it was
        "mx_City": "Pune",
    }


def test_an_attribute_missing_from_the_account_costs_no_call(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account, mapping={**MAPPING, "phone": "mx_Gone"}) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, phone, city) "
            "VALUES (1, 'ada@example.com', '1', 'Pune')",
        )
        report = sync.run_once()
    assert report.counts.attributes_set_aside == 1
    assert [r.api for r in account.requests if r.api != "LeadsMetaData.Get"] == [
        "Leads.GetByEmailaddress",
        "Lead.Update",
    ]
    assert sent(account) == [("P1", {"mx_City": "Pune"})]


def test_a_refusal_the_field_list_missed_reads_the_fields_again_once(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    for n in (1, 2, 3):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    with connector(db_url, account) as sync:
        # LeadSquared refuses what the fields allow: the copy kept may be stale.
        account.reject_values("mx_City", lambda value: value == "Nowhere")
        account.clear_requests()
        execute(
            people,
            "INSERT INTO people (id, email, city) VALUES "
            "(1, 'p1@example.com', 'Nowhere'), (2, 'p2@example.com', 'Nowhere'), "
            "(3, 'p3@example.com', 'Nowhere')",
        )
        report = sync.run_once()
    assert report.counts.leads_rejected == 3
    assert len(calls(account, "LeadsMetaData.Get")) == 1


def test_without_a_field_list_values_go_as_the_source_spells_them(
    db_url: str, people: sa.Engine
) -> None:
    with Emulator(rate_limit=(10_000, 1.0)) as plain:  # no LeadsMetaData.Get at all
        plain.add_lead("P1", EmailAddress="ada@example.com")
        with connector(db_url, plain) as sync:
            execute(
                people,
                "INSERT INTO people (id, email, plan, city) "
                "VALUES (1, 'ada@example.com', 'gold', '')",
            )
            assert sync.run_once().counts.leads_pushed == 1
        assert plain.lead("P1") == {"EmailAddress": "ada@example.com", "mx_Plan": "gold"}


# Bulk updates


THROTTLED = (
    '{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException",'
    '"ExceptionMessage":"API calls exceeded the limit of 5 in 5 second(s)"}'
)


def bulk_calls(emulator: Emulator) -> list[list[str]]:
    """Each bulk call's search values, in order."""
    return [
        [lead["Fields"][0]["Value"] for lead in request.body["LeadPropertiesList"]]
        for request in calls(emulator, "Lead/Bulk/UpdateV2")
    ]


def test_bulk_carries_25_leads_a_call_each_with_its_own_attributes(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    rows = ", ".join(f"({n}, 'p{n}@example.com', 'City {n % 7}')" for n in range(60))
    for n in range(60):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    with connector(db_url, account) as sync:  # auto: 60 pending >= 50
        execute(people, f"INSERT INTO people (id, email, city) VALUES {rows}")
        report = sync.run_once()
    assert report.counts.leads_pushed == 60
    assert sorted(len(call) for call in bulk_calls(account)) == [10, 25, 25]
    assert calls(account, "Leads.GetByEmailaddress") == []  # found by SearchByKey
    assert all(account.lead(f"P{n}")["mx_City"] == f"City {n % 7}" for n in range(60))


def test_one_bad_lead_does_not_fail_its_neighbours_in_a_bulk_call(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    for n in range(4):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    account.reject_values("mx_City", lambda value: value == "Bad", "MXInvalidInputException")
    bulk = {"mode": "always"}
    with connector(db_url, account, leadsquared={"bulk": bulk}) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, city, plan) VALUES "
            "(0, 'p0@example.com', 'Pune', NULL), (1, 'p1@example.com', 'Bad', NULL), "
            "(2, 'nobody@example.com', 'Goa', NULL), (3, 'p3@example.com', 'Agra', 'Platinum')",
        )
        report = sync.run_once()
        # One bulk call, and the field list read again after LeadSquared refused a value.
        assert report.counts.calls_made == 2
        assert len(bulk_calls(account)) == 1
        assert (report.counts.leads_pushed, report.counts.leads_rejected) == (2, 2)
        assert lead_state(sync, "p1@example.com").rejected
        assert "not in LeadSquared" in (lead_state(sync, "nobody@example.com").last_error or "")
        assert "mx_Plan" in lead_state(sync, "p3@example.com").set_aside
    assert account.lead("P0")["mx_City"] == "Pune"
    assert account.lead("P3")["mx_City"] == "Agra"
    assert "mx_City" not in account.lead("P1")


@pytest.mark.parametrize("fault", ["503", "throttle"])
def test_a_whole_bulk_call_that_fails_is_sent_again(
    db_url: str, people: sa.Engine, account: Emulator, fault: str
) -> None:
    for n in range(3):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    with connector(db_url, account, leadsquared={"bulk": {"mode": "always"}}) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, city) VALUES "
            "(0, 'p0@example.com', 'A'), (1, 'p1@example.com', 'B'), (2, 'p2@example.com', 'C')",
        )
        if fault == "503":
            account.fail_next(1, "503")
        else:
            account.answer_next(1, 429, THROTTLED)
        report = sync.run_once()
    assert report.counts.leads_pushed == 3
    assert len(bulk_calls(account)) == 2
    assert bulk_calls(account)[0] == bulk_calls(account)[1]
    assert [account.lead(f"P{n}")["mx_City"] for n in range(3)] == ["A", "B", "C"]


def test_resync_sends_current_values_again_whatever_was_pushed(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    for n in range(3):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    with connector(db_url, account, leadsquared={"bulk": {"mode": "auto", "min_leads": 3}}) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, city, seats) VALUES "
            "(0, 'p0@example.com', 'A', '1'), (1, 'p1@example.com', 'B', '2'), "
            "(2, 'p2@example.com', 'C', '3')",
        )
        sync.run_once()
        account.clear_requests()
        # Someone edits LeadSquared by hand; nothing changes in the source.
        account.add_lead("P1", EmailAddress="p1@example.com", mx_City="Hand", mx_Seats="9")
        assert sync.run_once().counts.calls_made == 0

        assert sync.resync(["p1@example.com"], ["mx_City"]) == 1
        sync.run_once()
        assert sent(account) == [("P1", {"mx_City": "B"})]
        assert account.lead("P1")["mx_Seats"] == "9"

        account.clear_requests()
        assert sync.resync(None) == 3
        sync.run_once()
    # Three leads pending: bulk, one call, every mapped value.
    assert bulk_calls(account) == [["p0@example.com", "p1@example.com", "p2@example.com"]]
    assert account.lead("P1")["mx_Seats"] == "2"


def test_resync_refuses_an_attribute_that_is_not_mapped(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    from connector.errors import LsqSyncError  # noqa: PLC0415

    with connector(db_url, account) as sync, pytest.raises(LsqSyncError, match="mx_Nope"):
        sync.resync(None, ["mx_Nope"])


def test_status_names_what_is_held_back_and_what_is_not_in_leadsquared(
    db_url: str, people: sa.Engine, account: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    from connector.report import print_status  # noqa: PLC0415

    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, plan, city) VALUES "
            "(7, 'ada@example.com', 'Platinum', 'Pune'), (8, 'ghost@example.com', NULL, 'Goa')",
        )
        sync.run_once()
        capsys.readouterr()
        print_status(sync)
    status = capsys.readouterr().out
    [held] = [line for line in status.splitlines() if "lead ada@example.com" in line]
    for part in ("row 7", "column 'plan'", "attribute mx_Plan", "'Platinum'", "[not_an_option]"):
        assert part in held, held
    assert "in sync except mx_Plan" in held
    [ghost] = [line for line in status.splitlines() if "lead ghost@example.com" in line]
    assert "not in LeadSquared: no lead has EmailAddress 'ghost@example.com'" in ghost


def test_the_field_list_is_read_again_only_once_it_is_older_than_its_ttl(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    from connector.schema import field_list  # noqa: PLC0415

    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        assert len(calls(account, "LeadsMetaData.Get")) == 1  # by init
        insert(people, city="A")
        sync.run_once()
        assert len(calls(account, "LeadsMetaData.Get")) == 1  # fresh: not read again
        with sync.engine.begin() as connection:
            connection.execute(
                sa.update(field_list).values(fetched_at=sync.clock.now().replace(year=2020))
            )
        execute(people, "UPDATE people SET city = 'B' WHERE id = 1")
        sync.run_once()
        assert len(calls(account, "LeadsMetaData.Get")) == 2
        execute(people, "UPDATE people SET city = 'C' WHERE id = 1")
        sync.run_once()
        assert len(calls(account, "LeadsMetaData.Get")) == 2
    assert account.lead("P1") == {"EmailAddress": "ada@example.com", "mx_City": "C"}


# What a review tried


def test_two_addresses_differing_only_in_case_never_both_update_one_lead(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    one_at_a_time = {"max_in_flight": 1}
    with connector(db_url, account, leadsquared=one_at_a_time) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, city) VALUES "
            "(1, 'Ada@example.com', 'Pune'), (2, 'ada@example.com', 'Goa')",
        )
        report = sync.run_once()
        assert (report.counts.leads_pushed, report.counts.leads_rejected) == (1, 1)
        error = lead_state(sync, "ada@example.com").last_error or ""
        assert "find the same lead P1" in error
        # The first one, on its next change, is held back too: neither is guessed.
        execute(people, "UPDATE people SET city = 'Agra' WHERE id = 1")
        assert sync.run_once().counts.leads_rejected == 1
    assert account.lead("P1") == {"EmailAddress": "ada@example.com", "mx_City": "Pune"}


def test_a_kept_prospect_id_is_looked_up_again_after_its_ttl(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    lead_id = {"column": "email", "match": "EmailAddress", "lookup_ttl_seconds": 0.001}
    with connector(db_url, account, lead_id=lead_id) as sync:
        insert(people, city="A")
        sync.run_once()
        # In LeadSquared the address moved to another lead.
        account.add_lead("P1", EmailAddress="old@example.com", mx_City="A")
        account.add_lead("P2", EmailAddress="ada@example.com")
        execute(people, "UPDATE people SET city = 'B' WHERE id = 1")
        sync.run_once()
    assert account.lead("P1") == {"EmailAddress": "old@example.com", "mx_City": "A"}
    assert account.lead("P2") == {"EmailAddress": "ada@example.com", "mx_City": "B"}


def test_a_bad_value_answered_with_the_missing_lead_type_costs_no_lookup(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    account.reject_values(
        "mx_City", lambda value: value == "Bad", "MXInvalidEntityReferenceException"
    )
    with connector(db_url, account) as sync:
        insert(people, city="A")
        sync.run_once()
        account.clear_requests()
        execute(people, "UPDATE people SET city = 'Bad' WHERE id = 1")
        assert sync.run_once().counts.leads_rejected == 1
    assert [r.api for r in account.requests] == ["Lead.Update"]


def test_a_lookup_answer_without_a_usable_prospect_id_rejects_only_its_lead(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    with connector(db_url, account) as sync:
        insert(people, city="A")
        account.answer_next(1, 200, '[{"ProspectID": 7}, {"ProspectID": "' + "x" * 200 + '"}]')
        report = sync.run_once()
        assert report.counts.leads_rejected == 1
        assert "no usable ProspectID" in (lead_state(sync, "ada@example.com").last_error or "")
        assert sync.run_once().counts.calls_made == 0  # not looked up again unchanged


def test_phone_matching_never_goes_through_bulk(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    rows = ", ".join(f"({n}, '+91{n:05d}', 'c{n}')" for n in range(55))
    for n in range(55):
        account.add_lead(f"P{n}", Phone=f"+91{n:05d}")
    mapping = {column: a for column, a in MAPPING.items() if column != "phone"}
    lead_id = {"column": "phone", "match": "Phone"}
    with connector(db_url, account, lead_id=lead_id, mapping=mapping) as sync:  # bulk: auto
        execute(people, f"INSERT INTO people (id, phone, city) VALUES {rows}")
        assert sync.run_once().counts.leads_pushed == 55
    assert calls(account, "Lead/Bulk/UpdateV2") == []
    assert len(calls(account, "Lead.Update")) == 55


def test_a_bulk_call_refused_for_one_leads_attribute_sets_it_aside_for_that_lead_alone(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    for n in range(3):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    refused = (
        '{"Status":"Error","ExceptionType":"MXUnknownAttributeException",'
        '"ExceptionMessage":"Attribute(s) does not exist - mx_Notes"}'
    )
    with connector(db_url, account, leadsquared={"bulk": {"mode": "always"}}) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, city, notes) VALUES "
            "(0, 'p0@example.com', 'A', NULL), (1, 'p1@example.com', 'B', 'hi'), "
            "(2, 'p2@example.com', 'C', NULL)",
        )
        account.answer_next(1, 500, refused)
        report = sync.run_once()
        assert (report.counts.leads_pushed, report.counts.leads_rejected) == (3, 0)
        assert lead_state(sync, "p1@example.com").set_aside == {"mx_Notes": "hi"}
    assert [account.lead(f"P{n}")["mx_City"] for n in range(3)] == ["A", "B", "C"]
    assert "mx_Notes" not in account.lead("P1")


def test_resync_clears_a_field_the_source_holds_empty(
    db_url: str, people: sa.Engine, account: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connector.leadrows.IDS_PER_QUERY", 2)  # pages of two leads
    for n in range(5):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    with connector(db_url, account, leadsquared={"bulk": {"mode": "off"}}) as sync:
        rows = ", ".join(f"({n}, 'p{n}@example.com', 'c{n}')" for n in range(5))
        execute(people, f"INSERT INTO people (id, email, city) VALUES {rows}")
        sync.run_once()
        account.add_lead("P3", EmailAddress="p3@example.com", mx_City="c3", mx_Notes="HAND")
        account.clear_requests()
        assert sync.resync(None, ["mx_Notes"]) == 5
        report = sync.run_once()
    # Every lead is sent its (empty) notes again; only the hand-edited one had any.
    assert report.counts.leads_pushed == 5
    assert sorted(sent(account)) == [(f"P{n}", {"mx_Notes": ""}) for n in range(5)]
    assert account.lead("P3") == {"EmailAddress": "p3@example.com", "mx_City": "c3", "mx_Notes": ""}


def test_a_held_back_value_keeps_its_reason_after_the_lead_is_pushed_again(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        execute(
            people,
            "INSERT INTO people (id, email, plan, city) VALUES (1, 'ada@example.com', 'Nope', 'A')",
        )
        sync.run_once()
        execute(people, "UPDATE people SET city = 'B' WHERE id = 1")
        sync.run_once()
        state = lead_state(sync, "ada@example.com")
        assert state.set_aside == {"mx_Plan": "Nope"}
        assert "[not_an_option]" in state.aside_reasons["mx_Plan"]
        # Back to what LeadSquared holds (nothing): no longer held back, nothing to send.
        execute(people, "UPDATE people SET plan = NULL WHERE id = 1")
        assert sync.run_once().counts.calls_made == 0
        assert lead_state(sync, "ada@example.com").set_aside == {}


def test_an_address_edited_only_in_case_still_finds_its_lead(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        insert(people, email="Ada@Example.com", city="A")
        sync.run_once()
        # The application lower-cases its addresses: the row moves to another lead id.
        execute(people, "UPDATE people SET email = 'ada@example.com', city = 'B' WHERE id = 1")
        report = sync.run_once()
        assert (report.counts.leads_pushed, report.counts.leads_rejected) == (1, 0)
        assert sync.tables.matches.get("Ada@Example.com") is None
    assert account.lead("P1") == {"EmailAddress": "ada@example.com", "mx_City": "B"}


def test_a_lookup_past_its_ttl_that_finds_nothing_forgets_the_lead(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    lead_id = {"column": "email", "match": "EmailAddress", "lookup_ttl_seconds": 0.001}
    with connector(db_url, account, lead_id=lead_id) as sync:
        insert(people, city="A")
        sync.run_once()
        account.reset()  # deleted in LeadSquared
        execute(people, "UPDATE people SET city = 'B' WHERE id = 1")
        assert sync.run_once().counts.leads_rejected == 1
        assert sync.tables.matches.get("ada@example.com") is None


def test_a_bad_value_that_does_not_exist_is_not_a_missing_lead(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    refused = (
        '{"Status":"Error","ExceptionType":"MXInvalidEntityReferenceException",'
        '"ExceptionMessage":"Option Z does not exist"}'
    )
    with connector(db_url, account) as sync:
        insert(people, city="A")
        sync.run_once()
        account.clear_requests()
        execute(people, "UPDATE people SET city = 'B' WHERE id = 1")
        account.answer_next(1, 500, refused)
        assert sync.run_once().counts.leads_rejected == 1
    # One call, and the field list read again after a refusal it did not foresee.
    assert [r.api for r in account.requests if r.api != "LeadsMetaData.Get"] == ["Lead.Update"]


def test_a_bulk_call_refused_for_an_attribute_no_lead_carries_is_not_retried_forever(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    for n in range(2):
        account.add_lead(f"P{n}", EmailAddress=f"p{n}@example.com")
    refused = (
        '{"Status":"Error","ExceptionType":"MXUnknownAttributeException",'
        '"ExceptionMessage":"Attribute(s) does not exist - mx_nobody"}'
    )
    settings = {"bulk": {"mode": "always"}, "retry": {"attempts": 1}}
    with connector(db_url, account, leadsquared=settings) as sync:
        insert(people, id=0, email="p0@example.com", city="A")
        insert(people, id=1, email="p1@example.com", city="B")
        account.answer_next(1, 500, refused)
        report = sync.run_once()
    assert (report.counts.leads_rejected, report.counts.leads_deferred) == (2, 0)


def test_each_attribute_set_aside_keeps_its_own_reason(
    db_url: str, people: sa.Engine, account: Emulator
) -> None:
    account.add_lead("P1", EmailAddress="ada@example.com")
    with connector(db_url, account) as sync:
        insert(people, plan="Nope", seats="1,5", city="A")
        sync.run_once()
        reasons = lead_state(sync, "ada@example.com").aside_reasons
        assert set(reasons) == {"mx_Plan", "mx_Seats"}
        assert "[not_a_number]" in reasons["mx_Seats"]
        assert "mx_Seats" not in reasons["mx_Plan"]
        execute(people, "UPDATE people SET seats = '15' WHERE id = 1")
        sync.run_once()
        state = lead_state(sync, "ada@example.com")
    assert state.set_aside == {"mx_Plan": "Nope"}
    assert set(state.aside_reasons) == {"mx_Plan"}
